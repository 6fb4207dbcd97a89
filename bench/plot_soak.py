"""Draw a soak run's latency, memory, CPU and database load over time (DIR/soak.png).

    .venv/bin/python bench/plot_soak.py bench/results/soak-YYYY-MM-DD

Reads DIR/samples.csv and, for the title, DIR/summary.json, both written by
bench/soak.py; it calls this after each run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]


def plot(directory: Path | str) -> Path:
    directory = Path(directory)
    with open(directory / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary_path = directory / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    minutes = [t / 60 for t in _column(rows, "t_s")]
    servers = sorted({k.split("_")[0] for k in rows[0] if k.startswith("server-")})

    fig, (lat, mem, cpu, db) = plt.subplots(
        4, 1, figsize=(11, 11), sharex=True, height_ratios=[3, 2, 2, 1.5]
    )
    if summary:
        fig.suptitle(
            f"Soak: {summary['streams']:,} streams on {summary['servers']} daphne processes, "
            f"an alarm every {summary['interval_s']:g} s in en/ko/ja, {summary['date']}\n"
            f"delivered {summary['delivered']:,} of {summary['expected']:,} "
            f"({summary['delivered_pct']:.3f}%), reconnects {summary['reconnects']:,}",
            fontsize=11,
        )

    lat.plot(minutes, _column(rows, "lat_p50_ms"), label="p50", color="tab:blue")
    lat.plot(minutes, _column(rows, "lat_p99_ms"), label="p99", color="tab:red")
    lat.plot(minutes, _column(rows, "lat_max_ms"), label="max", color="tab:red", alpha=0.3, lw=0.8)
    lat.set_ylabel("latency per 10 s (ms)\ncommit to client")
    lat.set_ylim(bottom=0)
    lat.legend(loc="upper right")

    growth = summary.get("per_server", {})
    for name in servers:
        change = growth.get(name, {}).get("rss_growth_pct")
        label = name if change is None else f"{name} ({change:+.1f}% after warm-up)"
        mem.plot(minutes, _column(rows, f"{name}_rss_mib"), label=label)
    mem.set_ylabel("RSS (MiB)")
    mem.set_ylim(bottom=0)
    mem.legend(loc="lower right")

    for name in servers:
        cpu.plot(minutes, _column(rows, f"{name}_cpu_pct"), label=name)
    cpu.plot(minutes, _column(rows, "clients_cpu_pct"), label="load clients", ls="--")
    cpu.plot(minutes, _column(rows, "pg_cpu_pct"), label="PostgreSQL", ls=":")
    if "other_cpu_pct" in rows[0]:
        # Anything else on the machine competes for the same cores.
        cpu.plot(
            minutes, _column(rows, "other_cpu_pct"), label="other processes", color="grey", lw=0.8
        )
    cpu.set_ylabel("CPU (% of a core)")
    cpu.set_ylim(bottom=0)
    cpu.legend(loc="upper right", ncol=2)

    backends = [b for b in _column(rows, "db_backends") if not math.isnan(b)]
    most = f", {max(backends):.0f} backends at most" if backends else ""
    db.plot(
        minutes,
        _column(rows, "db_xact_per_s"),
        color="tab:green",
        label=f"PostgreSQL transactions{most}",
    )
    db.plot(minutes, _column(rows, "reconnects_per_s"), color="tab:purple", label="reconnects")
    db.set_ylabel("per second")
    db.set_ylim(bottom=0)
    db.legend(loc="upper right")
    db.set_xlabel("minutes since the first alarm (before 0: opening the streams)")

    warmup = summary.get("warmup_s")
    for ax in (lat, mem, cpu, db):
        ax.grid(alpha=0.3)
        ax.axvspan(min([*minutes, 0]), 0, color="grey", alpha=0.1)
        if warmup:
            ax.axvline(warmup / 60, color="grey", ls="--", lw=0.8)
    if warmup:
        lat.annotate(
            " RSS baseline (end of warm-up)",
            (warmup / 60, 1),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            color="grey",
        )
    fig.tight_layout()
    target = directory / "soak.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(plot(sys.argv[1]))

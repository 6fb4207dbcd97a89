"""Sum up load-client results (JSON lines) as one markdown table.

    .venv/bin/python bench/table.py bench/results/servers.jsonl --note servers-1796000000

One row per record (of the run named by --note, if given): streams held, the
time to open them all, memory per stream, the server's CPU while idle, and the
median over the broadcasts of their p50, p99 and delivered share.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows(path: Path, note: str | None) -> list[dict[str, object]]:
    found = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if note is None or record.get("note") == note:
            found.append(record)
    return found


def table(records: list[dict[str, object]]) -> str:
    lines = [
        "| server | N | held | open all (s) | KiB/stream | idle CPU (s/min) "
        "| broadcast p50 / p99 (ms) | delivered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "idle" not in r:
            lines.append(f"| {r.get('label')} | {r.get('n')} | run failed: {r.get('error', '?')} |")
            continue
        idle: dict[str, float] = r["idle"]  # type: ignore[assignment]
        opened: dict[str, float] = r["open"]  # type: ignore[assignment]
        triggers: list[dict[str, float]] = r["triggers"]  # type: ignore[assignment]
        p50 = statistics.median(t["p50_ms"] for t in triggers) if triggers else float("nan")
        p99 = statistics.median(t["p99_ms"] for t in triggers) if triggers else float("nan")
        delivered = min((t["delivered"] / t["n"] for t in triggers), default=0.0)
        lines.append(
            f"| {r['label']} | {r['n']:,} | {idle['held']:,} | {opened['open_elapsed_s']:.1f} "
            f"| {idle['kib_per_conn']:.1f} | {idle['server_cpu_s_per_min']:.1f} "
            f"| {p50:,.0f} / {p99:,.0f} | {delivered:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--note", default=None, help="only the records of this run")
    args = parser.parse_args()
    print(table(rows(args.results, args.note)))


if __name__ == "__main__":
    main()

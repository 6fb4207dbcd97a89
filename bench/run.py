"""Our stream beside a naive per-stream-polling view, under N concurrent streams.

Needs PostgreSQL (DATABASE_URL) and an SSE load client that speaks the
``ssebench`` command line (``--client PATH``): it holds the N streams from a
separate process and measures memory, CPU, database load and latency.

    scripts/postgres .venv/bin/python bench/run.py --client PATH/TO/ssebench.py

Each (system, N) pair is one run: the server is started fresh, N streams are
opened at once (the time until all N have their first bytes, which includes
each stream's replay of the live alarms, is the reconnect-storm figure), held
idle for --window seconds, then three alarms are committed from another
process and their arrival at every client is timed. Results are appended to
bench/results/results.jsonl and summarised as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", required=True, help="path to the ssebench load client")
    parser.add_argument("-n", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--systems", nargs="+", default=["ours", "naive"])
    parser.add_argument(
        "--naive-max-n",
        type=int,
        default=5000,
        help="skip the naive view above this N (it cannot hold more)",
    )
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--pool", type=int, default=20, help="naive view's connection pool")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at PostgreSQL (try: scripts/postgres python bench/run.py)"
        )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "results.jsonl"

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50,
        "DJANGO_DEBUG": "0",
    }
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    # Exactly three live alarms, which every new stream replays on connect.
    subprocess.run(
        [
            py,
            "manage.py",
            "shell",
            "-c",
            "from alarms import api; from alarms.models import Alarm; "
            "api.withdraw(Alarm.objects.all())",
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    for i in range(3):
        subprocess.run(
            [
                py,
                "manage.py",
                "send_alarm",
                "--audience",
                "everyone",
                "--translation",
                "en",
                f"Standing alarm {i}",
                "Replayed on connect",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )

    pg = urlsplit(url)
    dsn = f"postgresql://{pg.username or 'postgres'}@{pg.hostname}:{pg.port or 5432}{pg.path}"
    rows = []
    for n in args.n:
        for system in args.systems:
            if system == "naive" and n > args.naive_max_n:
                continue
            port = 8300 + len(rows)
            path = "/alarms/stream/" if system == "ours" else "/naive/stream/"
            server_env = [
                f"DJANGO_SETTINGS_MODULE={env['DJANGO_SETTINGS_MODULE']}",
                f"DJANGO_SECRET_KEY={env['DJANGO_SECRET_KEY']}",
                "DJANGO_DEBUG=0",
                f"DATABASE_URL={url}",
            ]
            if system == "naive":
                server_env.append(f"BENCH_POOL={args.pool}")
            cmd = [
                py,
                args.client,
                "--label",
                system,
                "-n",
                str(n),
                "--window",
                str(args.window),
                "--url",
                f"http://127.0.0.1:{port}{path}",
                "--server-cmd",
                f"{py} -m daphne -b 127.0.0.1 -p {port} config.asgi:application",
                "--server-cwd",
                str(ROOT),
                "--pg-dsn",
                dsn,
                "--json-out",
                str(out),
                "--open-timeout",
                "300",
                "--trigger-wait",
                "30",
                "--note",
                f"django-live-alarms bench, {time.strftime('%Y-%m-%d')}",
            ]
            for e in server_env:
                cmd += ["--server-env", e]
            for _ in range(3):
                cmd += ["--trigger", f"{py} bench/trigger.py {{token}}"]
            print(f"\n### {system} N={n}", flush=True)
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            print("\n".join(proc.stdout.splitlines()[:-1]), flush=True)
            try:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                print(proc.stderr[-3000:], file=sys.stderr)
                rows.append({"label": system, "n": n, "error": "no result"})
    print("\n" + table(rows))
    return 0


def table(rows: list[dict]) -> str:
    lines = [
        "| system | N | held | KiB/stream | p50 / p99 / max ms | delivered | idle DB xact/s "
        "| DB backends | idle CPU s/min | threads | all N connected (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "idle" not in r:
            lines.append(f"| {r['label']} | {r['n']} | error: {r.get('error')} |" + " |" * 8)
            continue
        i, o = r["idle"], r.get("open", {})
        trig = [t for t in r.get("triggers", []) if t.get("p50_ms") is not None]
        med = sorted(trig, key=lambda t: t["p99_ms"])[len(trig) // 2] if trig else None
        lat = f"{med['p50_ms']:.0f} / {med['p99_ms']:.0f} / {med['max_ms']:.0f}" if med else "-"
        dlv = f"{min(t['delivered'] for t in r['triggers'])}/{r['n']}" if r.get("triggers") else "-"
        db = i.get("db", {})
        lines.append(
            f"| {r['label']} | {r['n']} | {i['held']} | {i['kib_per_conn']} | {lat} | {dlv} "
            f"| {db.get('xacts_per_s', '-')} | {db.get('backends_end', '-')} "
            f"| {i['server_cpu_s_per_min']} | {i['threads_with_n']} | {o.get('open_elapsed_s')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Many processes behind nginx: P servers x S streams, a broadcast to all, beside the floor.

    scripts/postgres .venv/bin/python bench/processes.py --client PATH/TO/ssebench.py
    scripts/postgres .venv/bin/python bench/processes.py --client PATH/TO/ssebench.py \
        --processes 4 --per-process 5000 --servers daphne uvicorn

One run, one system after the other, each under the shared load client
(``ssebench.py``) at the same N = P x S anonymous streams:

- **floor**: the load client's own bare asyncio broadcaster
  (``peers/floor_server.py`` next to the client), one process, no proxy. Whatever
  it measures is the client's cost on this machine.
- **daphne** / **uvicorn**: P processes of ``config.asgi:application`` (the bench
  settings, on PostgreSQL, a listen queue of 4,096; daphne with
  ``--proxy-headers``), started here, and one nginx in front of them with the
  ``upstream`` block of ``docs/nginx.conf`` (the P ports) and
  ``docs/nginx-alarms-locations.conf`` unchanged (``bench/storm.py`` writes the
  configuration). The client opens every stream through nginx.

Each run opens N streams at ``--connect-rate`` per second from ``--client-procs``
processes, holds them idle for ``--window`` seconds (memory and CPU of the
server processes, not nginx's), then times three broadcasts from their commit
(``bench/trigger.py`` in a process of its own) to every stream. Results are
appended as JSON lines to ``bench/results/processes.jsonl``; the table gives the
median over the broadcasts and each system's p99 over the floor's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.storm import (  # noqa: E402
    NGINX,
    SECRET,
    children,
    nginx_conf,
    raise_nofile,
    stop,
    wait_listening,
)
from bench.storm import server_command as storm_server_command  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "processes.jsonl"


def server_command(server: str, port: int) -> list[str]:
    return storm_server_command(server, str(ROOT / ".venv" / "bin" / "python"), port)


def client_command(args: argparse.Namespace, label: str, url: str, note: str, n: int) -> list[str]:
    return [
        sys.executable, str(args.client), "--label", label, "-n", str(n),
        "--window", str(args.window), "--connect-rate", str(args.connect_rate),
        "--client-procs", str(args.client_procs), "--open-timeout", str(args.open_timeout),
        "--trigger-wait", "30", "--url", url, "--note", note, "--json-out", str(args.json_out),
    ]  # fmt: skip


def run_floor(args: argparse.Namespace, note: str, port: int) -> None:
    floor = args.client.parent / "peers" / "floor_server.py"
    trigger = f"curl -s -X POST 'http://127.0.0.1:{port}/publish?message={{token}}'"
    # One process holds every stream: it needs a descriptor for each, and a few of its own.
    n = min(args.processes * args.per_process, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64)
    command = client_command(args, "floor", f"http://127.0.0.1:{port}/events", note, n)
    command += ["--server-cwd", str(floor.parent)]
    command += ["--server-cmd", f"{sys.executable} {floor} {port}"]
    for _ in range(3):
        command += ["--trigger", trigger]
    subprocess.run(command, check=False)


def run_servers(args: argparse.Namespace, server: str, note: str, base: int, work: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_DEBUG": "0",
        "ALARMS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    ports = [base + 1 + i for i in range(args.processes)]
    processes: list[subprocess.Popen[bytes]] = []
    nginx = None
    try:
        for port in ports:
            log = work / f"{server}-{port}.log"
            processes.append(
                subprocess.Popen(
                    server_command(server, port),
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        for port, process in zip(ports, processes, strict=True):
            wait_listening(port, process, server, work / f"{server}-{port}.log")
        directory = work / f"nginx-{server}"
        directory.mkdir()
        # Two nginx connections per stream: enough workers that none needs more
        # descriptors than this machine allows a process.
        conf = nginx_conf(ROOT, directory, base, ports, workers=args.nginx_workers)
        nginx = subprocess.Popen(
            [NGINX, "-c", str(conf), "-e", str(directory / "nginx-error.log")],
            stdout=(directory / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_listening(base, nginx, "nginx", directory / "nginx-error.log")
        trigger = f"cd {ROOT} && {sys.executable} bench/trigger.py {{token}}"
        label = f"{server} x{args.processes}"
        url = f"http://127.0.0.1:{base}/alarms/stream/"
        command = client_command(args, label, url, note, args.processes * args.per_process)
        for process in processes:
            command += ["--pid", str(process.pid)]
        for _ in range(3):
            command += ["--trigger", trigger]
        nginx_before = sum(cpu(p) for p in [nginx.pid, *children(nginx.pid)])
        subprocess.run(command, env=env, check=False)
        nginx_cpu = sum(cpu(p) for p in [nginx.pid, *children(nginx.pid)]) - nginx_before
        print(f"nginx CPU over the whole run: {nginx_cpu:.1f} s", flush=True)
    finally:
        if nginx is not None:
            stop(nginx)
        for process in processes:
            stop(process)


def cpu(pid: int) -> float:
    from bench.storm import cpu_seconds

    return cpu_seconds(pid)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| system | N | held | open all (s) | KiB/stream | idle CPU (s/min) "
        "| broadcast p50 / p99 / max (ms) | delivered | p99 / floor's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    floor_p99 = None
    for r in records:
        if r["label"] == "floor" and r.get("triggers"):
            floor_p99 = statistics.median(t["p99_ms"] or 0 for t in r["triggers"])
    for r in records:
        if "idle" not in r or not r.get("triggers"):
            lines.append(f"| {r['label']} | {r['n']:,} | run failed: {r.get('error', '?')} |")
            continue
        idle, triggers = r["idle"], r["triggers"]
        p50 = statistics.median(t["p50_ms"] or 0 for t in triggers)
        p99 = statistics.median(t["p99_ms"] or 0 for t in triggers)
        top = statistics.median(t["max_ms"] or 0 for t in triggers)
        delivered = "/".join(str(t["delivered"]) for t in triggers)
        ratio = f"{p99 / floor_p99:.2f}" if floor_p99 else "?"
        kib = idle["kib_per_conn"]
        lines.append(
            f"| {r['label']} | {r['n']:,} | {idle['held']:,} | {r['open']['open_elapsed_s']:.1f} "
            f"| {kib if kib is not None else '?'} | {idle['server_cpu_s_per_min']:.1f} "
            f"| {p50:,.0f} / {p99:,.0f} / {top:,.0f} | {delivered} of {r['n']:,} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", type=Path, required=True, help="the ssebench load client")
    parser.add_argument("--processes", type=int, default=4, help="default: %(default)s")
    parser.add_argument("--per-process", type=int, default=5000, help="default: %(default)s")
    parser.add_argument(
        "--servers", nargs="*", choices=("daphne", "uvicorn"), default=["daphne", "uvicorn"]
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor's run")
    parser.add_argument("--window", type=float, default=20.0, help="idle seconds")
    parser.add_argument("--connect-rate", type=int, default=1000, help="new streams per second")
    parser.add_argument("--client-procs", type=int, default=2, help="load client processes")
    parser.add_argument("--open-timeout", type=float, default=180.0)
    parser.add_argument("--nginx-workers", default="4", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=15400, help="first port; default: %(default)s")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("run under scripts/postgres")
    raise_nofile()
    args.client = args.client.resolve()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    note = f"processes-{int(time.time())}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "DJANGO_SECRET_KEY": SECRET},
        check=True,
    )
    work = Path(tempfile.mkdtemp(prefix="alarms-processes-"))
    print(f"run {note}; logs in {work}", flush=True)
    if not args.no_floor:
        run_floor(args, note, args.port)
    for i, server in enumerate(args.servers):
        run_servers(args, server, note, args.port + 10 * (i + 1), work)
    records = [
        json.loads(line)
        for line in args.json_out.read_text().splitlines()
        if json.loads(line).get("note") == note
    ]
    print()
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

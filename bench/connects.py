"""A reconnect storm, through the direct path and through Django's, in one run.

    .venv/bin/python bench/connects.py                       # SQLite in a temporary folder
    scripts/postgres .venv/bin/python bench/connects.py --connects 5000

Two daphne processes of the benchmark settings: one serves ``bench.asgi:direct``
(the demo's stack, with ``alarms.asgi.direct_streams``), the other
``bench.asgi:django`` (the same without it). Each round sends every server, in
turn, N signed-in readers that reconnect at once with a ``Last-Event-ID`` at the
journal's head (the usual storm after a proxy or process restart), C at a time,
and holds them until all have their first bytes. Printed per server: the
server's CPU seconds over the storm divided by N, the storm's wall time, and
the time to first bytes (p50, max). Readers are spread over --users users, so
the per-user cap does not close streams as they come. ``--servers direct``
storms one path only (a 10,000-connect storm through Django's takes minutes).
``--asgi daphne uvicorn`` runs each path under both servers, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVERS = {"direct": "bench.asgi:direct", "django": "bench.asgi:django"}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare(users: int) -> tuple[list[str], str]:
    """Users with a session each, a few live alarms; the session cookies and a head event id."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client

    from alarms import api
    from alarms.models import AlarmChange

    call_command("migrate", verbosity=0)
    group, _ = Group.objects.get_or_create(name="Night shift")
    cookies = []
    for i in range(users):
        user, _ = User.objects.get_or_create(username=f"storm{i}")
        user.groups.add(group)
        client = Client()
        client.force_login(user)
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={client.cookies['sessionid'].value}")
    texts = {"en": {"title": "Storm", "message": "m"}, "ko": {"title": "폭풍", "message": "ㅁ"}}
    for level in ("info", "warning", "critical"):
        api.send_alarm(texts, level=level)
    api.send_alarm(texts, level="error", groups=[group])
    head = AlarmChange.objects.order_by("-pk").values_list("pk", flat=True).first()
    return cookies, f"{head}-{int(time.time() * 1000)}"


async def storm(port: int, cookies: list[str], last_id: str, n: int, concurrency: int) -> dict:
    gate = asyncio.Semaphore(concurrency)
    held: list[asyncio.StreamWriter] = []
    waits: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                (
                    f"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Accept: text/event-stream\r\nCookie: {cookies[i % len(cookies)]}\r\n"
                    f"Last-Event-ID: {last_id}\r\nAccept-Language: ko\r\n\r\n"
                ).encode()
            )
            data = b""
            while b": alarms" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError(data[:200].decode(errors="replace"))
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(data[:200].decode(errors="replace"))
            waits.append(time.monotonic() - started)
            held.append(writer)

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    for writer in held:
        writer.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    waits.sort()
    return {
        "ok": len(waits),
        "errors": len(errors),
        "first_error": repr(errors[0])[:200] if errors else None,
        "p50_ms": round(statistics.median(waits) * 1000) if waits else None,
        "max_ms": round(waits[-1] * 1000) if waits else None,
    }


def command(path: str, asgi: str, port: int, backlog: int | None) -> list[str]:
    """The command line of one server: ``path`` (direct or django) under ``asgi``."""
    app = SERVERS[path]
    if asgi == "uvicorn":
        # As docs/deployment.md runs it; uvicorn's own listen queue is 2,048.
        queue = ["--backlog", str(backlog)] if backlog is not None else []
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "off", "--no-access-log", "--log-level", "warning", *queue, app,
        ]  # fmt: skip
    if backlog is None:  # daphne's own listen queue (Twisted's default, 50)
        listen = ["-b", "127.0.0.1", "-p", str(port)]
    else:
        listen = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
    return [sys.executable, "-m", "daphne", *listen, app]


def start(
    name: str, argv: list[str], port: int, env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("wb")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{name} did not listen; see {logs / (name + '.log')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=2000, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--users", type=int, default=200, help="default: %(default)s")
    parser.add_argument(
        "--port", type=int, default=8741, help="the first server's; default: %(default)s"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=sorted(SERVERS),
        default=list(SERVERS),
        help="which paths to storm; default: both",
    )
    parser.add_argument(
        "--asgi",
        nargs="+",
        choices=("daphne", "uvicorn"),
        default=["daphne"],
        help="the ASGI servers to run each path under, side by side; default: daphne",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="the servers' listen queue (default: daphne's, 50; a storm of more "
        "connects at once than it holds is partly dropped and retried by the clients' TCP)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="alarms-connects-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{work / 'db.sqlite3'}")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "x" * 50)
    # Each reader holds one stream; caps high enough for a whole storm per user.
    per_user = -(-args.connects // args.users) + 1
    os.environ["BENCH_ALARMS"] = json.dumps({"MAX_STREAMS_PER_USER": per_user})
    cookies, last_id = prepare(args.users)
    env = {**os.environ, "ALARMS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    # One process per path and server, e.g. "direct" (daphne) and "direct@uvicorn".
    runs = {
        (path if asgi == "daphne" else f"{path}@{asgi}"): (path, asgi)
        for path in SERVERS
        if path in args.servers
        for asgi in args.asgi
    }
    servers = list(runs)
    ports = {name: args.port + i for i, name in enumerate(servers)}
    processes = {
        name: start(name, command(*runs[name], ports[name], args.backlog), ports[name], env, work)
        for name in servers
    }
    database = os.environ["DATABASE_URL"].split("://")[0]
    print(f"{args.connects} connects, {args.concurrency} at a time, {database}; logs in {work}")
    rows: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for round_ in range(1, args.rounds + 1):
            for name in servers:
                pid = processes[name].pid
                before, started = cpu_seconds(pid), time.monotonic()
                result = asyncio.run(
                    storm(ports[name], cookies, last_id, args.connects, args.concurrency)
                )
                result["wall_s"] = round(time.monotonic() - started, 2)
                # Closing is part of the cost: wait until the server is idle again.
                time.sleep(2)
                result["cpu_ms_per_connect"] = round(
                    (cpu_seconds(pid) - before) * 1000 / args.connects, 2
                )
                rows[name].append(result)
                print(f"round {round_} {name:14} {json.dumps(result)}", flush=True)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)  # a busy machine may take a while to close its streams
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    print("\nmedians:")
    for name, results in rows.items():
        cpu = statistics.median(r["cpu_ms_per_connect"] for r in results)
        wall = statistics.median(r["wall_s"] for r in results)
        p50 = statistics.median(r["p50_ms"] or 0 for r in results)
        slowest = statistics.median(r["max_ms"] or 0 for r in results)
        print(
            f"  {name:14} {cpu:6.2f} ms CPU per connect   {wall:7.2f} s per storm   "
            f"first bytes p50 {p50:.0f} ms, max {slowest:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

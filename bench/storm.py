"""A dismissal storm behind nginx: every signed-in user dismisses one broadcast at once.

    scripts/postgres .venv/bin/python bench/storm.py --users 500
    scripts/postgres .venv/bin/python bench/storm.py --tree OLD_CHECKOUT --tree . \
        --users 10000 --second 1000 --processes 4

Per ``--tree`` (a checkout with its own ``.venv``; default: this one), one after
the other in one run:

1. A database of its own in the cluster of ``DATABASE_URL``, migrated by the
   tree's own ``manage.py migrate``; N users with a session each, bulk-created
   (``bench/storm_setup.py``, run in the tree).
2. P processes of the tree's ASGI server, daphne by default or each ``--server``
   in turn (``config.asgi:application``, the bench settings, proxy headers
   trusted, a listen queue of 4,096; uvicorn with the options of this
   checkout's systemd unit, ``docs/alarms@.service``) and one nginx in front
   of them: the ``upstream`` block of the tree's ``docs/nginx.conf`` with the P
   ports, and a server block that includes ``docs/nginx-alarms-locations.conf``
   unchanged. The server block adds one response header, ``X-Upstream``, naming
   the process that served, so the client can put a user's second stream on
   another process.
3. This process, the client (plain asyncio sockets), opens one signed-in stream
   per user through nginx, then a second stream for the first ``--second``
   users, straight to the next daphne process after the one nginx chose for
   their first (the shape: N users, N + K streams, K users with streams on two
   processes).
4. It publishes one alarm for everyone (the tree's ``bench/trigger.py``) and
   waits until every stream has it.
5. The storm: every user POSTs ``/alarms/dismiss/`` for that alarm through
   nginx, with the session cookie and a CSRF cookie and header, at a time
   spread evenly over ``--spread`` seconds (users in random order). Halfway
   through, another alarm is published by ``bench/trigger.py`` in a process of
   its own, timed at its commit.
6. Measured: each POST's latency; for the K users with a second stream, from
   their POST's response to the ``dismiss`` event on the second stream; the
   same to their first stream for all N users; the mid-storm alarm from its
   commit to every stream; the daphne processes' and nginx's CPU over the
   storm, and the machine's.

Prints one table with a row per tree and appends a JSON line per tree to
``--json-out``. Every clock is ``time.time()`` on the one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
SECRET = "bench-only-" + "x" * 50


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "min_ms": round(ordered[0] * 1000, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on {port}; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the database of one tree ---------------------------------------------------------


def tree_database(base_url: str, name: str) -> str:
    """A fresh database ``name`` in the cluster of ``base_url``; its URL."""
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# --- nginx ------------------------------------------------------------------------------


def nginx_conf(
    tree: Path, work: Path, port: int, upstream_ports: list[int], workers: str = "auto"
) -> Path:
    """nginx.conf: the tree's upstream block with these ports, its locations snippet unchanged."""
    site = (tree / "docs" / "nginx.conf").read_text()
    found = re.search(r"^upstream alarms_app \{\n.*?^\}\n", site, re.M | re.S)
    if not found:
        raise SystemExit(f"no upstream alarms_app block in {tree / 'docs/nginx.conf'}")
    block, count = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+;\n", "", found.group(0))
    if not count:
        raise SystemExit("the upstream block lists no server")
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstream_ports)
    block = block.replace("{\n", "{\n" + servers, 1)
    temp = "".join(
        f"    {kind}_temp_path {work / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    # worker_processes auto, as Debian ships it; reuseport spreads the connections
    # evenly over the workers, each of which holds two per stream (docs/deployment.md).
    conf.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes {workers};\n{user}"
        f"worker_rlimit_nofile {limit};\n"
        f"pid {work / 'nginx.pid'};\nerror_log {work / 'nginx-error.log'} warn;\n"
        f"events {{\n    worker_connections {limit - 500};\n}}\n"
        f"http {{\n    access_log off;\n{temp}{block}"
        "server {\n"
        f"    listen 127.0.0.1:{port} reuseport;\n"
        "    add_header X-Upstream $upstream_addr;\n"
        f"    include {tree / 'docs' / 'nginx-alarms-locations.conf'};\n"
        "}\n}\n"
    )
    return conf


# --- the client -------------------------------------------------------------------------


class Dechunker:
    """HTTP/1.1 chunked transfer decoding, fed as bytes arrive."""

    def __init__(self) -> None:
        self.raw = b""
        self.left = 0  # bytes of the current chunk still to come (then its CRLF)
        self.crlf = 0

    def feed(self, data: bytes) -> bytes:
        self.raw += data
        out = []
        while self.raw:
            if self.crlf:
                take = min(self.crlf, len(self.raw))
                self.raw, self.crlf = self.raw[take:], self.crlf - take
                continue
            if self.left:
                piece = self.raw[: self.left]
                out.append(piece)
                self.raw, self.left = self.raw[len(piece) :], self.left - len(piece)
                if not self.left:
                    self.crlf = 2
                continue
            end = self.raw.find(b"\r\n")
            if end < 0:
                break
            size = int(self.raw[:end].split(b";")[0], 16)
            self.raw = self.raw[end + 2 :]
            if size == 0:
                break
            self.left = size
        return b"".join(out)


@dataclass(eq=False)
class Stream:
    user: int
    second: bool
    upstream: str = ""
    alarms: dict[str, float] = field(default_factory=dict)
    alarm_data: dict[str, bytes] = field(default_factory=dict)
    dismiss_at: float | None = None
    closed_at: float | None = None
    writer: asyncio.StreamWriter | None = None


class Client:
    def __init__(self, host: str, sessions: list[str], names: dict[str, str]) -> None:
        self.host = host
        self.sessions = sessions
        self.session_cookie = names["session_cookie"]
        self.csrf_cookie = names["csrf_cookie"]
        self.tokens: list[bytes] = []
        self.arrived: dict[bytes, int] = {}
        self.dismissed = {False: 0, True: 0}
        self.streams: list[Stream] = []
        self.tasks: list[asyncio.Task[None]] = []

    def cookie(self, user: int) -> str:
        return f"{self.session_cookie}={self.sessions[user]}; {self.csrf_cookie}={'c' * 32}"

    def watch(self, token: str) -> None:
        self.tokens.append(token.encode())
        self.arrived[token.encode()] = 0

    async def open(self, port: int, user: int, second: bool) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Accept: text/event-stream\r\nAccept-Language: en\r\n"
                f"Cookie: {self.cookie(user)}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"closed before the headers: {head[:200]!r}")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            raise RuntimeError(lines[0])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        stream = Stream(user, second, upstream=headers.get("x-upstream", f"127.0.0.1:{port}"))
        stream.writer = writer
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.streams.append(stream)
        self.tasks.append(asyncio.create_task(self.pump(stream, reader, rest, chunked)))
        return stream

    async def pump(
        self, stream: Stream, reader: asyncio.StreamReader, rest: bytes, chunked: bool
    ) -> None:
        decoder = Dechunker() if chunked else None
        buffer = b""
        data = rest
        while True:
            if data:
                now = time.time()
                buffer += decoder.feed(data) if decoder else data
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    if block.startswith(b":"):
                        continue
                    if b"event: alarm" in block:
                        for token in self.tokens:
                            if token in block and token.decode() not in stream.alarms:
                                stream.alarms[token.decode()] = now
                                stream.alarm_data[token.decode()] = block
                                self.arrived[token] += 1
                    elif b"event: dismiss" in block and stream.dismiss_at is None:
                        stream.dismiss_at = now
                        self.dismissed[stream.second] += 1
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                stream.closed_at = time.time()
                return

    async def dismiss(self, port: int, user: int, alarm_id: int) -> tuple[float, float, int]:
        body = json.dumps({"ids": [alarm_id], "language": "en"}).encode()
        sent = time.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"POST /alarms/dismiss/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Origin: http://127.0.0.1:{port}\r\nCookie: {self.cookie(user)}\r\n"
                f"X-CSRFToken: {'c' * 32}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )
        response = await reader.read()  # nginx closes after the answer (Connection: close)
        answered = time.time()
        writer.close()
        status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
        if status == 200 and b'"updated": 1' not in response and b'"updated":1' not in response:
            status = -200  # answered, but nothing dismissed
        return sent, answered, status


class Backends(threading.Thread):
    """The most connections PostgreSQL held to the tree's database, sampled every 0.2 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.most, self.done = url, 0, threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.wait(0.2):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)

    def stop(self) -> None:
        self.done.set()
        self.join(5)


async def wait_for(condition: Any, seconds: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()


async def trigger(python: str, tree: Path, env: dict[str, str], token: str) -> tuple[float, float]:
    """Publish an alarm for everyone from a process of its own: (launched, committed)."""
    launched = time.time()
    process = await asyncio.create_subprocess_exec(
        python,
        str(tree / "bench" / "trigger.py"),
        token,
        cwd=tree,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, 0),  # not the client's
    )
    committed = None
    assert process.stdout
    async for line in process.stdout:
        if line.startswith(b"BENCH_TS="):
            committed = float(line.split(b"=", 1)[1])
    await process.wait()
    if committed is None:
        raise RuntimeError(f"the trigger printed no BENCH_TS (exit {process.returncode})")
    return launched, committed


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


async def scenario(
    args: argparse.Namespace,
    tree: Path,
    env: dict[str, str],
    sessions: list[str],
    names: dict[str, str],
    nginx_port: int,
    daphne_ports: list[int],
    daphne_pids: list[int],
    nginx_pids: list[int],
) -> dict[str, Any]:
    python = str(tree / ".venv" / "bin" / "python")
    client = Client("127.0.0.1", sessions, names)
    result: dict[str, Any] = {}
    n, k = len(sessions), min(args.second, len(sessions))

    # 1. Open the streams: one per user through nginx, then the second ones.
    gate = asyncio.Semaphore(args.connect_concurrency)
    firsts: dict[int, Stream] = {}

    async def first(user: int) -> None:
        async with gate:
            firsts[user] = await client.open(nginx_port, user, second=False)

    started = time.monotonic()
    outcome = await asyncio.gather(*(first(u) for u in range(n)), return_exceptions=True)
    errors = [o for o in outcome if isinstance(o, BaseException)]
    by_port = {f"127.0.0.1:{p}": i for i, p in enumerate(daphne_ports)}

    async def second(user: int) -> None:
        async with gate:
            at = by_port.get(firsts[user].upstream, 0)
            await client.open(daphne_ports[(at + 1) % len(daphne_ports)], user, second=True)

    outcome = await asyncio.gather(
        *(second(u) for u in range(k) if u in firsts), return_exceptions=True
    )
    errors += [o for o in outcome if isinstance(o, BaseException)]
    result["open_s"] = round(time.monotonic() - started, 1)
    result["open_errors"] = len(errors)
    if errors:
        result["first_open_error"] = repr(errors[0])[:200]
    spread: dict[str, int] = {}
    for s in client.streams:
        spread[s.upstream] = spread.get(s.upstream, 0) + 1
    result["streams_per_process"] = dict(sorted(spread.items()))
    firsts_held = sum(1 for s in client.streams if not s.second)
    seconds = [s for s in client.streams if s.second]
    result["shape"] = {"users": n, "first_streams": firsts_held, "second_streams": len(seconds)}
    print(f"  open: {json.dumps(result)}", flush=True)
    everyone = len(client.streams)
    await asyncio.sleep(args.settle)

    # 2. One broadcast, to every stream.
    token1 = f"storm-{secrets.token_hex(4)}"
    client.watch(token1)
    _, committed = await trigger(python, tree, env, token1)
    ok = await wait_for(lambda: client.arrived[token1.encode()] >= everyone, args.timeout)
    got = [s.alarms[token1] - committed for s in client.streams if token1 in s.alarms]
    result["broadcast"] = {**percentiles(got), "delivered": len(got), "of": everyone}
    if not got:
        raise RuntimeError("the broadcast reached no stream")
    sample = next(s for s in client.streams if token1 in s.alarm_data)
    data = sample.alarm_data[token1].split(b"data: ", 1)[1].split(b"\n")[0]
    alarm_id = int(json.loads(data)["id"])
    print(f"  broadcast {alarm_id}: {json.dumps(result['broadcast'])} (all: {ok})", flush=True)

    # 3. The storm.
    token2 = f"storm-{secrets.token_hex(4)}"
    client.watch(token2)
    order = list(range(n))
    random.Random(1).shuffle(order)
    posts: dict[int, tuple[float, float, int]] = {}
    failures: list[str] = []
    post_gate = asyncio.Semaphore(args.post_concurrency)
    flight = [0, 0]  # dismiss POSTs in flight now, at most
    t0 = time.time() + 0.5

    async def one(rank: int, user: int) -> None:
        await asyncio.sleep(max(0.0, t0 + args.spread * rank / n - time.time()))
        async with post_gate:
            flight[0] += 1
            flight[1] = max(flight[1], flight[0])
            try:
                posts[user] = await client.dismiss(nginx_port, user, alarm_id)
            except (OSError, ValueError, IndexError) as exc:
                failures.append(repr(exc)[:200])
            finally:
                flight[0] -= 1

    mid: dict[str, Any] = {}

    async def publish_mid() -> None:
        await asyncio.sleep(max(0.0, t0 + args.spread / 2 - time.time()))
        try:
            mid["launched"], mid["committed"] = await trigger(python, tree, env, token2)
        except RuntimeError as exc:
            mid["error"] = str(exc)

    watched = daphne_pids + nginx_pids
    cpu_before = {p: cpu_seconds(p) for p in watched}
    machine_before = machine_ticks()
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    backends = Backends(env["DATABASE_URL"])
    backends.start()
    storm_start = time.time()
    await asyncio.gather(*(one(rank, user) for rank, user in enumerate(order)), publish_mid())
    last_answer = time.time()
    users_with_second = {s.user for s in seconds}
    done = await wait_for(
        lambda: (
            client.dismissed[True] >= len(users_with_second)
            and client.dismissed[False] >= firsts_held
            and (client.arrived[token2.encode()] >= everyone or "error" in mid)
        ),
        args.timeout,
    )
    storm_end = time.time()
    backends.stop()
    cpu_after = {p: cpu_seconds(p) for p in watched}
    machine_after = machine_ticks()
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    window = storm_end - storm_start

    statuses: dict[str, int] = {}
    for _, _, status in posts.values():
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    answered = [posts[u][1] for u in posts]
    result["posts"] = {
        **percentiles([a - s for s, a, _ in posts.values()]),
        "statuses": statuses,
        "failures": len(failures),
        "in_flight_max": flight[1],
        "pg_backends_max": backends.most,
        "first_failure": failures[0] if failures else None,
        "storm_s": round(max(answered) - storm_start, 1) if answered else None,
        "per_s": round(len(answered) / (max(answered) - storm_start), 1) if answered else None,
    }

    def to_stream(streams: list[Stream]) -> dict[str, Any]:
        waits, early = [], 0
        for s in streams:
            post = posts.get(s.user)
            if post is None or post[2] != 200 or s.dismiss_at is None:
                continue
            wait = s.dismiss_at - post[1]
            early += wait < 0
            waits.append(max(0.0, wait))
        return {**percentiles(waits), "delivered": len(waits), "of": len(streams), "early": early}

    result["dismiss_other_stream"] = to_stream(seconds)
    result["dismiss_own_stream"] = to_stream([s for s in client.streams if not s.second])
    arrivals = [s.alarms[token2] for s in client.streams if token2 in s.alarms]
    by_process: dict[str, list[float]] = {}
    for s in client.streams:
        if token2 in s.alarms:
            by_process.setdefault(s.upstream, []).append(s.alarms[token2])
    if "error" in mid:
        result["mid_alarm"] = {"error": mid["error"], "delivered": 0, "of": everyone}
    else:
        result["mid_alarm"] = {
            **percentiles([a - mid["committed"] for a in arrivals]),
            "delivered": len(arrivals),
            "of": everyone,
            "launch_to_commit_ms": round((mid["committed"] - mid["launched"]) * 1000, 1),
            "commit_after_start_s": round(mid["committed"] - storm_start, 2),
            # To line the servers' stamped logs up with the commit.
            "committed_at": mid["committed"],
            # Which process's streams were late: the fan-out's or the machine's share.
            "by_process": {
                upstream: percentiles([a - mid["committed"] for a in times])
                for upstream, times in sorted(by_process.items())
            },
        }
    busy = machine_after[0] - machine_before[0]
    total = machine_after[1] - machine_before[1]
    result["cpu"] = {
        "window_s": round(window, 1),
        "all_delivered": done,
        "daphne_s": [round(cpu_after[p] - cpu_before[p], 1) for p in daphne_pids],
        "nginx_s": round(sum(cpu_after[p] - cpu_before[p] for p in nginx_pids), 1),
        "client_s": round(
            client_after.ru_utime
            + client_after.ru_stime
            - client_before.ru_utime
            - client_before.ru_stime,
            1,
        ),
        "machine_busy": round(busy / total, 3) if total else None,
        "answers_done_s": round(last_answer - storm_start, 1),
    }
    result["closed_streams"] = sum(1 for s in client.streams if s.closed_at is not None)
    for s in client.streams:
        if s.writer:
            s.writer.close()
    for task in client.tasks:
        task.cancel()
    await asyncio.gather(*client.tasks, return_exceptions=True)
    return result


UNIT = ROOT / "docs" / "alarms@.service"


def unit_uvicorn(python: str, port: int) -> list[str]:
    """The systemd unit's ExecStart line (this checkout's ``docs/alarms@.service``),
    with ``python -m uvicorn`` for its program and ``port`` for ``%i``: every tree
    runs the uvicorn a deployment runs."""
    line = next(s for s in UNIT.read_text().splitlines() if s.startswith("ExecStart="))
    program, *args = shlex.split(line.partition("=")[2])
    if Path(program).name != "uvicorn":
        raise SystemExit(f"{UNIT} runs {program}, not uvicorn")
    *options, app = (a.replace("%i", str(port)) for a in args)
    return [python, "-m", "uvicorn", *options, "--log-level", "warning", app]


def server_command(server: str, python: str, port: int) -> list[str]:
    if server == "daphne":
        listen = f"tcp:port={port}:interface=127.0.0.1:backlog=4096"
        return [python, "-m", "daphne", "--proxy-headers", "-e", listen, "config.asgi:application"]
    return unit_uvicorn(python, port)


def run_tree(
    args: argparse.Namespace, tree: Path, server: str, index: int, work: Path
) -> dict[str, Any]:
    label = f"{tree.name}@{git_head(tree)}" + ("" if server == "daphne" else f" ({server})")
    print(f"{label}: preparing {args.users} users", flush=True)
    db_url = tree_database(os.environ["DATABASE_URL"], f"storm_{index}")
    python = str(tree / ".venv" / "bin" / "python")
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_DEBUG": "0",
        "ALARMS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "BENCH_ALARMS": json.dumps({"MAX_STREAMS_PER_USER": 10, **json.loads(args.alarms)}),
    }
    env.pop("PYTHONPATH", None)
    out = work / f"sessions-{index}.json"
    started = time.monotonic()
    subprocess.run(
        [
            python,
            str(ROOT / "bench" / "storm_setup.py"),
            "--users",
            str(args.users),
            "--out",
            str(out),
        ],
        cwd=tree,
        env=env,
        check=True,
    )
    setup = json.loads(out.read_text())
    print(f"  {args.users} users and sessions in {time.monotonic() - started:.1f} s", flush=True)

    base = args.port + index * 20
    daphne_ports = [base + 1 + i for i in range(args.processes)]
    nginx_port = base
    servers: list[subprocess.Popen[bytes]] = []
    nginx = None
    try:
        for port in daphne_ports:
            log = work / f"{server}-{index}-{port}.log"
            servers.append(
                subprocess.Popen(
                    server_command(server, python, port),
                    cwd=tree,
                    env=env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        for port, process in zip(daphne_ports, servers, strict=True):
            wait_listening(port, process, server, work / f"{server}-{index}-{port}.log")
        nginx_dir = work / f"nginx-{index}"
        nginx_dir.mkdir()
        conf = nginx_conf(tree, nginx_dir, nginx_port, daphne_ports)
        nginx = subprocess.Popen(
            [NGINX, "-c", str(conf), "-e", str(nginx_dir / "nginx-error.log")],
            stdout=(nginx_dir / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_listening(nginx_port, nginx, "nginx", nginx_dir / "nginx-error.log")
        nginx_pids = [nginx.pid, *children(nginx.pid)]
        # The client's own nice value, not the servers' (started above) nor the
        # trigger's (which resets it): on Linux, it is this thread's alone.
        os.setpriority(os.PRIO_PROCESS, 0, args.client_nice)
        result = asyncio.run(
            scenario(
                args, tree, env, setup["sessions"], setup, nginx_port, daphne_ports,
                [p.pid for p in servers], nginx_pids,
            )
        )  # fmt: skip
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        if nginx is not None:
            stop(nginx)
        for process in servers:
            stop(process)
    return {
        "label": label,
        "tree": str(tree),
        "server": server,
        "client_nice": args.client_nice,
        "processes": args.processes,
        **result,
    }


def git_head(tree: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return found.stdout.strip() or "?"


def fmt(p: dict[str, Any]) -> str:
    if p.get("p50_ms") is None:
        return "none"
    return f"{p['p50_ms']:,.0f} / {p['p99_ms']:,.0f} / {p['max_ms']:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| tree | users / streams | dismiss POST p50 / p99 / max ms | POSTs answered (s) "
        "| dismiss → other stream p50 / p99 / max ms | delivered "
        "| alarm mid-storm p50 / p99 / max ms | delivered | server CPU s (sum) | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = r["shape"]
        other, mid, cpu, posts = r["dismiss_other_stream"], r["mid_alarm"], r["cpu"], r["posts"]
        streams = shape["first_streams"] + shape["second_streams"]
        lines.append(
            f"| {r['label']} | {shape['users']:,} / {streams:,} | {fmt(posts)} "
            f"| {posts['storm_s']} "
            f"| {fmt(other)} | {other['delivered']}/{other['of']} "
            f"| {fmt(mid)} | {mid['delivered']}/{mid['of']} "
            f"| {sum(cpu['daphne_s']):.0f} | {cpu['machine_busy']:.0%} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="repeatable; default: this one")
    parser.add_argument("--users", type=int, default=500, help="default: %(default)s")
    parser.add_argument(
        "--server",
        action="append",
        choices=("daphne", "uvicorn"),
        help="repeatable: each tree runs under each; default: daphne",
    )
    parser.add_argument(
        "--second", type=int, default=None, help="users with a second stream (default: N/10)"
    )
    parser.add_argument("--processes", type=int, default=4, help="default: %(default)s")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds; default: %(default)s")
    parser.add_argument("--port", type=int, default=15000, help="first port; default: %(default)s")
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument(
        "--post-concurrency",
        type=int,
        default=400,
        help="dismiss POSTs in flight at most (each holds a socket here and a database "
        "connection in the server); default: %(default)s",
    )
    parser.add_argument(
        "--alarms",
        default="{}",
        help="JSON merged into the servers' ALARMS, e.g. '{\"RECEIPT_THREADS\": 1}'",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after opening")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="the client's nice value (-20 to 19; below 0 needs root): on one machine the client "
        "takes the servers' cores, where browsers would not; default: %(default)s",
    )
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench" / "results" / "storm.jsonl")
    args = parser.parse_args()
    if args.second is None:
        args.second = max(1, args.users // 10)
    if "DATABASE_URL" not in os.environ or not os.environ["DATABASE_URL"].startswith("postgres"):
        raise SystemExit("run under scripts/postgres: the storm needs PostgreSQL")
    limit = raise_nofile()
    # Every dismissal in flight is a request thread with a connection of its own.
    sys.path.insert(0, str(ROOT))
    from bench.journal import ensure_connections

    pg = ensure_connections(os.environ["DATABASE_URL"], args.post_concurrency + 150)
    print(f"PostgreSQL: {json.dumps(pg)}", flush=True)
    needed = args.users + args.second + args.post_concurrency + 100
    if needed > limit:
        raise SystemExit(f"{needed} sockets needed, {limit} allowed: lower --post-concurrency")
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    work = Path(tempfile.mkdtemp(prefix="alarms-storm-"))
    note = f"storm-{int(time.time())}"
    print(f"logs in {work}", flush=True)
    rows = []
    runs = [(tree, server) for tree in trees for server in (args.server or ["daphne"])]
    for index, (tree, server) in enumerate(runs):
        row = run_tree(args, tree, server, index, work)
        row["note"] = note
        row["users"], row["spread_s"] = args.users, args.spread
        rows.append(row)
        print(json.dumps(row), flush=True)
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        with args.json_out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

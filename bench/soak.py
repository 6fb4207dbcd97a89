"""Soak: N streams across two daphne processes, an alarm a second in three languages.

    scripts/postgres .venv/bin/python bench/soak.py --streams 5000 --minutes 30 \\
        --out bench/results/soak-YYYY-MM-DD

Needs PostgreSQL (DATABASE_URL) and bench/requirements.txt. The run, in order:

1. migrate, withdraw every current alarm (streams start empty), create the
   signed-in users and a session each through Django's session machinery;
2. start two daphne processes (``bench.settings``) on free ports;
3. open the N streams from separate client processes (raw asyncio sockets),
   half on each server, a third each in en, ko and ja (``?lang=`` or
   Accept-Language), most of them signed in with a session cookie;
4. commit one alarm a second for everyone from a writer process
   (``alarms.api.send_alarm``, translated, with a unique token in the title),
   which reports each commit time; sample every 10 s meanwhile: each server's
   RSS, CPU time and threads, its open streams (``/alarms/metrics/``), the
   clients' CPU, and PostgreSQL's transactions, tuples, backends and CPU;
5. wait for stragglers (``--drain``), stop the clients and servers, and write
   samples.csv, alarms.csv, summary.json and soak.png to ``--out``, then print
   a Markdown summary.

Clients behave like EventSource: a stream that ends comes back after the
``retry:`` delay with Last-Event-ID, and every alarm counts once per stream.
Connections drop at random (``--churn``: on average once per stream per that
many seconds, as on flaky networks), so resuming is exercised at a steady
rate. ``MAX_LIFETIME`` (``--lifetime``) is left at the app's hour unless
given: the streams opened together, so a short one ends them all within
the same 15% of it, a reconnect storm rather than a soak.
Latency is receive time minus commit time, on the same clock; deliveries in
the opening of a reconnected stream (its replay) are counted as delivered but
kept out of the latency percentiles, which are about live delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from array import array
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LANGS = ("en", "ko", "ja")
TITLES = {"en": "Soak alarm", "ko": "소크 경보", "ja": "ソーク警報"}
MESSAGES = {
    "en": "One alarm a second for the soak benchmark.",
    "ko": "소크 벤치마크: 1초에 한 번 보내는 경보입니다.",
    "ja": "ソークベンチマーク、毎秒1件の警報です。",
}
ACCEPT_LANGUAGE = {"en": "en-US,en;q=0.9", "ko": "ko-KR,ko;q=0.9,en;q=0.5", "ja": "ja,en;q=0.5"}
SECRET_KEY = "bench-only-" + "x" * 50
# Latencies travel from the clients as integers in units of 0.1 ms.
TICKS_PER_S = 10_000


# ---------------------------------------------------------------------------
# Client process: holds its share of the streams, reports deliveries each second
# ---------------------------------------------------------------------------


class Stream(asyncio.Protocol):
    """One EventSource-like stream, reused across its reconnects.

    Parsing is deliberately minimal (this process must keep up with thousands
    of streams on a small machine): it relies on the server's own wire format
    (``alarms/events.py``: LF line ends, ``id``, ``event``, ``data`` in that
    order) and looks only at ``id:`` and the title of ``alarm`` events.
    tests/sse.py is the full WHATWG parser.
    """

    def __init__(self, client: Client, port: int, head: bytes, marker: bytes) -> None:
        self.client = client
        self.port = port
        self.head = head
        self.marker = marker
        self.seen = bytearray()  # one byte per alarm number: received on this stream
        self.last_id: bytes | None = None
        self.retry = 2.0
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] | None = None
        self._reset()

    def _reset(self) -> None:
        self.raw = bytearray()  # bytes off the socket, not yet de-chunked
        self.body = bytearray()  # de-chunked, not yet split into events
        self.need = -4  # >0: bytes left in chunk; -1 size line; -2 CRLF; -3 unchunked; -4 head
        self.chunks = 0

    def request(self) -> bytes:
        extra = b"Last-Event-ID: " + self.last_id + b"\r\n" if self.last_id else b""
        return self.head + extra + b"\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request())

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.need != -4
        self.transport = None
        self._reset()
        self._settle(False)
        self.client.lost(self, was_open)

    def _settle(self, ok: bool) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(ok)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        raw = self.raw
        raw += data
        if self.need == -4:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).lower()
            del raw[: end + 4]
            status = head[9:12]
            if status != b"200":
                self.client.errors[f"HTTP {status.decode()}"] += 1
                self._settle(False)
                assert self.transport is not None
                self.transport.close()
                return
            self.need = -1 if b"\r\ntransfer-encoding: chunked" in head else -3
            self.client.opened(self)
            self._settle(True)
        body = self.body
        pos, n = 0, len(raw)
        while pos < n:
            need = self.need
            if need > 0:
                take = min(need, n - pos)
                body += raw[pos : pos + take]
                pos += take
                self.need = need - take or -2
            elif need == -2:
                if n - pos < 2:
                    break
                pos += 2
                self.need = -1
                self._events(now)
                self.chunks += 1
            elif need == -1:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(raw[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if size == 0:
                    assert self.transport is not None
                    self.transport.close()
                    break
                self.need = size
            else:
                body += raw[pos:]
                pos = n
                self._events(now)
                self.chunks += 1
        del raw[:pos]

    def _events(self, now: float) -> None:
        body = self.body
        # The opening of a response carries the replay of what was missed.
        replay = self.chunks == 0
        start = 0
        while True:
            end = body.find(b"\n\n", start)
            if end < 0:
                break
            if body.startswith(b"id: ", start):
                nl = body.find(b"\n", start)
                self.last_id = bytes(body[start + 4 : nl])
                if body.startswith(b"event: alarm\n", nl + 1):
                    self.client.alarm(self, body, nl, end, now, replay)
            elif body.startswith(b"retry: ", start):
                self.retry = int(body[start + 7 : end]) / 1000
            elif body.startswith(b": closed: ", start):
                self.client.closes[bytes(body[start + 10 : end]).decode()] += 1
            start = end + 2
        del body[:start]


class Client:
    def __init__(self, config: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.t0: float = config["t0"]
        self.tagmark = f" {config['tag']}#".encode()
        self.streams: list[Stream] = []
        for port, path, headers, lang in config["streams"]:
            head = (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{headers}"
            ).encode()
            marker = b'"title":"' + TITLES[lang].encode() + self.tagmark
            self.streams.append(Stream(self, port, head, marker))
        self.concurrency: int = config["concurrency"]
        self.churn: float = config["churn"]
        self.rng = random.Random()
        self.drops = 0
        self.live: dict[int, list[int]] = defaultdict(list)
        self.replayed: dict[int, list[int]] = defaultdict(list)
        self.open = 0
        self.connects = 0
        self.reconnects = 0
        self.duplicates = [0, 0]  # arrived live, in a replay
        self.wrong_language = 0
        self.foreign = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.closes: dict[str, int] = defaultdict(int)
        self.stopping = False
        self.ready: float | None = None
        self.lag = 0.0  # the loop's worst lateness since the last report

    def opened(self, stream: Stream) -> None:
        self.open += 1
        self.connects += 1
        if self.churn:
            # Exponential: a steady rate of drops over all streams, no waves.
            delay = self.rng.expovariate(1 / self.churn)
            self.loop.call_later(delay, self._drop, stream, stream.transport)

    def _drop(self, stream: Stream, transport: asyncio.Transport | None) -> None:
        if stream.transport is transport and transport is not None and not self.stopping:
            self.drops += 1
            transport.abort()

    def lost(self, stream: Stream, was_open: bool) -> None:
        if was_open:
            self.open -= 1
        if self.stopping:
            return
        self.reconnects += 1
        # EventSource waits the server's retry: delay, whatever the reason.
        self.loop.call_later(stream.retry, self._reconnect, stream)

    def _reconnect(self, stream: Stream) -> None:
        if not self.stopping:
            self.loop.create_task(self.connect(stream))

    async def connect(self, stream: Stream) -> None:
        try:
            await self.loop.create_connection(lambda: stream, HOST, stream.port)
        except OSError as exc:
            self.errors[type(exc).__name__] += 1
            stream._settle(False)
            self.lost(stream, False)

    def alarm(
        self, stream: Stream, body: bytearray, start: int, end: int, now: float, replay: bool
    ) -> None:
        at = body.find(stream.marker, start, end)
        if at >= 0:
            at += len(stream.marker)
        else:
            at = body.find(self.tagmark, start, end)
            if at < 0:
                self.foreign += 1  # not one of this run's alarms
                return
            at += len(self.tagmark)
            self.wrong_language += 1
        seq = int(body[at : body.find(b'"', at, end)])
        seen = stream.seen
        if seq >= len(seen):
            seen.extend(bytes(seq + 256 - len(seen)))
        if seen[seq]:
            # A copy in a reconnect's replay, or a live one after it, tells which side raced.
            self.duplicates[1 if replay else 0] += 1
            return
        seen[seq] = 1
        (self.replayed if replay else self.live)[seq].append(round((now - self.t0) * TICKS_PER_S))

    def report(self, **extra: Any) -> None:
        line = {
            "t": time.time(),
            "live": self.live,
            "replayed": self.replayed,
            "open": self.open,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "drops": self.drops,
            "duplicates": self.duplicates,
            "wrong_language": self.wrong_language,
            "foreign": self.foreign,
            "errors": self.errors,
            "closes": self.closes,
            "lag_ms": round(self.lag * 1000, 1),
            **extra,
        }
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        self.live = defaultdict(list)
        self.replayed = defaultdict(list)
        self.lag = 0.0

    async def _watch_lag(self) -> None:
        # A late wake-up here means receive times are late too: the client's
        # own share of the measured latency.
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            self.lag = max(self.lag, time.monotonic() - before - 0.05)

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)

        async def first(stream: Stream) -> None:
            async with gate:
                stream.ready = self.loop.create_future()
                await self.connect(stream)
                await stream.ready

        async def open_all() -> None:
            await asyncio.gather(*(first(s) for s in self.streams))
            self.ready = round(time.monotonic() - started, 2)

        opening = self.loop.create_task(open_all())
        watch = self.loop.create_task(self._watch_lag())
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            self.report(**({"ready": self.ready} if self.ready is not None else {}))
        opening.cancel()
        watch.cancel()
        self.stopping = True
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()
        self.report(final=True)


def client_main() -> int:
    config = json.loads(sys.stdin.readline())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = Client(config, loop)
    stop = asyncio.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()  # "stop", or EOF when the harness goes away
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    loop.run_until_complete(client.run(stop))
    return 0


# ---------------------------------------------------------------------------
# Writer process: one alarm per interval through alarms.api.send_alarm
# ---------------------------------------------------------------------------


def writer_main(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from datetime import timedelta

    from django.utils import timezone

    from alarms import api

    count = round(args.minutes * 60 / args.interval)
    start = float(sys.stdin.readline())
    for seq in range(count):
        delay = start + seq * args.interval - time.time()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        api.send_alarm(
            {
                lang: {"title": f"{TITLES[lang]} {args.tag}#{seq}", "message": MESSAGES[lang]}
                for lang in LANGS
            },
            audience="everyone",
            expires_at=timezone.now() + timedelta(seconds=args.expire) if args.expire else None,
        )
        # send_alarm returns after the commit, which delivers the NOTIFY.
        committed = time.time()
        print(json.dumps({"seq": seq, "sent": sent, "commit": committed}), flush=True)
    return 0


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[Any]
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Results:
    """What the clients and the writer reported, merged (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = 0.0  # the clients' time base
    live: dict[int, array[int]] = field(default_factory=lambda: defaultdict(lambda: array("q")))
    replayed: dict[int, array[int]] = field(default_factory=lambda: defaultdict(lambda: array("q")))
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    ready: dict[int, float] = field(default_factory=dict)
    commits: dict[int, tuple[float, float]] = field(default_factory=dict)
    lag_ms: list[float] = field(default_factory=list)  # per client per second, once open
    writer_done: threading.Event = field(default_factory=threading.Event)

    def total(self, key: str) -> int:
        return sum(int(c.get(key, 0)) for c in self.clients.values())

    def merged(self, key: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for c in self.clients.values():
            for k, v in c.get(key, {}).items():
                out[k] += v
        return dict(out)


def read_client(index: int, stream: IO[str], results: Results) -> None:
    for line in stream:
        report = json.loads(line)
        with results.lock:
            for key in ("live", "replayed"):
                target = getattr(results, key)
                for seq, ticks in report.pop(key).items():
                    target[int(seq)].extend(ticks)
            if "ready" in report:
                results.ready[index] = report["ready"]
                results.lag_ms.append(report["lag_ms"])
            results.clients[index] = report


def read_writer(stream: IO[str], results: Results) -> None:
    for line in stream:
        row = json.loads(line)
        with results.lock:
            results.commits[row["seq"]] = (row["sent"], row["commit"])
    results.writer_done.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> dict[str, float]:
    """CPU seconds, threads and RSS of one process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}
    if "VmRSS" not in status:
        return {}  # a zombie: it has ended
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "cpu": (int(fields[11]) + int(fields[12])) / tick,
        "children_cpu": (int(fields[13]) + int(fields[14])) / tick,
        "ppid": int(fields[1]),
        "threads": int(status["Threads"]),
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
    }


def machine_cpu() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_of(ppid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == ppid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def metrics(port: int, token: str) -> dict[str, float]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/alarms/metrics/", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class Database:
    """Load figures for the run's database, read over one autocommit connection."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True, application_name="soak-probe")
        self.postmaster: int | None = None
        if urlsplit(url).hostname in (None, "", "127.0.0.1", "localhost", "::1"):
            # Same machine: the backends are the postmaster's children, for CPU time.
            pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            ppid = int(proc_stat(pid).get("ppid", 0))
            with contextlib.suppress(OSError), open(f"/proc/{ppid}/cmdline", "rb") as f:
                if b"postgres" in f.read():
                    self.postmaster = ppid

    def sample(self) -> dict[str, float]:
        xacts, returned = self.conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        rows = self.conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' "
            "GROUP BY application_name"
        ).fetchall()
        out = {"xacts": float(xacts), "tup_returned": float(returned)}
        out["backends"] = float(sum(n for _name, n in rows))
        for name, n in rows:
            out[f"backends:{name}"] = float(n)
        if self.postmaster is not None:
            main = proc_stat(self.postmaster)
            cpu = main.get("cpu", 0.0) + main.get("children_cpu", 0.0)
            for pid in children_of(self.postmaster):
                cpu += proc_stat(pid).get("cpu", 0.0)
            out["cpu"] = cpu
        return out


def prepare_database(signed_in_users: int) -> list[str]:
    """Migrate, withdraw every current alarm, and return a session key per user."""
    import django

    django.setup()
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.db import connections

    from alarms import api
    from alarms.models import Alarm

    call_command("migrate", verbosity=0)
    api.withdraw(Alarm.objects.all())
    User = get_user_model()
    names = [f"soak-{i:05d}" for i in range(signed_in_users)]
    User.objects.bulk_create(
        [User(username=name, password=make_password(None)) for name in names],
        ignore_conflicts=True,
    )
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = []
    for user in User.objects.filter(username__in=names).order_by("username"):
        session = store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    connections.close_all()
    return keys


def plan_streams(
    n: int, ports: list[int], sessions: list[str], signed_in: float, tabs: int, cookie: str
) -> list[tuple[int, str, str, str]]:
    """(port, path, extra header lines, language) for each stream."""
    rng = random.Random(1)
    plan = []
    user = 0
    for i in range(n):
        lang = LANGS[(i // len(ports)) % len(LANGS)]
        headers = ""
        path = "/alarms/stream/"
        if i < n * signed_in and user // tabs < len(sessions):
            headers += f"Cookie: {cookie}={sessions[user // tabs]}\r\n"
            user += 1
        # Half ask by Accept-Language (as a browser does), half by ?lang=.
        if rng.random() < 0.5:
            headers += f"Accept-Language: {ACCEPT_LANGUAGE[lang]}\r\n"
        else:
            path += f"?lang={lang}"
        plan.append((ports[i % len(ports)], path, headers, lang))
    return plan


def percentiles(values: Any) -> tuple[float, float, float]:
    import numpy

    if len(values) == 0:
        return (math.nan, math.nan, math.nan)
    p50, p99 = numpy.percentile(values, [50, 99])
    return (float(p50), float(p99), float(numpy.max(values)))


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out waiting for {what}.")
        time.sleep(0.2)


def harness(args: argparse.Namespace) -> int:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at PostgreSQL "
            "(try: scripts/postgres .venv/bin/python bench/soak.py)"
        )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = Path(args.out or ROOT / "bench" / "results" / time.strftime("soak-%Y-%m-%d-%H%M"))
    out.mkdir(parents=True, exist_ok=True)

    token = secrets.token_hex(16)
    bench_alarms = {
        "METRICS_TOKEN": token,
        **({"MAX_LIFETIME": args.lifetime} if args.lifetime else {}),
        # One user's tabs may all land on one server.
        "MAX_STREAMS_PER_USER": max(10, args.tabs),
        **json.loads(os.environ.get("BENCH_ALARMS", "{}")),
    }
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", SECRET_KEY),
            "DJANGO_DEBUG": "0",
            "BENCH_ALARMS": json.dumps(bench_alarms),
            "PGAPPNAME": "soak-harness",
        }
    )
    n_users = math.ceil(args.streams * args.signed_in / args.tabs)
    print(f"Preparing the database and {n_users} signed-in users ...", flush=True)
    sessions = prepare_database(n_users)
    from django.conf import settings

    cookie = settings.SESSION_COOKIE_NAME

    # Children run in their own sessions: Ctrl-C stops the harness alone, which
    # then stops them in order and still reports what was measured.
    signal.signal(signal.SIGTERM, _interrupt)
    py = sys.executable
    procs: list[Proc] = []
    servers: list[Proc] = []
    clients: list[Proc] = []
    readers: list[threading.Thread] = []
    results = Results()
    tag = secrets.token_hex(3)
    samples: list[dict[str, Any]] = []
    t_writer = math.nan
    connect_s = math.nan
    phases: dict[str, float] = {"start": time.time()}
    try:
        for i in range(1, args.servers + 1):
            port = free_port()
            log = open(out / f"server-{i}.log", "w")  # noqa: SIM115 (lives as long as the server)
            popen = subprocess.Popen(
                [py, "-m", "daphne", "-b", HOST, "-p", str(port), "config.asgi:application"],
                cwd=ROOT,
                env={**os.environ, "PGAPPNAME": f"soak-server-{i}"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            servers.append(Proc(f"server-{i}", popen, port))
        procs += servers
        for s in servers:
            wait_until(lambda s=s: metrics(s.port, token), 60, f"{s.name} to answer")

        writer = Proc(
            "writer",
            subprocess.Popen(
                [
                    *(py, __file__, "--role", "writer", "--tag", tag),
                    *("--minutes", str(args.minutes), "--interval", str(args.interval)),
                    *("--expire", str(args.expire)),
                ],
                cwd=ROOT,
                env={**os.environ, "PGAPPNAME": "soak-writer"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            ),
        )
        procs.append(writer)
        readers.append(
            threading.Thread(target=read_writer, args=(writer.popen.stdout, results), daemon=True)
        )

        plan = plan_streams(
            args.streams, [s.port for s in servers], sessions, args.signed_in, args.tabs, cookie
        )
        t0 = results.t0 = time.time()
        for c in range(args.clients):
            popen = subprocess.Popen(
                [py, __file__, "--role", "client"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            assert popen.stdin is not None
            config = {
                "t0": t0,
                "tag": tag,
                "concurrency": args.concurrency,
                "churn": args.churn,
                "streams": plan[c :: args.clients],
            }
            popen.stdin.write(json.dumps(config) + "\n")
            popen.stdin.flush()
            clients.append(Proc(f"client-{c + 1}", popen))
            readers.append(
                threading.Thread(target=read_client, args=(c, popen.stdout, results), daemon=True)
            )
        procs += clients
        for thread in readers:
            thread.start()

        db = Database(url)
        sampler = Sampler(servers, clients, writer, db, token, results)
        print(f"Opening {args.streams} streams ...", flush=True)
        next_sample = time.time()
        while len(results.ready) < len(clients):
            if time.time() >= next_sample:
                samples.append(sampler.sample(math.nan))
                next_sample += args.sample
            if any(c.popen.poll() is not None for c in clients):
                raise SystemExit("A client process ended early.")
            if time.time() - t0 > args.open_timeout:
                raise SystemExit(f"The streams did not open within {args.open_timeout} s.")
            time.sleep(0.2)
        connect_s = max(results.ready.values())
        print(f"{results.total('open')} streams open in {connect_s:.1f} s.", flush=True)

        # Alarms start on a round second; samples follow every --sample seconds from there.
        t_writer = math.ceil(time.time()) + 2.0
        assert writer.popen.stdin is not None
        writer.popen.stdin.write(f"{t_writer}\n")
        writer.popen.stdin.flush()
        for row in samples:
            row["t_s"] = round(row["wall"] - t_writer, 1)
        end = t_writer + args.minutes * 60
        k = 0
        try:
            while (at := t_writer + k * args.sample) <= end + args.drain:
                time.sleep(max(0.0, at - time.time()))
                row = sampler.sample(at - t_writer)
                samples.append(row)
                print(progress(row, results, args.streams), flush=True)
                if writer.popen.poll() not in (None, 0):
                    raise SystemExit("The writer failed (see above).")
                if any(c.popen.poll() is not None for c in clients):
                    raise SystemExit("A client process ended early (see above).")
                k += 1
                if at >= end and results.writer_done.is_set() and all_delivered(results, args):
                    break
            results.writer_done.wait(30)
        except KeyboardInterrupt:
            print("Interrupted: stopping, then reporting what was measured.", flush=True)
            args.minutes = (time.time() - t_writer) / 60
            args.interrupted = True
    finally:
        for c in clients:
            if c.popen.poll() is None and c.popen.stdin is not None:
                with contextlib.suppress(OSError):
                    c.popen.stdin.write("stop\n")
                    c.popen.stdin.flush()
        for c in clients:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.popen.wait(30)
        for p in procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.popen.wait(20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        for thread in readers:
            thread.join(10)

    summary = report(args, out, results, samples, servers, t_writer, phases, connect_s)
    print("\n" + markdown(summary))
    from bench.plot_soak import plot

    print(f"\nWrote samples.csv, alarms.csv, summary.json and {plot(out).name} to {out}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Sampler:
    def __init__(
        self,
        servers: list[Proc],
        clients: list[Proc],
        writer: Proc,
        db: Database,
        token: str,
        results: Results,
    ) -> None:
        self.servers, self.clients, self.writer = servers, clients, writer
        self.db, self.token, self.results = db, token, results
        self.last: dict[str, float] = {}

    def _rate(self, key: str, value: float | None, now: float, scale: float = 1.0) -> Any:
        """Per second since the last sample (times ``scale``), or "" on the first."""
        if value is None:
            return ""
        before, before_at = self.last.get(key), self.last.get("@" + key)
        self.last[key], self.last["@" + key] = value, now
        if before is None or before_at is None or now <= before_at:
            return ""
        return round((value - before) / (now - before_at) * scale, 2)

    def sample(self, t: float) -> dict[str, Any]:
        # The cheap, time-exact readings first; the servers' metrics (HTTP to a
        # busy event loop, which may take seconds) last and side by side.
        now = time.time()
        row: dict[str, Any] = {"t_s": round(t, 1), "wall": round(now, 3)}
        servers = {s.name: proc_stat(s.pid) for s in self.servers}
        clients = [proc_stat(c.pid) for c in self.clients]
        writer = proc_stat(self.writer.pid)
        harness = proc_stat(os.getpid())
        machine = machine_cpu()
        with self.results.lock:
            row["alarms_sent"] = len(self.results.commits)
            row["client_open"] = self.results.total("open")
            row["reconnects"] = self.results.total("reconnects")
        db = self.db.sample()
        with ThreadPoolExecutor(len(self.servers)) as pool:
            answers = list(pool.map(self._metrics, self.servers))
        for s, m in zip(self.servers, answers, strict=True):
            st = servers[s.name]
            row[f"{s.name}_rss_mib"] = round(st.get("rss_mib", math.nan), 1)
            row[f"{s.name}_cpu_s"] = round(st.get("cpu", math.nan), 2)
            row[f"{s.name}_cpu_pct"] = self._rate(s.name, st.get("cpu"), now, 100)
            row[f"{s.name}_threads"] = st.get("threads", "")
            row[f"{s.name}_streams"] = int(m.get("alarms_streams_open", -1))
            row[f"{s.name}_connects"] = int(m.get("alarms_connects_total", -1))
            # Milliseconds per second its loop spent queueing changes to streams.
            fan_out = m.get("alarms_fan_out_seconds_total")
            row[f"{s.name}_fan_out_ms_per_s"] = self._rate(f"{s.name}_fan_out", fan_out, now, 1000)
            row[f"{s.name}_db_backends"] = int(db.get(f"backends:soak-{s.name}", 0))
        row["clients_rss_mib"] = round(sum(c.get("rss_mib", 0.0) for c in clients), 1)
        cpu = sum(c.get("cpu", 0.0) for c in clients)
        row["clients_cpu_pct"] = self._rate("clients", cpu, now, 100)
        row["writer_cpu_pct"] = self._rate("writer", writer.get("cpu"), now, 100)
        row["pg_cpu_pct"] = self._rate("pg", db.get("cpu"), now, 100)
        row["db_xact_per_s"] = self._rate("xacts", db["xacts"], now)
        row["db_tup_returned_per_s"] = self._rate("tup", db["tup_returned"], now)
        row["db_backends"] = int(db["backends"])
        row["reconnects_per_s"] = self._rate("reconnects", row["reconnects"], now)
        # What else ran on the machine: a soak beside other work measures both.
        ours = sum(st.get("cpu", 0.0) for st in servers.values()) + cpu
        ours += writer.get("cpu", 0.0) + harness.get("cpu", 0.0) + db.get("cpu", 0.0)
        row["machine_cpu_pct"] = self._rate("machine", machine, now, 100)
        row["other_cpu_pct"] = self._rate("other", machine - ours, now, 100)
        row["load1"] = round(os.getloadavg()[0], 2)
        return row

    def _metrics(self, server: Proc) -> dict[str, float]:
        try:
            return metrics(server.port, self.token)
        except OSError:
            return {}


def all_delivered(results: Results, args: argparse.Namespace) -> bool:
    with results.lock:
        got = sum(map(len, results.live.values())) + sum(map(len, results.replayed.values()))
        return got >= len(results.commits) * args.streams


def progress(row: dict[str, Any], results: Results, n: int) -> str:
    servers = sorted({k.split("_")[0] for k in row if k.startswith("server-")})
    with results.lock:
        sent = len(results.commits)
        got = sum(map(len, results.live.values())) + sum(map(len, results.replayed.values()))
    rss = " ".join(f"{row[f'{s}_rss_mib']:.0f}" for s in servers)
    cpu = " ".join(f"{row[f'{s}_cpu_pct'] or 0:.0f}%" for s in servers)
    return (
        f"t={row['t_s']:>6.0f}s open={row['client_open']}/{n} alarms={sent} "
        f"delivered={got}/{sent * n} reconnects={row['reconnects']} RSS MiB={rss} "
        f"CPU={cpu} clients={row['clients_cpu_pct'] or 0:.0f}% pg={row['pg_cpu_pct'] or 0:.0f}% "
        f"xact/s={row['db_xact_per_s'] or 0:.1f}"
    )


FAN_OUT = re.compile(r"rows read in ([\d.]+) ms, queued to (\d+) streams in ([\d.]+) ms")


def report(
    args: argparse.Namespace,
    out: Path,
    results: Results,
    samples: list[dict[str, Any]],
    servers: list[Proc],
    t_writer: float,
    phases: dict[str, float],
    connect_s: float,
) -> dict[str, Any]:
    import numpy

    base = results.t0
    n = args.streams
    window = float(args.sample)
    per_window: dict[int, list[Any]] = defaultdict(list)
    all_live = []
    all_replayed = []
    alarm_rows = []
    delivered_total = 0
    for seq in sorted(results.commits):
        sent, commit = results.commits[seq]
        offset = (commit - base) * 1000
        live = numpy.asarray(results.live.get(seq, array("q")), dtype=float) / 10 - offset
        replayed = numpy.asarray(results.replayed.get(seq, array("q")), dtype=float) / 10 - offset
        delivered = len(live) + len(replayed)
        delivered_total += delivered
        p50, p99, mx = percentiles(live)
        alarm_rows.append(
            {
                "seq": seq,
                "sent_s": round(sent - t_writer, 3),
                "commit_ms": round((commit - sent) * 1000, 1),
                "delivered": delivered,
                "expected": n,
                "replayed": len(replayed),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
                "max_ms": round(mx, 1),
            }
        )
        per_window[int((commit - t_writer) // window)].append(live)
        all_live.append(live)
        all_replayed.append(replayed)
    windows = {}
    for w, parts in per_window.items():
        values = numpy.concatenate(parts)
        windows[w] = (*percentiles(values), len(values))
    for row in samples:
        # A sample at t covers the alarms committed in the window before it.
        w = round(row["t_s"] / window) - 1 if not math.isnan(row["t_s"]) else -1
        p50, p99, mx, count = windows.get(w, (math.nan, math.nan, math.nan, 0))
        row.update(
            lat_n=count,
            lat_p50_ms=round(p50, 1) if count else "",
            lat_p99_ms=round(p99, 1) if count else "",
            lat_max_ms=round(mx, 1) if count else "",
        )
    write_csv(out / "samples.csv", samples)
    write_csv(out / "alarms.csv", alarm_rows)

    live = numpy.concatenate(all_live) if all_live else numpy.array([])
    replayed = numpy.concatenate(all_replayed) if all_replayed else numpy.array([])
    sent = len(results.commits)
    run = [s for s in samples if not math.isnan(s["t_s"]) and 0 <= s["t_s"] <= args.minutes * 60]
    warm = [s for s in run if s["t_s"] >= args.warmup] or run
    first, last = (warm[0], warm[-1]) if warm else ({}, {})
    elapsed_min = (last.get("wall", 0) - first.get("wall", 0)) / 60 or math.nan
    per_server = {}
    for s in servers:
        start, end = (
            first.get(f"{s.name}_rss_mib", math.nan),
            last.get(f"{s.name}_rss_mib", math.nan),
        )
        ts = [r["t_s"] for r in warm]
        rss = [r[f"{s.name}_rss_mib"] for r in warm]
        slope = numpy.polyfit(ts, rss, 1)[0] * 3600 if len(warm) >= 3 else math.nan
        cpu_s = last.get(f"{s.name}_cpu_s", math.nan) - first.get(f"{s.name}_cpu_s", math.nan)
        reads, fan_outs = [], []
        with contextlib.suppress(OSError):
            for m in FAN_OUT.finditer((out / f"{s.name}.log").read_text()):
                reads.append(float(m.group(1)))
                fan_outs.append(float(m.group(3)))
        per_server[s.name] = {
            "rss_start_mib": start,
            "rss_end_mib": end,
            "rss_growth_pct": round((end - start) / start * 100, 2),
            "rss_slope_mib_per_h": round(float(slope), 2),
            "cpu_s_per_min": round(cpu_s / elapsed_min, 2),
            "threads_max": max((int(r[f"{s.name}_threads"] or 0) for r in run), default=0),
            "db_backends_max": max((r[f"{s.name}_db_backends"] for r in run), default=0),
            "journal_read_ms_p50_max": [round(v, 1) for v in percentiles(reads)[::2]],
            "fan_out_ms_p50_p99_max": [round(v, 1) for v in percentiles(fan_outs)],
        }

    def mean(key: str) -> float:
        values = [r[key] for r in warm if r.get(key) != ""]
        return round(sum(values) / len(values), 2) if values else math.nan

    worst = max(
        ((w, v) for w, v in windows.items() if v[3]),
        key=lambda kv: kv[1][1],
        default=(0, (math.nan,) * 4),
    )
    with results.lock:
        summary = {
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(phases["start"])),
            "streams": n,
            "servers": len(servers),
            "clients": args.clients,
            "signed_in": args.signed_in,
            "tabs_per_user": args.tabs,
            "minutes": args.minutes,
            "interrupted": args.interrupted,
            "interval_s": args.interval,
            "expire_s": args.expire,
            "lifetime_s": args.lifetime or None,
            "churn_s": args.churn or None,
            "warmup_s": args.warmup,
            "connect_s": connect_s,
            "alarms_sent": sent,
            "delivered": delivered_total,
            "expected": sent * n,
            "delivered_pct": round(delivered_total / (sent * n) * 100, 4) if sent else math.nan,
            "min_delivered_per_alarm": min((r["delivered"] for r in alarm_rows), default=0),
            "replayed": len(replayed),
            "wrong_language": results.total("wrong_language"),
            "duplicates_live": sum(c["duplicates"][0] for c in results.clients.values()),
            "duplicates_replayed": sum(c["duplicates"][1] for c in results.clients.values()),
            "foreign": results.total("foreign"),
            "latency_ms_p50_p99_max": [round(v, 1) for v in percentiles(live)],
            "replayed_latency_ms_p50_max": [round(v, 1) for v in percentiles(replayed)[::2]],
            "worst_window": {"t_s": (worst[0] + 1) * window, "p99_ms": round(worst[1][1], 1)},
            "reconnects": results.total("reconnects"),
            "drops": results.total("drops"),
            "server_closes": results.merged("closes"),
            "client_errors": results.merged("errors"),
            "per_server": per_server,
            "clients_cpu_pct": mean("clients_cpu_pct"),
            "client_lag_ms_p50_p99_max": [round(v, 1) for v in percentiles(results.lag_ms)],
            "writer_cpu_pct": mean("writer_cpu_pct"),
            "pg_cpu_pct": mean("pg_cpu_pct"),
            "machine_cpu_pct": mean("machine_cpu_pct"),
            "other_cpu_pct": mean("other_cpu_pct"),
            "cores": os.cpu_count(),
            "db_xact_per_s": mean("db_xact_per_s"),
            "db_tup_returned_per_s": mean("db_tup_returned_per_s"),
            "db_backends_max": max((r["db_backends"] for r in run), default=0),
        }
    (out / "summary.json").write_text(json.dumps(_no_nan(summary), indent=2) + "\n")
    return summary


def _no_nan(value: Any) -> Any:
    """NaN (nothing measured) as null, which JSON has."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )


def markdown(s: dict[str, Any]) -> str:
    def ms(values: list[float]) -> str:
        return " / ".join(num(v, ",.0f") for v in values)

    def num(value: float, spec: str) -> str:
        return "-" if math.isnan(value) else format(value, spec)

    lines = [
        f"## Soak, {s['date']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| streams | {s['streams']:,} over {s['servers']} daphne processes, from {s['clients']} "
        f"client process{'es' if s['clients'] > 1 else ''}; {s['signed_in']:.0%} signed in "
        f"({s['tabs_per_user']} per user); "
        "en / ko / ja a third each |",
        f"| duration | {s['minutes']:.1f} min of alarms"
        + (" (interrupted)" if s["interrupted"] else "")
        + f", after {s['connect_s']:.1f} s to open "
        "every stream; "
        + (f"a connection drops every {s['churn_s']:g} s on average" if s["churn_s"] else "")
        + ("" if s["churn_s"] else "no drops")
        + (f", MAX_LIFETIME {s['lifetime_s']} s" if s["lifetime_s"] else "")
        + " |",
        f"| alarms sent | {s['alarms_sent']:,} (one per {s['interval_s']:g} s, for everyone, "
        + (f"expire after {s['expire_s']} s" if s["expire_s"] else "never expire")
        + ") |",
        f"| delivered / expected | {s['delivered']:,} / {s['expected']:,} "
        f"({s['delivered_pct']:.3f}%); least for one alarm: {s['min_delivered_per_alarm']:,} |",
        f"| wrong language / duplicates | {s['wrong_language']:,} / "
        f"{s['duplicates_live'] + s['duplicates_replayed']:,} (second copy live: "
        f"{s['duplicates_live']:,}, in a replay: {s['duplicates_replayed']:,}) |",
        f"| latency p50 / p99 / max (live) | {ms(s['latency_ms_p50_p99_max'])} ms |",
        f"| worst 10 s window p99 | {s['worst_window']['p99_ms']:,.0f} ms "
        f"(at {s['worst_window']['t_s']:.0f} s) |",
        f"| replayed on reconnect | {s['replayed']:,} deliveries, p50 / max "
        f"{ms(s['replayed_latency_ms_p50_max'])} ms |",
        f"| reconnects | {s['reconnects']:,} (dropped by the clients {s['drops']:,}; "
        "server closes: "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(s["server_closes"].items())) or "none")
        + "; client errors: "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(s["client_errors"].items())) or "none")
        + ") |",
    ]
    for name, p in s["per_server"].items():
        lines += [
            f"| {name} RSS after warm-up → end | {p['rss_start_mib']:.1f} → "
            f"{p['rss_end_mib']:.1f} MiB ({num(p['rss_growth_pct'], '+.1f')}%; trend "
            f"{num(p['rss_slope_mib_per_h'], '+.1f')} MiB/h) |",
            f"| {name} CPU, threads, DB connections | {num(p['cpu_s_per_min'], '.1f')} s/min, "
            f"{p['threads_max']} threads, {p['db_backends_max']} connections |",
            f"| {name} journal read p50 / max, fan-out p50 / p99 / max | "
            f"{ms(p['journal_read_ms_p50_max'])} ms, {ms(p['fan_out_ms_p50_p99_max'])} ms |",
        ]
    lines += [
        f"| PostgreSQL | {s['db_xact_per_s']:.1f} xact/s (the writer's included), "
        f"{s['db_tup_returned_per_s']:,.0f} tuples returned/s, {s['db_backends_max']} backends "
        f"at most, {s['pg_cpu_pct']:.1f}% CPU |",
        f"| load clients: CPU, loop lag p50 / p99 / max | {s['clients_cpu_pct']:.1f}%, "
        f"{ms(s['client_lag_ms_p50_p99_max'])} ms |",
        f"| writer CPU | {s['writer_cpu_pct']:.1f}% |",
        f"| the machine ({s['cores']} cores) | {s['machine_cpu_pct']:.0f}% of a core busy, of "
        f"which {s['other_cpu_pct']:.0f}% outside this benchmark |",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=30, help="of alarms (default 30)")
    parser.add_argument("--out", type=Path, help="default bench/results/soak-DATE-TIME")
    parser.add_argument("--servers", type=int, default=2, help="daphne processes (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between alarms")
    parser.add_argument(
        "--expire", type=int, default=300, help="seconds until an alarm expires (0: never)"
    )
    parser.add_argument(
        "--lifetime", type=int, default=0, help="the servers' MAX_LIFETIME (default: the app's)"
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=600,
        help="mean seconds between a stream's connection drops (default 600; 0: none)",
    )
    parser.add_argument("--signed-in", type=float, default=0.8, help="share of streams")
    parser.add_argument("--tabs", type=int, default=2, help="streams per signed-in user")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before RSS baseline")
    parser.add_argument("--sample", type=int, default=10, help="seconds between samples")
    parser.add_argument(
        "--drain",
        type=float,
        default=60,
        help="seconds after the last alarm to wait for stragglers, at most (default 60)",
    )
    parser.add_argument("--concurrency", type=int, default=250, help="connects in flight")
    parser.add_argument("--open-timeout", type=float, default=600)
    parser.add_argument("--plot-only", type=Path, metavar="DIR", help="redraw DIR/soak.png")
    parser.add_argument("--role", choices=["client", "writer"], help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    args.interrupted = False
    sys.path.insert(0, str(ROOT))
    if args.role == "client":
        return client_main()
    if args.role == "writer":
        return writer_main(args)
    if args.plot_only:
        from bench.plot_soak import plot

        print(plot(args.plot_only))
        return 0
    return harness(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Journal writes without a global lock: write rate and wake-up latency beside 0 to 256 listeners.

    scripts/postgres .venv/bin/python bench/journal.py
    scripts/postgres .venv/bin/python bench/journal.py --writers 1 4 16 \\
        --listeners 0 1 16 64 256 --seconds 2 --reps 3
    scripts/postgres .venv/bin/python bench/journal.py --modes journal redis plain

Against a throwaway database (scripts/postgres runs PostgreSQL with fsync and
synchronous_commit off, so a COMMIT waits for no disk), in one run:

1. Journal writes per second with 1, 4 and 16 writers (one process and one
   connection each, through Django as the app writes), one transaction per
   write, of three kinds taking turns within each repetition:

   - ``journal``: ``alarms.journal.record`` as it is: no lock; one statement
     gives the transaction its id and queues the ``NOTIFY``, one inserts;
   - ``locked``: the journal's write before, kept here as :func:`locked_write`:
     ``pg_advisory_xact_lock``, the insert, ``pg_notify``, so that ids followed
     commit order;
   - ``plain``: the insert and ``pg_notify``, nothing else: what any write that
     wakes the brokers costs.

   Each beside L = 0, 1, 16, 64, 256 connections listening on the channel the
   writes notify. Like brokers, they drain every notification (with libpq's
   own calls, up to 32 connections per process: the cheapest client, since
   here it shares the database's two cores). After each run the bench waits
   until every listener has received every notification, so that no backlog
   spills into the next.
2. At each L >= 1, the wake-up latency: one writer commits ``journal.record``
   writes 5 ms apart; from just before each COMMIT to its arrival at each
   listening connection, p50 / p99 over every (connection, write) pair.

Optional modes for comparing ways of writing the journal (``--modes``):
``xid3`` (``pg_current_xact_id()``, the insert and ``pg_notify`` as three
statements) and ``single`` (one INSERT whose id expression takes the
transaction id and notifies before it draws from the sequence).

And ``redis``, the Redis wake-up transport (``alarms.broker.redis``):
``alarms.journal.record`` with ``ALARMS["WAKE_URL"]`` set, so the transaction
takes its id and inserts without a ``NOTIFY``, and after the commit one
``PUBLISH`` on the Redis channel wakes the brokers. With it, the bench starts a
redis-server of its own (``--redis-server``, else the one on PATH) on a free
port of 127.0.0.1, saving nothing to disk, and stops it at the end. Each of
the L listeners then stands for a ``RedisBroker``: beside its listening
connection it holds a Redis subscription to the channel (a plain socket that
sends ``SUBSCRIBE`` and counts the messages, in the same processes and
``select`` as the PostgreSQL ones). The ``redis`` writes reach only the
subscriptions, the others only the listening connections; a ``PUBLISH`` that
fails falls back to a ``NOTIFY`` after the commit, as in the app, and is
counted (``fallbacks`` in the results). The wake-up latency is measured for
``redis`` too, from just before the COMMIT (the ``PUBLISH`` follows it) to the
message's arrival at each subscription; the tables add ``redis / journal`` and
``redis / plain``, taken within each repetition like the others.

The cluster needs a connection per listener and writer: when its
``max_connections`` is too low, the bench restarts the cluster of
scripts/postgres with a higher one (from the ALARMS_TEST_PG_* it exports).
The writes notify a channel of their own and their journal rows are deleted at
the end. One JSON line is appended to bench/results/journal.jsonl, and the
tables are printed in Markdown.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import pwd
import selectors
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHANNEL = "bench_journal"
PER_PROCESS = 32
MODES = ("journal", "locked", "plain")
EXTRA_MODES = ("redis", "xid3", "single")
# The modes that wake through Redis; every other mode NOTIFYs.
REDIS_MODES = ("redis",)

ctx = mp.get_context("fork")


# -- the writes ------------------------------------------------------------------------


def locked_write(alarm_id: int) -> None:
    """The journal's write before this change (``alarms.journal._write``): the advisory
    lock every writer took so that ids followed commit order, held to commit."""
    from django.db import connection, transaction

    from alarms import journal
    from alarms.broker import wake_local
    from alarms.models import AlarmChange

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [journal.ADVISORY_LOCK_KEY])
        AlarmChange.objects.bulk_create([AlarmChange(alarm_id=alarm_id, kind="alarm")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    transaction.on_commit(wake_local)


def plain_write(alarm_id: int) -> None:
    """The same row and NOTIFY, and nothing else."""
    from django.db import connection, transaction

    from alarms.broker import wake_local
    from alarms.models import AlarmChange

    with transaction.atomic():
        AlarmChange.objects.bulk_create([AlarmChange(alarm_id=alarm_id, kind="alarm")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    transaction.on_commit(wake_local)


def xid3_write(alarm_id: int) -> None:
    """The transaction id, the insert and the NOTIFY as three statements."""
    from django.db import connection, transaction

    from alarms.broker import wake_local
    from alarms.models import AlarmChange

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")
        AlarmChange.objects.bulk_create([AlarmChange(alarm_id=alarm_id, kind="alarm")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
    transaction.on_commit(wake_local)


# CASE evaluates its conditions in order before its result: the transaction has
# its id, and the NOTIFY is queued, before nextval() draws the row's id.
SINGLE_ID = (
    "CASE WHEN pg_current_xact_id() IS NULL OR pg_notify(%s, '') IS NULL THEN NULL "
    "ELSE nextval(pg_get_serial_sequence('alarms_alarmchange', 'id')) END"
)


def single_write(alarm_id: int) -> None:
    """One statement: the id expression takes the transaction id and notifies first."""
    from django.db import transaction
    from django.db.models.expressions import RawSQL

    from alarms.broker import wake_local
    from alarms.models import AlarmChange

    with transaction.atomic():
        row = AlarmChange(id=RawSQL(SINGLE_ID, [CHANNEL]), alarm_id=alarm_id, kind="alarm")
        AlarmChange.objects.bulk_create([row])
    transaction.on_commit(wake_local)


def journal_write(alarm_id: int) -> None:
    from alarms import journal

    journal.record([alarm_id], using="default")


WRITES = {
    "journal": journal_write,
    "locked": locked_write,
    "plain": plain_write,
    "redis": journal_write,  # the same write, woken by Redis: see wake_by
    "xid3": xid3_write,
    "single": single_write,
}

_wake_override: Any = None


def wake_by(url: str | None) -> None:
    """From now on this process's journal writes wake the brokers by ``PUBLISH`` on
    the Redis server at ``url``, or by ``NOTIFY`` (None): ``ALARMS["WAKE_URL"]``."""
    global _wake_override
    from django.conf import settings
    from django.test import override_settings

    if _wake_override is not None:
        _wake_override.disable()
        _wake_override = None
    if url:
        _wake_override = override_settings(ALARMS={**settings.ALARMS, "WAKE_URL": url})
        _wake_override.enable()


_fallbacks = [0]


def count_fallbacks() -> None:
    """Count, in ``_fallbacks``, the PUBLISHes that failed (or were skipped while
    Redis was taken for down): each of those writes woke the brokers by NOTIFY."""
    from alarms.broker import redis as wake

    publish = wake.publish

    def counted(url: str, channel: str) -> bool:
        published = publish(url, channel)
        if not published:
            _fallbacks[0] += 1
        return published

    wake.publish = counted


def writer(orders: Any, barrier: Any, out: Any, url: str | None) -> None:
    """One process, one connection: runs each (mode, seconds) it is given, in step,
    and reports its writes and the PUBLISHes of theirs that fell back to NOTIFY."""
    from django.db import connections

    connections.close_all()  # the parent's, inherited by fork: never used here
    WRITES["journal"](0)
    while (order := orders.get()) is not None:
        mode, seconds = order
        wake_by(url if mode in REDIS_MODES else None)
        write = WRITES[mode]
        fell_back = _fallbacks[0]
        write(0)
        barrier.wait()
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            write(done % 1000 + 1)
            done += 1
        out.put((done, _fallbacks[0] - fell_back))
    connections.close_all()


class Writers:
    """``count`` writer processes, kept for the whole run."""

    def __init__(self, count: int, url: str | None) -> None:
        self.count = count
        self.barrier, self.out = ctx.Barrier(count), ctx.Queue()
        self.orders = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=writer, args=(orders, self.barrier, self.out, url), daemon=True)
            for orders in self.orders
        ]
        for p in self.procs:
            p.start()

    def close(self) -> None:
        for orders in self.orders:
            orders.put(None)
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()

    def rate(self, mode: str, seconds: float) -> tuple[float, int, int]:
        """Commits per second of all writers together, how many commits, and how many
        of them woke by NOTIFY because their PUBLISH failed."""
        for orders in self.orders:
            orders.put((mode, seconds))
        reports = [self.out.get(timeout=seconds + 120) for _ in range(self.count)]
        done = sum(d for d, _ in reports)
        # and the warm-up write each
        return done / seconds, done + self.count, sum(f for _, f in reports)


# -- the listeners ---------------------------------------------------------------------

# What a subscription receives for each PUBLISH of an empty wake-up (RESP2), and
# for its SUBSCRIBE.
MESSAGE = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$0\r\n\r\n" % (len(CHANNEL), CHANNEL.encode())
SUBSCRIBED = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(CHANNEL), CHANNEL.encode())


def subscribe(address: tuple[str, int]) -> socket.socket:
    """A Redis connection subscribed to ``CHANNEL``: the least a client can do."""
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL.encode()))
    reply = b""
    while len(reply) < len(SUBSCRIBED):
        chunk = sock.recv(len(SUBSCRIBED) - len(reply))
        if not chunk:
            raise RuntimeError("Redis closed a connection before it subscribed")
        reply += chunk
    if reply != SUBSCRIBED:
        raise RuntimeError(f"unexpected answer to SUBSCRIBE: {reply!r}")
    sock.settimeout(None)
    return sock


def listener(
    url: str,
    redis_address: tuple[str, int] | None,
    first: int,
    count: int,
    received: Any,
    received_redis: Any,
    timed: Any,
    control: Any,
) -> None:
    """``count`` listening connections in one process; each notification counted in
    ``received[first + i]``, and its arrival kept while ``timed`` is set. With a
    Redis address, as many subscriptions beside them, counted in ``received_redis``.

    Read with libpq's own calls (and ``recv`` for Redis), one ``select`` over every
    socket: the cheapest client there is, so that the listeners' own CPU, on the
    database's machine here, takes as little as it can from what is measured."""
    conns = [psycopg.connect(url, autocommit=True) for _ in range(count)]
    for conn in conns:
        conn.execute(f"LISTEN {CHANNEL}")
    subs = [subscribe(redis_address) for _ in range(count)] if redis_address else []
    pending = [b""] * len(subs)  # the start of a message not yet whole
    arrivals: dict[str, list[list[float]]] = {}

    def clear() -> None:
        arrivals["pg"] = [[] for _ in range(count)]
        arrivals["redis"] = [[] for _ in range(len(subs))]

    clear()
    selector = selectors.DefaultSelector()
    for i, conn in enumerate(conns):
        selector.register(conn.pgconn.socket, selectors.EVENT_READ, ("pg", i))
    for i, sock in enumerate(subs):
        selector.register(sock, selectors.EVENT_READ, ("redis", i))
    selector.register(control, selectors.EVENT_READ, None)
    control.send(first)
    size = len(MESSAGE)
    while True:
        for key, _events in selector.select():
            if key.data is None:
                command = control.recv()
                if command is None:
                    for conn in conns:
                        conn.close()
                    for sock in subs:
                        sock.close()
                    return
                control.send(arrivals.copy())
                clear()
                continue
            kind, i = key.data
            if kind == "redis":
                data = subs[i].recv(65536)
                if not data:
                    raise RuntimeError("Redis closed a subscription")
                data = pending[i] + data
                whole = len(data) // size
                if data.count(MESSAGE, 0, whole * size) != whole:
                    raise RuntimeError(f"unexpected message on the subscription: {data[:200]!r}")
                pending[i] = data[whole * size :]
                if whole:
                    if timed.value:
                        arrivals["redis"][i] += [time.monotonic()] * whole
                    received_redis[first + i] += whole
                continue
            pgconn = conns[i].pgconn
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                if timed.value:
                    arrivals["pg"][i].append(time.monotonic())
                received[first + i] += 1


class Listeners:
    """``count`` listening connections, ``PER_PROCESS`` to a process; with a Redis
    address, each with a subscription beside it, as a ``RedisBroker`` has."""

    def __init__(self, url: str, redis_address: tuple[str, int] | None, count: int) -> None:
        self.count = count
        self.received = {
            "pg": ctx.Array("q", max(count, 1), lock=False),
            "redis": ctx.Array("q", max(count, 1), lock=False),
        }
        self.timed = ctx.Value("b", 0, lock=False)
        self.procs = []
        self.controls = []
        for first in range(0, count, PER_PROCESS):
            mine, theirs = ctx.Pipe()
            n = min(PER_PROCESS, count - first)
            args = (url, redis_address, first, n, *self.received.values(), self.timed, theirs)
            self.procs.append(ctx.Process(target=listener, args=args, daemon=True))
            self.controls.append(mine)
        for p in self.procs:
            p.start()
        for control in self.controls:
            if not control.poll(120):
                raise RuntimeError("a listener process did not start")
            control.recv()

    def drained(self, expected: dict[str, int], within: float = 300) -> None:
        """Wait until every connection has received what ``expected`` says of its
        kind (``pg``: notifications, ``redis``: messages)."""
        deadline = time.monotonic() + within
        for kind, count in expected.items():
            received = self.received[kind]
            while self.count and min(received[: self.count]) < count:
                if time.monotonic() > deadline:
                    low = min(received[: self.count])
                    raise RuntimeError(f"{kind} listeners received {low} of {count} wake-ups")
                time.sleep(0.01)

    def arrivals(self, kind: str) -> list[list[float]]:
        found: list[list[float]] = []
        for control in self.controls:
            control.send("report")
            found += control.recv()[kind]
        return found

    def close(self) -> None:
        for control in self.controls:
            control.send(None)
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wake_up(
    listeners: Listeners, expected: dict[str, int], writes: int, url: str | None = None
) -> dict[str, Any]:
    """Commits 5 ms apart; from just before each COMMIT to each connection's receipt:
    of the ``NOTIFY``, or with ``url`` of the ``PUBLISH`` on Redis after the commit.
    Counts its writes into ``expected``."""
    from django.db import transaction

    from alarms import journal

    kind = "redis" if url else "pg"
    wake_by(url)
    fell_back = _fallbacks[0]
    try:
        # One write first, untimed, so that no connection is made in a timed one (the
        # PUBLISH's, after the COMMIT, would be).
        journal.record([1], using="default")
        expected[kind] += 1
        listeners.drained(expected)
        listeners.timed.value = 1
        sent = []
        for i in range(writes):
            with transaction.atomic():
                journal.record([i + 1], using="default")
                sent.append(time.monotonic())
            time.sleep(0.005)
        if _fallbacks[0] != fell_back:
            raise RuntimeError(f"{_fallbacks[0] - fell_back} PUBLISHes failed while timed")
        expected[kind] += writes
        listeners.drained(expected)
        listeners.timed.value = 0
    finally:
        wake_by(None)
    delays = [
        (arrived - at) * 1000
        for times in listeners.arrivals(kind)
        for arrived, at in zip(times, sent, strict=True)
    ]
    return {
        "p50_ms": percentile(delays, 0.5),
        "p99_ms": percentile(delays, 0.99),
        "max_ms": max(delays),
        "samples": len(delays),
    }


# -- setup -----------------------------------------------------------------------------


def ensure_connections(url: str, needed: int) -> dict[str, Any]:
    """The server's settings; with too few connections, restart scripts/postgres's
    cluster with more."""
    show = ("server_version", "fsync", "synchronous_commit", "max_connections")

    def settings() -> dict[str, Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in show}  # type: ignore[index]

    found = settings()
    if int(found["max_connections"]) >= needed:
        return found
    data, pg_ctl = os.environ.get("ALARMS_TEST_PG_DATA"), os.environ.get("ALARMS_TEST_PG_CTL")
    user = os.environ.get("ALARMS_TEST_PG_USER")
    if not (data and pg_ctl and user):
        sys.exit(
            f"max_connections is {found['max_connections']}, {needed} are needed: "
            "raise it, or run under scripts/postgres, whose cluster this bench can restart"
        )
    # pg_ctl restart -o replaces the options the cluster started with: keep them
    # (but -D, which pg_ctl gives itself), and raise max_connections after them.
    argv = shlex.split(Path(data, "postmaster.opts").read_text())[1:]
    if "-D" in argv:
        at = argv.index("-D")
        del argv[at : at + 2]
    options = shlex.join([*argv, "-c", f"max_connections={needed + 50}"])
    log = os.environ.get("ALARMS_TEST_PG_LOG") or str(Path(data).parent / "server.log")
    command = [pg_ctl, "restart", "-D", data, "-m", "fast", "-w", "-t", "60", "-l", log]
    command += ["-o", options]
    if pwd.getpwuid(os.getuid()).pw_name != user:
        command = ["runuser", "-u", user, "--", *command]
    print(f"restarting the cluster with max_connections={needed + 50}", flush=True)
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return settings()


class RedisServer:
    """A redis-server of the bench's own on a free port of 127.0.0.1, saving nothing."""

    def __init__(self, program: str, max_clients: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = probe.getsockname()
        self.url = f"redis://127.0.0.1:{self.address[1]}/0"
        # The server's output, read if it fails to start; open while it runs.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        command = [program, "--bind", "127.0.0.1", "--port", str(self.address[1])]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--maxclients", str(max_clients)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                info = self.info()
                break
            except (OSError, RuntimeError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    log = self.log.read().decode(errors="replace")
                    self.stop()
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.05)
        self.version = next(
            line.split(":", 1)[1] for line in info.splitlines() if line.startswith("redis_version:")
        )

    def info(self) -> str:
        """The server's answer to INFO."""
        with socket.create_connection(self.address, timeout=5) as sock:
            sock.sendall(b"*1\r\n$4\r\nINFO\r\n")
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                reply += chunk
                head, found, body = reply.partition(b"\r\n")
                if not found:
                    continue
                if not head.startswith(b"$"):
                    raise RuntimeError(f"redis-server answered INFO with {reply[:200]!r}")
                if len(body) >= int(head[1:]) + 2:
                    return body[: int(head[1:])].decode()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def within(runs: dict[str, list[float]], a: str, b: str) -> float:
    """The median of ``a / b`` within each repetition: the modes of one repetition
    ran back to back, under the same load."""
    return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--listeners", type=int, nargs="+", default=[0, 1, 16, 64, 256])
    parser.add_argument("--seconds", type=float, default=2.0, help="per write-rate run")
    parser.add_argument("--reps", type=int, default=3, help="runs of each mode per cell")
    parser.add_argument("--wake-ups", type=int, default=200, help="writes timed per L")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=[*MODES, *EXTRA_MODES])
    parser.add_argument(
        "--redis-server",
        metavar="PATH",
        default=shutil.which("redis-server"),
        help="the redis-server program the redis mode starts (default: the one on PATH)",
    )
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at PostgreSQL (try: scripts/postgres python bench/journal.py)"
        )
    with_redis = any(mode in REDIS_MODES for mode in args.modes)
    if with_redis:
        if not args.redis_server:
            sys.exit(
                "the redis mode needs redis-server and none is on PATH: install it "
                "(Debian: apt-get install redis-server), or pass --redis-server PATH"
            )
        if not os.access(args.redis_server, os.X_OK):
            sys.exit(f"--redis-server {args.redis_server}: no such program")
        try:
            import redis  # noqa: F401
        except ImportError:
            sys.exit("the redis mode needs the redis package: pip install -r requirements-dev.txt")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "x" * 50)
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ["BENCH_ALARMS"] = json.dumps({"CHANNEL": CHANNEL})
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    from django.conf import settings

    from alarms.models import AlarmChange

    # A connection of its own for each process, made there: the demo settings' pool
    # would open its connections here, and every writer forked after would share them.
    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)

    server = ensure_connections(url, max(args.listeners) + sum(args.writers) + 10)
    call_command("migrate", verbosity=0)
    before = AlarmChange.objects.order_by("-id").values_list("id", flat=True).first() or 0
    connections.close_all()
    print(
        f"PostgreSQL {server['server_version']} (fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}, "
        f"max_connections={server['max_connections']}), {os.cpu_count()} cores",
        flush=True,
    )
    redis_server = None
    if with_redis:
        redis_server = RedisServer(args.redis_server, max(args.listeners) + sum(args.writers) + 64)
        count_fallbacks()  # before the writers fork: each counts its own
        print(f"Redis {redis_server.version} on 127.0.0.1:{redis_server.address[1]}", flush=True)
    wake_url = redis_server.url if redis_server else None
    started = time.monotonic()
    pools: dict[int, Writers] = {}
    cells: list[dict[str, Any]] = []
    wakes: dict[int, dict[str, Any]] = {}
    wakes_redis: dict[int, dict[str, Any]] = {}
    try:
        pools.update((n, Writers(n, wake_url)) for n in args.writers)
        for count in args.listeners:
            address = redis_server.address if redis_server else None
            listeners = Listeners(url, address, count)
            # What each listener should have had: notifications, and Redis messages.
            expected = {"pg": 0, "redis": 0}
            try:
                for n, pool in pools.items():
                    runs: dict[str, list[float]] = {mode: [] for mode in args.modes}
                    fallbacks = 0
                    for rep in range(args.reps):
                        # Each mode first in turn: none gains from running after another.
                        shift = rep % len(args.modes)
                        for mode in args.modes[shift:] + args.modes[:shift]:
                            rate, commits, fell_back = pool.rate(mode, args.seconds)
                            runs[mode].append(rate)
                            if mode in REDIS_MODES:
                                expected["redis"] += commits - fell_back
                                expected["pg"] += fell_back
                                fallbacks += fell_back
                            else:
                                expected["pg"] += commits
                            listeners.drained(expected)
                    cell: dict[str, Any] = {"listeners": count, "writers": n}
                    cell.update({m: statistics.median(r) for m, r in runs.items()})
                    if "journal" in runs:
                        cell["ratios"] = {
                            m: within(runs, "journal", m) for m in runs if m != "journal"
                        }
                    if "redis" in runs:
                        cell["redis_ratios"] = {
                            m: within(runs, "redis", m) for m in runs if m != "redis"
                        }
                        cell["fallbacks"] = fallbacks
                    cell["runs"] = runs
                    cells.append(cell)
                    print(
                        f"  L={count:>3} writers={n:>2}: "
                        + ", ".join(f"{m} {cell[m]:,.0f}/s" for m in args.modes)
                        + (f" ({fallbacks} PUBLISHes fell back to NOTIFY)" if fallbacks else ""),
                        flush=True,
                    )
                if count:
                    timed: list[tuple[str, dict[int, Any], str | None]] = [("journal", wakes, None)]
                    if wake_url:
                        timed.append(("redis", wakes_redis, wake_url))
                    for name, found, wake in timed:
                        found[count] = w = wake_up(listeners, expected, args.wake_ups, wake)
                        print(
                            f"  L={count:>3} {name} wake-up p50 {w['p50_ms']:.2f}, "
                            f"p99 {w['p99_ms']:.2f} ms",
                            flush=True,
                        )
                    connections.close_all()
            finally:
                listeners.close()
    finally:
        for pool in pools.values():
            pool.close()
        if redis_server:
            redis_server.stop()
        AlarmChange.objects.filter(id__gt=before).delete()
        connections.close_all()

    recorded = vars(args)
    del recorded["redis_server"]  # a path of this machine's
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "server": server,
        "args": recorded,
        "writes": cells,
        "wake_up": wakes,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if redis_server:
        record["redis"] = {"version": redis_server.version}
        record["wake_up_redis"] = wakes_redis
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "journal.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")
    print("\n" + tables(record))
    return 0


def tables(r: dict[str, Any]) -> str:
    modes = r["args"]["modes"]
    names = {
        "journal": "journal, no lock",
        "locked": "before: advisory lock",
        "plain": "INSERT + NOTIFY",
        "redis": "journal, woken by Redis",
        "xid3": "xid, INSERT, NOTIFY (3 statements)",
        "single": "one statement",
    }
    ratios = [("journal", m) for m in ("plain", "locked") if m in modes and "journal" in modes]
    if "redis" in modes:
        ratios += [("redis", m) for m in ("journal", "plain") if m in modes]
    lines = [
        f"Journal writes (commits/s, median of {r['args']['reps']} runs of "
        f"{r['args']['seconds']:g} s) beside L listening connections; the ratios are "
        "taken within each run, then the median",
        "",
        "| L | writers | "
        + " | ".join(names[m] for m in modes)
        + "".join(f" | {a} / {names[b]}" for a, b in ratios)
        + " |",
        "|---|---|" + "---|" * (len(modes) + len(ratios)),
    ]
    for c in r["writes"]:
        row = f"| {c['listeners']} | {c['writers']} | " + " | ".join(f"{c[m]:,.0f}" for m in modes)
        row += "".join(
            f" | {c['ratios' if a == 'journal' else 'redis_ratios'][b]:.2f}" for a, b in ratios
        )
        lines.append(row + " |")
    if r["wake_up"]:
        timed = [("NOTIFY", r["wake_up"])]
        if r.get("wake_up_redis"):
            timed.append(("Redis", r["wake_up_redis"]))
        lines += [
            "",
            "COMMIT to arrival at each listening connection (journal.record, one writer, "
            "5 ms apart"
            + ("; by NOTIFY, and by PUBLISH after the COMMIT)" if len(timed) > 1 else ")"),
            "",
            "| L | " + " | ".join(f"{t} p50 ms | {t} p99 ms | {t} max ms" for t, _ in timed) + " |",
            "|---|" + "---|---|---|" * len(timed),
        ]
        for count in sorted(r["wake_up"], key=int):
            row = f"| {count} |"
            for _, found in timed:
                w = found[count]
                row += f" {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['max_ms']:.2f} |"
            lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Journal writes without a global lock: write rate and wake-up latency beside 0 to 256 listeners.

    scripts/postgres .venv/bin/python bench/journal.py
    scripts/postgres .venv/bin/python bench/journal.py --writers 1 4 16 \\
        --listeners 0 1 16 64 256 --seconds 2 --reps 3

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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHANNEL = "bench_journal"
PER_PROCESS = 32
MODES = ("journal", "locked", "plain")
EXTRA_MODES = ("xid3", "single")

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
    "xid3": xid3_write,
    "single": single_write,
}


def writer(orders: Any, barrier: Any, out: Any) -> None:
    """One process, one connection: runs each (mode, seconds) it is given, in step."""
    from django.db import connections

    connections.close_all()  # the parent's, inherited by fork: never used here
    WRITES["journal"](0)
    while (order := orders.get()) is not None:
        mode, seconds = order
        write = WRITES[mode]
        write(0)
        barrier.wait()
        done, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            write(done % 1000 + 1)
            done += 1
        out.put(done)
    connections.close_all()


class Writers:
    """``count`` writer processes, kept for the whole run."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.barrier, self.out = ctx.Barrier(count), ctx.Queue()
        self.orders = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=writer, args=(orders, self.barrier, self.out), daemon=True)
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

    def rate(self, mode: str, seconds: float) -> tuple[float, int]:
        """Commits per second of all writers together, and how many commits."""
        for orders in self.orders:
            orders.put((mode, seconds))
        done = sum(self.out.get(timeout=seconds + 120) for _ in range(self.count))
        return done / seconds, done + self.count  # and the warm-up write each


# -- the listeners ---------------------------------------------------------------------


def listener(url: str, first: int, count: int, received: Any, timed: Any, control: Any) -> None:
    """``count`` listening connections in one process; each notification counted in
    ``received[first + i]``, and its arrival kept while ``timed`` is set.

    Read with libpq's own calls, one ``select`` over every socket: the cheapest
    client there is, so that the listeners' own CPU, on the database's machine
    here, takes as little as it can from what is measured."""
    conns = [psycopg.connect(url, autocommit=True) for _ in range(count)]
    for conn in conns:
        conn.execute(f"LISTEN {CHANNEL}")
    arrivals: list[list[float]] = [[] for _ in range(count)]
    selector = selectors.DefaultSelector()
    for i, conn in enumerate(conns):
        selector.register(conn.pgconn.socket, selectors.EVENT_READ, i)
    selector.register(control, selectors.EVENT_READ, None)
    control.send(first)
    while True:
        for key, _events in selector.select():
            i = key.data
            if i is None:
                command = control.recv()
                if command is None:
                    for conn in conns:
                        conn.close()
                    return
                control.send(arrivals)
                arrivals = [[] for _ in range(count)]
                continue
            pgconn = conns[i].pgconn
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                if timed.value:
                    arrivals[i].append(time.monotonic())
                received[first + i] += 1


class Listeners:
    """``count`` listening connections, ``PER_PROCESS`` to a process."""

    def __init__(self, url: str, count: int) -> None:
        self.count = count
        self.received = ctx.Array("q", max(count, 1), lock=False)
        self.timed = ctx.Value("b", 0, lock=False)
        self.procs = []
        self.controls = []
        for first in range(0, count, PER_PROCESS):
            mine, theirs = ctx.Pipe()
            n = min(PER_PROCESS, count - first)
            args = (url, first, n, self.received, self.timed, theirs)
            self.procs.append(ctx.Process(target=listener, args=args, daemon=True))
            self.controls.append(mine)
        for p in self.procs:
            p.start()
        for control in self.controls:
            if not control.poll(120):
                raise RuntimeError("a listener process did not start")
            control.recv()

    def drained(self, expected: int, within: float = 300) -> None:
        """Wait until every connection has received ``expected`` notifications."""
        deadline = time.monotonic() + within
        while self.count and min(self.received[: self.count]) < expected:
            if time.monotonic() > deadline:
                low = min(self.received[: self.count])
                raise RuntimeError(f"listeners received {low} of {expected} notifications")
            time.sleep(0.01)

    def arrivals(self) -> list[list[float]]:
        found: list[list[float]] = []
        for control in self.controls:
            control.send("report")
            found += control.recv()
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


def wake_up(listeners: Listeners, expected: int, writes: int) -> dict[str, Any]:
    """Commits 5 ms apart; from just before each COMMIT to each connection's receipt."""
    from django.db import transaction

    from alarms import journal

    listeners.timed.value = 1
    sent = []
    for i in range(writes):
        with transaction.atomic():
            journal.record([i + 1], using="default")
            sent.append(time.monotonic())
        time.sleep(0.005)
    listeners.drained(expected + writes)
    listeners.timed.value = 0
    delays = [
        (arrived - at) * 1000
        for times in listeners.arrivals()
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--listeners", type=int, nargs="+", default=[0, 1, 16, 64, 256])
    parser.add_argument("--seconds", type=float, default=2.0, help="per write-rate run")
    parser.add_argument("--reps", type=int, default=3, help="runs of each mode per cell")
    parser.add_argument("--wake-ups", type=int, default=200, help="writes timed per L")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=[*MODES, *EXTRA_MODES])
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at PostgreSQL (try: scripts/postgres python bench/journal.py)"
        )
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
    started = time.monotonic()
    pools = {n: Writers(n) for n in args.writers}
    cells: list[dict[str, Any]] = []
    wakes: dict[int, dict[str, Any]] = {}
    try:
        for count in args.listeners:
            listeners = Listeners(url, count)
            notified = 0  # notifications each listener should have had
            try:
                for n, pool in pools.items():
                    runs: dict[str, list[float]] = {mode: [] for mode in args.modes}
                    for rep in range(args.reps):
                        # Each mode first in turn: none gains from running after another.
                        shift = rep % len(args.modes)
                        for mode in args.modes[shift:] + args.modes[:shift]:
                            rate, commits = pool.rate(mode, args.seconds)
                            runs[mode].append(rate)
                            notified += commits
                            listeners.drained(notified)
                    cell = {"listeners": count, "writers": n}
                    cell.update({m: statistics.median(r) for m, r in runs.items()})
                    if "journal" in runs:
                        # Within each repetition, then the median: the modes of one
                        # repetition ran back to back, under the same load.
                        cell["ratios"] = {
                            m: statistics.median(
                                j / x for j, x in zip(runs["journal"], runs[m], strict=True)
                            )
                            for m in runs
                            if m != "journal"
                        }
                    cell["runs"] = runs
                    cells.append(cell)
                    print(
                        f"  L={count:>3} writers={n:>2}: "
                        + ", ".join(f"{m} {cell[m]:,.0f}/s" for m in args.modes),
                        flush=True,
                    )
                if count:
                    wakes[count] = wake_up(listeners, notified, args.wake_ups)
                    w = wakes[count]
                    print(
                        f"  L={count:>3} wake-up p50 {w['p50_ms']:.2f}, p99 {w['p99_ms']:.2f} ms",
                        flush=True,
                    )
                    connections.close_all()
            finally:
                listeners.close()
    finally:
        for pool in pools.values():
            pool.close()
        AlarmChange.objects.filter(id__gt=before).delete()
        connections.close_all()

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "server": server,
        "args": vars(args),
        "writes": cells,
        "wake_up": wakes,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
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
        "xid3": "xid, INSERT, NOTIFY (3 statements)",
        "single": "one statement",
    }
    ratios = [m for m in ("plain", "locked") if m in modes and "journal" in modes]
    lines = [
        f"Journal writes (commits/s, median of {r['args']['reps']} runs of "
        f"{r['args']['seconds']:g} s) beside L listening connections; the ratios are "
        "taken within each run, then the median",
        "",
        "| L | writers | "
        + " | ".join(names[m] for m in modes)
        + "".join(f" | journal / {names[m]}" for m in ratios)
        + " |",
        "|---|---|" + "---|" * (len(modes) + len(ratios)),
    ]
    for c in r["writes"]:
        row = f"| {c['listeners']} | {c['writers']} | " + " | ".join(f"{c[m]:,.0f}" for m in modes)
        row += "".join(f" | {c['ratios'][m]:.2f}" for m in ratios)
        lines.append(row + " |")
    if r["wake_up"]:
        lines += [
            "",
            "COMMIT to arrival at each listening connection "
            "(journal.record, one writer, 5 ms apart)",
            "",
            "| L | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|",
        ]
        for count, w in sorted(r["wake_up"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {count} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['max_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

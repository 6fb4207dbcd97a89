"""What LISTEN/NOTIFY (and the commit-order lock the journal once took) cost PostgreSQL.

    scripts/postgres .venv/bin/python bench/notify.py

scripts/postgres runs its cluster with fsync and synchronous_commit off, so a
COMMIT there waits for no disk. For commits as a default (durable) server makes
them, point DATABASE_URL at a throwaway database on such a server (the script
migrates it):

    DATABASE_URL=postgres://USER@HOST:PORT/DB .venv/bin/python bench/notify.py

Measured with psycopg directly (no daphne), each figure the median of --reps runs:

1. Journal writes per second with 1, 2, 4, 8 concurrent writers (one process and
   one connection each), for a plain INSERT, INSERT + ``pg_notify``, and
   ``pg_advisory_xact_lock`` + INSERT + ``pg_notify``. The second is what
   ``alarms.journal.record`` sends (checked against it first), the third what it
   sent before the journal dropped its commit-order lock; one transaction each,
   as Django sends them. The three take turns within each repetition and
   the ratios are taken within a repetition. The rows go to a copy of the journal
   table (``CREATE TABLE ... (LIKE alarms_alarmchange INCLUDING ALL)``), dropped
   at the end, and the notifications to channels of their own. The journal's
   writes are run once more beside 64 connections, in turns: not listening,
   listening on another channel, listening on the writers' channel.
2. The time from a notifying transaction's COMMIT to its arrival at each of
   1, 4, 16, 64 listening connections (one process each, as one daphne process
   holds one), and what the database's own processes spend in CPU per
   notification (from /proc/PID/schedstat, when the server runs on this machine).
3. The connections one broker holds (``PostgresBroker`` started in this process)
   with DB_THREADS 1, 2 and 4, and so ``max_connections`` for N processes.

Results are appended to bench/results/notify.jsonl and summarised as Markdown
tables. The whole run takes about two minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TABLE = "bench_journal"
CHANNEL = "bench_notify"
# Nobody listens here: the write-rate runs notify it unless listeners are the point.
QUIET = "bench_quiet"

# The journal's statements (alarms.journal.record), on the bench's copy of its table.
LOCK = "SELECT pg_advisory_xact_lock(%s)"
INSERT = (
    f"INSERT INTO {TABLE} (alarm_id, kind, user_id, session, detail, created_at) "
    "VALUES (%s, 'alarm', NULL, '', '', %s) RETURNING id"
)
NOTIFY = "SELECT pg_notify(%s, '')"
MODES = {
    "plain": "INSERT",
    "notify": "INSERT + pg_notify",
    "lock": "lock + INSERT + pg_notify",
}

ctx = mp.get_context("fork")


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    # Client-side binding, as Django's PostgreSQL backend uses by default.
    return psycopg.connect(url, cursor_factory=psycopg.ClientCursor, **kwargs)


# -- 1. journal writes ---------------------------------------------------------------


def writer(url: str, key: int, orders: Any, barrier: Any, out: Any) -> None:
    """One connection; runs each (mode, channel, seconds) order it is given, in step."""
    with connect(url) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        while (order := orders.get()) is not None:
            mode, channel, seconds = order
            barrier.wait()
            deadline = time.monotonic() + seconds
            done, latencies = 0, []
            while (started := time.monotonic()) < deadline:
                # One transaction per write, statement by statement, as Django sends
                # them inside transaction.atomic(): BEGIN, ..., COMMIT.
                if mode == "lock":
                    conn.execute(LOCK, (key,))
                conn.execute(INSERT, (done % 1000 + 1, datetime.now(UTC)))
                if mode != "plain":
                    conn.execute(NOTIFY, (channel,))
                conn.commit()
                done += 1
                latencies.append(time.monotonic() - started)
            out.put((done, statistics.median(latencies) if latencies else None))


class Writers:
    """``count`` writer processes, each with its connection, kept for several runs."""

    def __init__(self, url: str, count: int, key: int) -> None:
        self.count = count
        self.barrier, self.out = ctx.Barrier(count), ctx.Queue()
        self.orders = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=writer, args=(url, key, orders, self.barrier, self.out))
            for orders in self.orders
        ]

    def __enter__(self) -> Writers:
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for orders in self.orders:
            orders.put(None)
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()

    def rate(self, mode: str, seconds: float, channel: str = QUIET) -> dict[str, Any]:
        for orders in self.orders:
            orders.put((mode, channel, seconds))
        got = [self.out.get(timeout=seconds + 60) for _ in range(self.count)]
        return {
            "commits_per_s": sum(n for n, _ in got) / seconds,
            "median_ms": statistics.median(ms for _, ms in got if ms is not None) * 1000,
        }


# -- 2. listeners ---------------------------------------------------------------------


STOP, UNLISTEN, LISTEN = -1, 0, 1


def listener(url: str, state: Any, acks: Any, report: Any, timed: bool) -> None:
    """One listening connection; LISTENs or not as ``state`` says, until it says STOP."""
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        listening, received = UNLISTEN, 0
        while (wanted := state.value) != STOP:
            if wanted != listening:
                conn.execute(f"LISTEN {CHANNEL}" if wanted == LISTEN else "UNLISTEN *")
                listening = wanted
                acks.put(pid)
            for note in conn.notifies(timeout=0.05):
                arrived = time.monotonic()
                received += 1
                if timed:
                    report.put((int(note.payload), arrived))
        if not timed:
            report.put(received)


class Listeners:
    """``count`` listening connections, one process each (as each daphne process holds one)."""

    def __init__(self, url: str, count: int, *, timed: bool) -> None:
        self.count = count
        self.state = ctx.Value("i", LISTEN)
        self.acks, self.report = ctx.Queue(), ctx.Queue()
        self.procs = [
            ctx.Process(target=listener, args=(url, self.state, self.acks, self.report, timed))
            for _ in range(count)
        ]

    def __enter__(self) -> Listeners:
        for p in self.procs:
            p.start()
        self.pids = [self.acks.get(timeout=60) for _ in self.procs]
        return self

    def listen(self, on: bool) -> None:
        """LISTEN or UNLISTEN on every connection, and wait until each has."""
        self.state.value = LISTEN if on else UNLISTEN
        for _ in self.procs:
            self.acks.get(timeout=60)

    def __exit__(self, *exc: object) -> None:
        self.state.value = STOP
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def cpu_ns(pids: list[int]) -> int | None:
    """CPU time the given (server) processes have used, or None if /proc cannot tell."""
    total = 0
    try:
        for pid in pids:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wake_up(url: str, listeners: Listeners, notifications: int) -> dict[str, Any]:
    count = listeners.count
    with connect(url) as conn:
        own = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        every, last, commits = [], [], []
        before = (cpu_ns([own]), cpu_ns(listeners.pids))
        for seq in range(notifications):
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
            sent = time.monotonic()
            conn.commit()
            commits.append(time.monotonic() - sent)
            arrivals = []
            while len(arrivals) < count:
                got_seq, arrived = listeners.report.get(timeout=10)
                if got_seq == seq:
                    arrivals.append(arrived - sent)
            every += arrivals
            last.append(max(arrivals))
            time.sleep(0.005)
        after = (cpu_ns([own]), cpu_ns(listeners.pids))
    # Server CPU per notification: the notifying backend's (the whole transaction),
    # and each listening backend's (woken, reads the queue, sends to its client).
    notifier = listening = None
    if None not in before and None not in after:
        notifier = (after[0] - before[0]) / notifications / 1000  # type: ignore[operator]
        listening = (after[1] - before[1]) / notifications / count / 1000  # type: ignore[operator]
    return {
        "p50_ms": percentile(every, 0.5) * 1000,
        "p99_ms": percentile(every, 0.99) * 1000,
        "last_p50_ms": percentile(last, 0.5) * 1000,
        "last_p99_ms": percentile(last, 0.99) * 1000,
        "commit_ms": statistics.median(commits) * 1000,
        "notifier_cpu_us": notifier,
        "listener_cpu_us": listening,
    }


# -- 3. connections per broker --------------------------------------------------------


def broker_connections(url: str, threads: int) -> dict[str, int]:
    from django.db import connections
    from django.test import override_settings

    from alarms import broker as broker_module

    def hold(alias: str) -> None:
        # Busy long enough that every one of the broker's threads opens its connection.
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.3)")

    async def run() -> dict[str, int]:
        broker_module.reset_broker()
        broker = broker_module.get_broker()
        await broker.ensure_started()
        await asyncio.gather(*(broker.run_db(hold, broker.alias) for _ in range(threads)))
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE query LIKE 'LISTEN %%') "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
        await broker.stop()
        broker_module.reset_broker()
        assert row is not None
        return {"db_threads": threads, "connections": row[0], "listening": row[1]}

    connections.close_all()
    alarms = {"DB_THREADS": threads, "SHUTDOWN_GRACE": 0}
    with override_settings(ALARMS=alarms):
        return asyncio.run(run())


# -- setup ------------------------------------------------------------------------------


def check_journal_sql() -> int:
    """Fail if alarms.journal.record no longer sends what this bench replays
    (INSERT + pg_notify); the key of the lock the old design took (``lock``)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alarms import journal

    with CaptureQueriesContext(connection) as captured:
        journal.record([1], using="default")
    sent = [q["sql"] for q in captured.captured_queries]
    sent = [s for s in sent if s not in ("BEGIN", "COMMIT")]
    # pg_current_xact_id() gives the writer its transaction id before the INSERT
    # (readers find gap writers by it); it costs nothing this bench would show.
    expected = ("SELECT pg_current_xact_id(), pg_notify(", 'INSERT INTO "alarms_alarmchange"')
    if len(sent) != len(expected) or not all(
        s.startswith(e) for s, e in zip(sent, expected, strict=True)
    ):
        sys.exit(f"alarms.journal.record sends {sent!r}: update bench/notify.py to match")
    return journal.ADVISORY_LOCK_KEY


def summarise(
    runs: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The median of each figure over the runs; with a baseline, of the run-by-run ratio."""
    merged: dict[str, Any] = {"runs": runs}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        merged[key] = statistics.median(values) if values else None
    if baseline is not None:
        merged["ratio"] = statistics.median(
            r["commits_per_s"] / b["commits_per_s"] for r, b in zip(runs, baseline, strict=True)
        )
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--listeners", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=1.0, help="per write-rate run")
    parser.add_argument("--notifications", type=int, default=60, help="per latency run")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at PostgreSQL (try: scripts/postgres python bench/notify.py)"
        )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "x" * 50)
    os.environ.setdefault("DJANGO_DEBUG", "0")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    call_command("migrate", verbosity=0)
    key = check_journal_sql()
    connections.close_all()
    started = time.monotonic()

    with connect(url, autocommit=True) as conn:
        server = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "max_connections")
        }
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (LIKE alarms_alarmchange INCLUDING ALL)")
    print(
        f"PostgreSQL {server['server_version']} (fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}), {os.cpu_count()} cores; "
        f"median of {args.reps}",
        flush=True,
    )

    # The machine is shared and noisy: the modes take turns within each
    # repetition, and ratios are taken within a repetition, then the median.
    writes: dict[str, dict[int, Any]] = {mode: {} for mode in MODES}
    try:
        for n in args.writers:
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            with Writers(url, n, key) as writers:
                for _ in range(args.reps):
                    for mode in MODES:
                        runs[mode].append(writers.rate(mode, args.seconds))
            for mode in MODES:
                writes[mode][n] = summarise(runs[mode], runs["plain"])
            print(
                f"  {n} writers: "
                + ", ".join(f"{m} {writes[m][n]['commits_per_s']:.0f}/s" for m in MODES),
                flush=True,
            )
        # Journal writes with the most listeners connected, in turns: not listening;
        # listening on another channel (PostgreSQL signals every listener of the
        # database at each notifying commit, whatever the channel); listening on
        # the writers' channel (each notification is then sent to each listener).
        most = max(args.listeners)
        crowd_writers = 4 if 4 in args.writers else args.writers[-1]
        turns: dict[str, list[dict[str, Any]]] = {"none": [], "other": [], "same": []}
        with (
            Listeners(url, most, timed=False) as listeners,
            Writers(url, crowd_writers, key) as writers,
        ):
            for _ in range(args.reps):
                listeners.listen(False)
                turns["none"].append(writers.rate("notify", args.seconds))
                listeners.listen(True)
                turns["other"].append(writers.rate("notify", args.seconds))
                turns["same"].append(writers.rate("notify", args.seconds, CHANNEL))
        crowded = {turn: summarise(runs, turns["none"]) for turn, runs in turns.items()}
        print(
            f"  journal, {crowd_writers} writers, {most} connections: "
            + ", ".join(f"{t} {x['commits_per_s']:.0f}/s" for t, x in crowded.items()),
            flush=True,
        )
        wakes = {}
        for count in args.listeners:
            with Listeners(url, count, timed=True) as listeners:
                found = [wake_up(url, listeners, args.notifications) for _ in range(args.reps)]
            wakes[count] = summarise(found)
            print(f"  {count} listeners: p50 {wakes[count]['p50_ms']:.2f} ms", flush=True)
    finally:
        with connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    held = [broker_connections(url, threads) for threads in (1, 2, 4)]
    elapsed = time.monotonic() - started

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "server": server,
        "args": vars(args),
        "writes": writes,
        "crowded": {"writers": crowd_writers, "listeners": most, **crowded},
        "wake_up": wakes,
        "broker_connections": held,
        "elapsed_s": round(elapsed, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "notify.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")
    print("\n" + tables(record))
    return 0


def tables(r: dict[str, Any]) -> str:
    w = r["writes"]
    counts = sorted(int(n) for n in w["plain"])
    lines = [
        "Journal writes (commits/s; ratio to a plain INSERT at the same concurrency)",
        "",
        "| writers | INSERT | INSERT + pg_notify (journal) | lock + INSERT + pg_notify (old) |",
        "|---|---|---|---|",
    ]
    for n in counts:
        plain, notify, lock = (w[m][n] for m in MODES)
        lines.append(
            f"| {n} | {plain['commits_per_s']:,.0f} "
            f"| {notify['commits_per_s']:,.0f} ({notify['ratio']:.2f}) "
            f"| {lock['commits_per_s']:,.0f} ({lock['ratio']:.2f}) |"
        )
    c = r["crowded"]
    lines += [
        "",
        f"Journal writes (INSERT + pg_notify, {c['writers']} writers) beside "
        f"{c['listeners']} connections (commits/s; ratio to the first column)",
        "",
        "| none listening | listening on another channel | listening on the writers' channel |",
        "|---|---|---|",
        "| "
        + " | ".join(
            f"{c[t]['commits_per_s']:,.0f} ({c[t]['ratio']:.2f})" for t in ("none", "other", "same")
        )
        + " |",
        "",
        "COMMIT to arrival at each listening connection (ms), and the database's CPU",
        "",
        "| listeners | p50 | p99 | last listener p50 / p99 | COMMIT "
        "| server CPU per notification: notifying backend / each listening backend |",
        "|---|---|---|---|---|---|",
    ]
    for n, x in sorted(r["wake_up"].items(), key=lambda kv: int(kv[0])):
        cpu = "-"
        if x["notifier_cpu_us"] is not None:
            cpu = f"{x['notifier_cpu_us']:,.0f} µs / {x['listener_cpu_us']:,.0f} µs"
        lines.append(
            f"| {n} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['last_p50_ms']:.2f} / "
            f"{x['last_p99_ms']:.2f} | {x['commit_ms']:.2f} | {cpu} |"
        )
    lines += [
        "",
        "Connections one broker holds (PostgresBroker started in-process)",
        "",
        "| DB_THREADS | connections | of which LISTEN | for 4 / 16 / 64 processes |",
        "|---|---|---|---|",
    ]
    for h in r["broker_connections"]:
        per = h["connections"]
        many = " / ".join(str(n * per) for n in (4, 16, 64))
        lines.append(f"| {h['db_threads']} | {per} | {h['listening']} | {many} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

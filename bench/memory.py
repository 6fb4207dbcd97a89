"""Server memory per idle stream: the RSS a process gains for N more open streams.

    .venv/bin/python bench/memory.py -n 2000                  # SQLite in a temporary folder
    scripts/postgres .venv/bin/python bench/memory.py --tree OLD_CHECKOUT --tree . \
        --server daphne --server uvicorn -n 10000 --signed-in 0.8 --rounds 3

Per ``--tree`` (a checkout with its own ``.venv``; default: this one), once: a
database of its own (a SQLite file in a temporary folder, or a new database in
the cluster of ``DATABASE_URL`` when that is PostgreSQL), migrated by the tree's
own ``manage.py``; ``--users`` users with a database session each
(``bench/storm_setup.py``, run in the tree); three live alarms for everyone
(the tree's ``send_alarm``), which every stream replays on connect.

Then ``--rounds`` rounds. In each, every tree runs under every ``--server`` in
turn (the order reversed every other round, so that drift on a shared machine
falls on both sides), each run in a fresh server process:
``config.asgi:application`` with the tree's ``bench/settings.py``, a listen
queue of 4,096 (``bench/storm.py``'s command lines), and ``--alarms`` merged
into its ``ALARMS`` (heartbeats off by default, so that idle streams stay idle).
One run:

1. Opens ``--warm`` streams and waits for each one's first bytes (the
   ``: alarms`` comment). Not counted: the first connects import code lazily and
   fill caches and pools.
2. After ``--settle`` seconds, reads the server's RSS (``VmRSS`` in
   ``/proc/PID/status``).
3. Opens N more, ``--concurrency`` at a time, each until its first bytes: the
   ``--signed-in`` fraction (spread evenly, warm-up included) with the session
   cookie of the next user in turn, the rest anonymous.
4. After ``--settle`` seconds, reads the RSS again.

5. With ``--broadcasts K``, publishes K alarms for everyone, one after another
   (the tree's ``bench/trigger.py``, which prints its commit time), and times
   each from its commit to its arrival on every stream; one more goes first,
   untimed, since a process's first fan-out loads code that a long-running
   one has loaded long since.

With ``--floor PATH`` (the shared load client's ``floor_server.py``, a bare
asyncio broadcaster), each round also runs it, with N anonymous streams and the
same client: its RSS per stream and its broadcasts (timed from before its write
loop) are the floor that this client and machine allow.

KiB per stream = (RSS after - RSS before) / the streams held (N when none
failed). Also measured: the streams refused or failed (an error or a status
other than 200 before the first bytes, or closed by the server before the second
reading; must be 0), the server's CPU over steps 3 and 4, and the tracebacks in
its log. RSS is the whole process's: live objects, garbage not yet collected
(nothing runs ``gc.collect()`` in the server) and the allocator's free lists;
not the kernel's socket buffers. Prints one table (a row per tree and server, the
figure of each round and their median) and appends a JSON line per run to
``--json-out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.storm import (  # noqa: E402
    SECRET,
    cpu_seconds,
    git_head,
    raise_nofile,
    server_command,
    stop,
    tree_database,
    wait_listening,
)

RESULTS = ROOT / "bench" / "results" / "memory.jsonl"
PER_USER = 5  # streams per user at most by default; the app's cap is 10 (MAX_STREAMS_PER_USER)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def signed_in(index: int, fraction: float) -> bool:
    """Whether stream ``index`` (warm-up included) is signed in: evenly spread, not random."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


@dataclass
class Tree:
    path: Path
    label: str
    env: dict[str, str]
    sessions: list[str]
    cookie: str


#: The floor: the shared load client's bare broadcaster (``--floor``).
FLOOR = Tree(Path(), "floor", {}, [], "")


@dataclass
class Streams:
    """The client side of one run: the streams held, and what went wrong."""

    port: int
    tree: Tree
    fraction: float
    timeout: float
    opened: int = 0  # streams asked for so far, warm-up included
    signed: int = 0  # of which signed in
    held: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    dropped: int = 0
    # Streams answer GET path with marker first; the floor's differ from ours.
    path: str = "/alarms/stream/"
    marker: bytes = b": alarms"
    # The broadcast being timed: its token, and when each stream saw it.
    token: bytes | None = None
    arrivals: list[float] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def open_many(self, n: int, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(cookie: str) -> None:
            async with gate:
                try:
                    await self.open(cookie)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    self.failures.append(repr(exc)[:300])

        jobs = []
        for _ in range(n):
            cookie = ""
            if self.tree.sessions and signed_in(self.opened, self.fraction):
                session = self.tree.sessions[self.signed % len(self.tree.sessions)]
                cookie = f"Cookie: {self.tree.cookie}={session}\r\n"
                self.signed += 1
            jobs.append(one(cookie))
            self.opened += 1
        await asyncio.gather(*jobs)

    async def open(self, cookie: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(
                (
                    f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    f"Accept: text/event-stream\r\nAccept-Language: en\r\n{cookie}\r\n"
                ).encode()
            )
            data = b""
            async with asyncio.timeout(self.timeout):
                while self.marker not in data:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise RuntimeError(f"closed: {data[:200]!r}")
                    data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(data[:200].decode(errors="replace"))
        except BaseException:
            writer.close()
            raise
        self.held.append(writer)
        self.readers.append(asyncio.create_task(self.drain(reader)))

    async def drain(self, reader: asyncio.StreamReader) -> None:
        # Keep reading, so nothing piles up in either side's buffers; an end here is a
        # stream the server closed (the per-user cap, an error).
        seen: bytes | None = None  # the last token this stream saw
        tail = b""  # a token may straddle two reads
        try:
            while chunk := await reader.read(65536):
                token = self.token
                if token is not None and token != seen and token in tail + chunk:
                    self.arrivals.append(time.time())
                    seen = token
                    if len(self.arrivals) >= len(self.held):
                        self.all_in.set()
                tail = chunk[-64:]
        except OSError:
            pass
        self.dropped += 1

    async def broadcast(self, publish: Any, wait: float) -> dict[str, Any]:
        """Publish one alarm (``publish(token)`` returns its time) and time its
        arrival on every stream held."""
        token = f"bench-{secrets.token_hex(6)}"
        self.arrivals = []
        self.all_in.clear()
        self.token = token.encode()
        sent = await publish(token)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_in.wait(), wait)
        late = sorted(1000 * (t - sent) for t in self.arrivals)
        if not late:
            return {"delivered": 0, "of": len(self.held)}
        return {
            "delivered": len(late),
            "of": len(self.held),
            "p50_ms": round(late[len(late) // 2], 1),
            "p99_ms": round(late[min(len(late) - 1, math.ceil(len(late) * 0.99) - 1)], 1),
            "max_ms": round(late[-1], 1),
        }

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        for writer in self.held:
            writer.close()


def prepare_tree(args: argparse.Namespace, path: Path, index: int, work: Path) -> Tree:
    dirty = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    # An uncommitted change shows in the label: its HEAD alone would name the old code.
    label = f"{path.name}@{git_head(path)}" + (" + changes" if dirty else "")
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith("postgres"):
        database = tree_database(base, f"memory_{index}")
    else:
        database = f"sqlite:///{work / f'db-{index}.sqlite3'}"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_DEBUG": "0",
        "ALARMS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "BENCH_ALARMS": json.dumps(args.alarms),
    }
    env.pop("PYTHONPATH", None)
    python = str(path / ".venv" / "bin" / "python")
    started = time.monotonic()
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=path, env=env, check=True)
    out = work / f"sessions-{index}.json"
    setup = [python, str(ROOT / "bench" / "storm_setup.py"), "--users", str(args.users)]
    subprocess.run([*setup, "--out", str(out)], cwd=path, env=env, check=True)
    for level in ("info", "warning", "critical"):
        subprocess.run(
            [
                python, "manage.py", "send_alarm", "--audience", "everyone", "--level", level,
                "--translation", "en", f"Standing alarm ({level})", "Replayed on connect",
            ],
            cwd=path, env=env, check=True, capture_output=True,
        )  # fmt: skip
    names = json.loads(out.read_text())
    print(
        f"{label}: {database.split(':')[0]}, {args.users} users, three live alarms "
        f"({time.monotonic() - started:.1f} s)",
        flush=True,
    )
    sessions = names["sessions"] if args.signed_in else []
    return Tree(path, label, env, sessions, names["session_cookie"])


async def measure(
    args: argparse.Namespace, tree: Tree, port: int, pid: int, publish: Any
) -> dict[str, Any]:
    streams = Streams(port, tree, args.signed_in, args.timeout)
    if tree is FLOOR:
        streams.path, streams.marker = "/events", b": ok"
    await streams.open_many(args.warm, args.concurrency)
    await asyncio.sleep(args.settle)
    before = rss_kib(pid)
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    warm_held, warm_signed = len(streams.held), streams.signed
    await streams.open_many(args.streams, args.concurrency)
    open_s = time.monotonic() - started
    await asyncio.sleep(args.settle)
    after = rss_kib(pid)
    cpu = cpu_seconds(pid) - cpu_before
    held = len(streams.held) - warm_held
    broadcasts = []
    # One untimed first: a process's first fan-out loads code a long-running one has.
    for i in range(args.broadcasts + 1 if args.broadcasts else 0):
        result = await streams.broadcast(publish, args.broadcast_wait)
        if i:
            broadcasts.append(result)
        await asyncio.sleep(2)
    dropped = streams.dropped
    await streams.close()
    failed = len(streams.failures) + dropped
    return {
        "streams_held": held,
        "signed_in_streams": streams.signed - warm_signed,
        "failed": failed,
        "dropped": dropped,
        "first_failure": streams.failures[0] if streams.failures else None,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": round((after - before) / held, 2) if held else None,
        "open_s": round(open_s, 1),
        "server_cpu_s": round(cpu, 2),
        "cpu_ms_per_stream": round(cpu * 1000 / args.streams, 2),
        "broadcasts": broadcasts,
    }


async def trigger(tree: Tree, token: str) -> float:
    """Publish with the tree's bench/trigger.py: its commit time."""
    python = str(tree.path / ".venv" / "bin" / "python")
    process = await asyncio.create_subprocess_exec(
        python, "bench/trigger.py", token, cwd=tree.path, env=tree.env,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return float(out.decode().split("BENCH_TS=")[1].split()[0])


def floor_publisher(port: int) -> Any:
    async def publish(token: str) -> float:
        def post() -> str:
            url = f"http://127.0.0.1:{port}/publish?message={token}"
            with urlopen(url, data=b"", timeout=60) as answer:
                return str(answer.read().decode())

        body = await asyncio.to_thread(post)
        return float(body.split("BENCH_TS=")[1].split()[0])

    return publish


def run_one(
    args: argparse.Namespace, tree: Tree, server: str, port: int, work: Path, tag: str
) -> dict[str, Any]:
    log = work / f"{tag}.log"
    if tree is FLOOR:
        command = [sys.executable, str(args.floor), str(port)]
        cwd, env = args.floor.parent, dict(os.environ)

        async def publish(token: str) -> float:
            return await floor_publisher(port)(token)
    else:
        python = str(tree.path / ".venv" / "bin" / "python")
        command, cwd, env = server_command(server, python, port), tree.path, tree.env

        async def publish(token: str) -> float:
            return await trigger(tree, token)

    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_listening(port, process, server, log)
        result = asyncio.run(measure(args, tree, port, process.pid, publish))
    finally:
        stop(process)
    # bench/settings.py logs a 500's traceback; an older tree's may not.
    result["log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
    result["log"] = str(log)
    return result


def fmt_kib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[dict[str, Any]], trees: list[Tree], servers: list[str]) -> str:
    rounds = max(r["round"] for r in rows)
    lines = [
        "| tree | server | N | signed in | "
        + " | ".join(f"KiB/stream round {i}" for i in range(1, rounds + 1))
        + " | median KiB/stream | failed | server CPU ms/stream (median) "
        + "| broadcast p99 ms, each | median p99 | / the floor's |",
        "|---|---|---|---|" + "---:|" * rounds + "---:|---:|---:|---|---:|---:|",
    ]
    floor_p99 = [
        b["p99_ms"] for r in rows if r["label"] == "floor" for b in r["broadcasts"] if "p99_ms" in b
    ]
    floor = statistics.median(floor_p99) if floor_p99 else None
    for tree in trees:
        for server in servers:
            mine = sorted(
                (r for r in rows if r["label"] == tree.label and r["server"] == server),
                key=lambda r: r["round"],
            )
            if not mine:
                continue
            kib = [r["kib_per_stream"] for r in mine if r["kib_per_stream"] is not None]
            cells = [fmt_kib(r["kib_per_stream"]) for r in mine]
            cells += ["-"] * (rounds - len(cells))
            median = fmt_kib(statistics.median(kib) if kib else None)
            cpu = statistics.median(r["cpu_ms_per_stream"] for r in mine)
            sent = [b for r in mine for b in r["broadcasts"]]
            p99 = [b["p99_ms"] for b in sent if "p99_ms" in b]
            each = "; ".join(
                f"{b['p99_ms']:,.0f}"
                if b["delivered"] == b["of"]
                else f"{b['delivered']}/{b['of']} delivered"
                for b in sent
            )
            mid = statistics.median(p99) if p99 else None
            ratio = f"{mid / floor:.2f}" if mid and floor else "-"
            signed = 0 if tree is FLOOR else mine[0]["signed_in"]
            lines.append(
                f"| {tree.label} | {server} | {mine[0]['n']:,} | {signed:.0%} | "
                + " | ".join(cells)
                + f" | **{median}** | {sum(r['failed'] for r in mine)} | {cpu:.2f} "
                + f"| {each or '-'} | {f'{mid:,.0f}' if mid else '-'} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="repeatable; default: this one")
    parser.add_argument(
        "--server",
        action="append",
        choices=("daphne", "uvicorn"),
        help="repeatable: each tree runs under each; default: daphne",
    )
    parser.add_argument("-n", "--streams", type=int, default=10000, help="default: %(default)s")
    parser.add_argument("--warm", type=int, default=100, help="default: %(default)s")
    parser.add_argument(
        "--signed-in", type=float, default=0.8, metavar="FRACTION", help="default: %(default)s"
    )
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help=f"default: enough that no user holds more than {PER_USER} streams",
    )
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=100, help="default: %(default)s")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds; default: %(default)s")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to first bytes; default: %(default)s"
    )
    parser.add_argument(
        "--alarms",
        type=json.loads,
        default={"HEARTBEAT": 3600},
        help="JSON merged into the servers' ALARMS (BENCH_ALARMS); default: heartbeats off",
    )
    parser.add_argument(
        "--broadcasts", type=int, default=0, help="alarms timed per run; default: %(default)s"
    )
    parser.add_argument(
        "--broadcast-wait", type=float, default=30.0, help="seconds per alarm at most"
    )
    parser.add_argument("--floor", type=Path, help="the load client's floor_server.py")
    parser.add_argument("--port", type=int, default=15600, help="first port; default: %(default)s")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 0 <= args.signed_in <= 1:
        parser.error("--signed-in is a fraction, 0 to 1")
    signed = math.floor((args.warm + args.streams) * args.signed_in)
    if args.users is None:
        args.users = max(1, -(-signed // PER_USER))
    limit = raise_nofile()
    # This process holds every stream's socket; the server as many again in its own.
    if args.warm + args.streams + 100 > limit:
        raise SystemExit(
            f"{args.warm + args.streams + 100} sockets needed, {limit} allowed (RLIMIT_NOFILE)"
        )
    servers = args.server or ["daphne"]
    work = Path(tempfile.mkdtemp(prefix="alarms-memory-"))
    note = f"memory-{int(time.time())}"
    print(
        f"N = {args.streams:,} over {args.warm} warm-up, {args.signed_in:.0%} signed in "
        f"({signed:,} streams, {args.users:,} users), {args.rounds} rounds; logs in {work}",
        flush=True,
    )
    trees = [
        prepare_tree(args, path.resolve(), i, work) for i, path in enumerate(args.tree or [ROOT])
    ]
    runs = [(tree, server) for tree in trees for server in servers]
    if args.floor:
        runs.insert(0, (FLOOR, "floor"))
    rows: list[dict[str, Any]] = []
    port = args.port
    for round_ in range(1, args.rounds + 1):
        for tree, server in runs if round_ % 2 else runs[::-1]:
            port += 1  # a fresh port: no TIME_WAIT left from the last run's sockets
            tag = f"r{round_}-{runs.index((tree, server))}-{server}"
            result = run_one(args, tree, server, port, work, tag)
            row = {
                "note": note,
                "label": tree.label,
                "tree": str(tree.path),
                "server": server,
                "round": round_,
                "n": args.streams,
                "warm": args.warm,
                "signed_in": args.signed_in,
                "users": args.users,
                "database": tree.env.get("DATABASE_URL", "none").split(":")[0],
                "alarms": args.alarms,
                **result,
            }
            rows.append(row)
            print(f"round {round_} {tree.label} {server}: {json.dumps(result)}", flush=True)
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            with args.json_out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    print()
    print(table(rows, ([FLOOR] if args.floor else []) + trees, ["floor", *servers]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

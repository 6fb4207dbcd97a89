"""The process-wide broker: one reader of the change journal, fanned out to every stream.

Streams never query for new alarms. The broker keeps every current alarm (live
or scheduled) in memory (``cache``), reads the journal once per wake-up
(``reads``), re-reads only the alarms that changed, and pushes encoded events
into bounded per-stream queues (``fanout``, ``subscribers``). Scheduled alarms
go live and expire on the broker's own timer: no write, and no query, happens
at ``publish_at`` or ``expires_at``. Opening a stream is ``connect``.

Subclasses decide what wakes it: ``MemoryBroker`` polls (and is woken at once by
commits in its own process); ``PostgresBroker`` listens for ``NOTIFY``.

This module stays whole at about 350 lines: it holds the broker's state and the
one loop that changes it; every other part takes that state as an argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, ClassVar, TypeVar

from django.db import connections
from django.utils import timezone

from alarms import events, runtime
from alarms.broker import fanout, operator
from alarms.broker.access import Access
from alarms.broker.cache import CachedAlarm
from alarms.broker.counters import CloseReason, Counters, Timings
from alarms.broker.loads import Loads
from alarms.broker.presence import Presence
from alarms.broker.reads import BATCH, ConnectState, Reads, Row
from alarms.broker.subscribers import AddressFull, BrokerFull, Subscriber, Subscribers
from alarms.broker.threads import QUEUED, URGENT, DatabaseQueue
from alarms.conf import get_config
from alarms.journal import session_digest

logger = logging.getLogger("alarms.broker")

T = TypeVar("T")


class BaseBroker:
    """Base class of brokers. Subclasses implement :meth:`wait_for_wake`.

    One instance runs per process (see :func:`alarms.broker.get_broker`); it
    starts on the event loop of the first stream and reads the database through
    its own small thread pool (``DB_THREADS``), so the number of database
    connections does not grow with the number of streams.
    """

    #: Database vendors this broker works with; None for any.
    vendors: ClassVar[tuple[str, ...] | None] = None

    #: Seconds the receipts are held back after a broadcast, per stream it went to
    #: (at most ``RECEIPTS_YIELD``): about what one stream's share of a broadcast
    #: costs a host in all, its server's, its proxy's and its client's (2,750
    #: streams a process in the dismissal storm: 1.4 s; ``docs/performance.md``).
    receipts_hold_per_stream: ClassVar[float] = 0.0005

    def __init__(self) -> None:
        self.config = get_config()
        self.alias: str = self.config["DATABASE"]
        self.reads = Reads(self.alias, self.config)
        self.alarms: dict[int, CachedAlarm] = {}
        self.head = 0
        self.subscribers = Subscribers()
        self.presence = Presence(self)  # who is online, for the admin (alarms.reach)
        self.access = Access(self)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=self.config["DB_THREADS"], thread_name_prefix="alarms-db"
        )
        self._db_queue = DatabaseQueue(self.config["DB_THREADS"])
        self.loads = Loads(self)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self.counters = Counters()
        self.timings = Timings()
        self._collector = runtime.CollectorHold()
        # Until when (loop time) receipts wait for this process's streams to take a
        # broadcast, and the hold after it (yield_to_delivery): since, until, streams.
        self._delivering_until = 0.0
        self._hold_since = self._hold_until = 0.0
        # Whether a broadcast's "all taken" is awaited (see _fan_out): one at a time.
        self._drain_watched = False
        self._hold_streams = 0
        self.shutting_down = False

    # -- extension points -------------------------------------------------

    @classmethod
    def check(cls) -> list[Any]:
        """System-check messages for this broker under the current settings."""
        return []

    async def wait_for_wake(self, within: float | None) -> bool:
        """Wait until something may have changed, or ``within`` seconds (the next
        scheduled publication or expiry) have passed. Return True when the
        journal should be read, False when only the clock moved."""
        raise NotImplementedError

    async def on_start(self) -> None:
        """Called once on the broker's loop before the first read."""

    async def on_stop(self) -> None:
        """Called once when the broker stops."""

    def health(self) -> dict[str, dict[str, Any]]:
        """Checks of this broker's own for ``/alarms/health/``, by name: each a
        dict with at least ``ok``."""
        return {}

    def poll_interval(self) -> float:
        """Seconds a write of another process may wait before this broker reads
        it (0 when it is woken by every write)."""
        return 0.0

    # -- lifecycle ---------------------------------------------------------

    async def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop and self._task is not None and not self._task.done():
            return
        if self.loop is not None and self.loop is not loop:
            raise RuntimeError("The alarms broker is bound to another event loop.")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._task is not None and not self._task.done():
                return
            self.loop = loop
            self._wake = asyncio.Event()
            await self.on_start()
            head, alarms = await self.read_db(self.reads.everything)
            now = timezone.now()
            for alarm in alarms.values():
                alarm.announced = alarm.live(now)
            self.alarms, self.head = alarms, head
            self._task = loop.create_task(self._run(), name="alarms-broker")
            self._install_shutdown_handler()
            logger.info(
                "broker %s started at journal #%d with %d current alarms",
                type(self).__name__,
                self.head,
                len(self.alarms),
            )

    @property
    def running(self) -> bool:
        """True while the broker's read loop runs on its event loop."""
        return self._task is not None and not self._task.done()

    def _install_shutdown_handler(self) -> None:
        """On SIGTERM or Ctrl-C, end every stream cleanly before the server's own handler runs.

        Each stream gets a last comment and a short, jittered ``retry:``, so its
        browser reconnects to another process at once and replays what it
        missed, instead of seeing a reset. The server's handler (daphne's)
        runs ``SHUTDOWN_GRACE`` seconds later, or at once on a second signal.
        Under ``runserver``'s autoreloader the streams end as the process
        exits. See :func:`alarms.runtime.install_shutdown_handlers`.
        """
        if self.loop is not None:
            runtime.install_shutdown_handlers(
                self.loop,
                self.begin_shutdown,
                float(self.config["SHUTDOWN_GRACE"]),
                drained=lambda: not self.subscribers,
            )

    def begin_shutdown(self, reason: str) -> None:
        """Refuse new streams and close the open ones: this process is going away."""
        self.shutting_down = True
        logger.info("%s: closing %d streams", reason, len(self.subscribers))
        for sub in list(self.subscribers.all):
            sub.close("shutdown")

    async def stop(self) -> None:
        self._collector.release()
        for sub in list(self.subscribers.all):
            sub.close("shutdown")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.on_stop()
        self._task = None
        await self.presence.stop()
        await self._close_connections()

    async def _close_connections(self) -> None:
        # Each database thread closes its own connections (they are thread-local).
        workers = self.config["DB_THREADS"]
        barrier = threading.Barrier(workers)

        def close() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(5)
            connections.close_all()

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, close) for _ in range(workers)))

    def wake(self) -> None:
        """Ask for a read soon. Safe to call from any thread."""
        loop, wake = self.loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- database access ---------------------------------------------------

    async def run_db(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` in the broker's database threads, dropping a broken connection.

        Calls queue for the threads behind the broker's own reads (see
        :meth:`read_db`): a storm of connects waits, delivery does not.
        """
        return await self._db_queue.run(QUEUED, self._executor, func, args)

    async def housekeeping_db(self, func: Callable[..., T], *args: Any) -> T:
        """:meth:`run_db` for the broker's own upkeep (its presence row), queued as a
        connect load is; apart from ``run_db`` so that what counts or wraps the
        connect path's trips (its tests) sees only those."""
        return await self._db_queue.run(QUEUED, self._executor, func, args)

    async def read_db(self, func: Callable[..., T], *args: Any) -> T:
        """:meth:`run_db` ahead of every queued call: the broker's own journal reads."""
        return await self._db_queue.run(URGENT, self._executor, func, args)

    # -- the loop ----------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        failures = 0
        while True:
            try:
                if await self.wait_for_wake(self._next_deadline()):
                    self._wake.clear()
                    await self.refresh()
                else:
                    self._tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                logger.exception("broker read failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)

    async def refresh(self) -> None:
        """Read the journal past ``head`` and the clock; push what changed."""
        started = time.perf_counter()
        rows, loaded, newest = await self.read_db(self.reads.changes, self.head)
        self.counters.reads += 1
        read = time.perf_counter()
        self.timings.read_seconds += read - started
        if newest is not None:
            self.timings.lag_seconds = max(0.0, (timezone.now() - newest).total_seconds())
        if rows and self.subscribers:
            self._collector.hold(self.loop, float(self.config["GC_PAUSE"]))
        while True:
            await self.access.authorise_again(rows)
            if rows:
                tests = await operator.load_tests(self, rows)
                self._apply(rows, loaded)
                operator.send_tests(self, rows, tests)
            if len(rows) < BATCH:
                break
            rows, loaded, _newest = await self.read_db(self.reads.changes, self.head)
        # Past ids that will never appear as well (a rolled-back write: reads.JournalCursor).
        self.head = max(self.head, self.reads.position)
        self._tick()
        if rows:
            done = time.perf_counter()
            self.timings.fan_out_seconds += done - read
            logger.info(
                "journal #%d: %d rows read in %.1f ms, queued to %d streams in %.1f ms",
                self.head,
                len(rows),
                (read - started) * 1000,
                len(self.subscribers),
                (done - read) * 1000,
            )

    def _apply(self, rows: list[Row], loaded: dict[int, CachedAlarm]) -> None:
        now = timezone.now()
        self.head = rows[-1][0]
        event_id = events.event_id(self.head)
        # In journal order of each alarm's last change: a replayed burst reads as written.
        changed = {a: i for i, a, kind, _u, _s in rows if kind == "alarm"}
        for alarm_id in sorted(changed, key=changed.__getitem__):
            old = self.alarms.pop(alarm_id, None)
            new = loaded.get(alarm_id)
            if new is not None:
                new.announced = new.live(now)
                self.alarms[alarm_id] = new
            self._fan_out(old, new, now, event_id)
        self.counters.events += fanout.dismissed(rows, self.subscribers.by_user, event_id)

    def _fan_out(
        self, old: CachedAlarm | None, new: CachedAlarm | None, now: datetime, event_id: str
    ) -> None:
        queued = fanout.alarm_changed(self.subscribers.all, old, new, now, event_id)
        self.counters.events += queued
        if queued and self.loop is not None:
            at, most = self.loop.time(), float(self.config["RECEIPTS_YIELD"])
            self._delivering_until = at + most
            self.hold_receipts(at, queued, most)
            if not self._drain_watched:
                self._drain_watched = True
                self.subscribers.backlog.when_empty(partial(self._drained, at, queued))

    def _drained(self, since: float, queued: int) -> None:
        """Log how long this process's streams took to take a broadcast: its part
        of an alarm's delivery, apart from the proxy's, the network's and the
        browsers' (with the journal read's time, logged above)."""
        self._drain_watched = False
        if self.loop is not None:
            logger.info(
                "broadcast to %d streams: every one took it %.1f ms after it was queued",
                queued,
                (self.loop.time() - since) * 1000,
            )

    def hold_receipts(self, now: float, streams: int, most: float) -> None:
        """Hold the receipts back for a broadcast to ``streams`` more streams.

        A new hold starts only once the receipts have run for as long as the
        last one lasted: however often alarms come, receipts get half the time.
        """
        if now >= self._hold_until:
            if now < 2 * self._hold_until - self._hold_since:
                return
            self._hold_since, self._hold_streams = now, 0
        self._hold_streams += streams
        held = min(most, self.receipts_hold_per_stream * self._hold_streams)
        self._hold_until = self._hold_since + held

    async def yield_to_delivery(self) -> None:
        """Wait, at most ``RECEIPTS_YIELD`` seconds after an alarm was queued to
        streams, until every stream has taken what it was queued, and then until
        the hold for it ends (:meth:`hold_receipts`): the receipts' path calls
        this before each receipt, so that a dismissal storm's writes do not hold
        the CPU while a broadcast is being delivered."""
        loop = self.loop
        if loop is None or loop is not asyncio.get_running_loop():
            return
        within = self._delivering_until - loop.time()
        if within > 0:
            await self.subscribers.backlog.empty(within)
        # This process's streams have it; the proxy, the clients and the other
        # processes on the same cores are still delivering it: a storm's receipts
        # (and their transactions) would take those cores from them.
        rest = self._hold_until - loop.time()
        if rest > 0:
            await asyncio.sleep(rest)

    def _tick(self) -> None:
        """Announce alarms whose time came, retract those that expired."""
        now = timezone.now()
        event_id: str | None = None
        for alarm in list(self.alarms.values()):
            expired = alarm.expires_at is not None and alarm.expires_at <= now
            if expired or (not alarm.announced and alarm.publish_at <= now):
                if event_id is None:
                    event_id = events.event_id(self.head)
                    if self.subscribers:
                        self._collector.hold(self.loop, float(self.config["GC_PAUSE"]))
                if expired:
                    del self.alarms[alarm.id]
                    self._fan_out(alarm if alarm.announced else None, None, now, event_id)
                else:
                    alarm.announced = True
                    self._fan_out(None, alarm, now, event_id)

    def _next_deadline(self) -> float | None:
        now = timezone.now()
        times = [a.publish_at for a in self.alarms.values() if not a.announced]
        times += [a.expires_at for a in self.alarms.values() if a.expires_at is not None]
        if not times:
            return None
        return max(0.0, (min(times) - now).total_seconds()) + 0.001

    # -- authorisation that follows the user (see ``access``) -------------

    def sign_out(self, sub: Subscriber, reason: CloseReason) -> None:
        """End a stream whose session no longer holds (see :meth:`Access.sign_out`)."""
        self.access.sign_out(sub, reason, timezone.now(), events.event_id(self.head))

    # -- streams -----------------------------------------------------------

    def subscribe(self, state: ConnectState, address: str = "") -> Subscriber:
        """Register a stream (on the broker's loop, after :meth:`ensure_started`)."""
        config = self.config
        if self.shutting_down:
            self.counters.refused_full += 1
            raise BrokerFull
        try:
            self.subscribers.check_room(
                address, config["MAX_STREAMS"], config["MAX_STREAMS_PER_ADDRESS"]
            )
        except AddressFull:
            self.counters.refused_address += 1
            raise
        except BrokerFull:
            self.counters.refused_full += 1
            raise
        subscribers = self.subscribers
        sub = Subscriber(
            state.viewer,
            config["QUEUE_SIZE"],
            address,
            subscribers.backlog,
            subscribers.heartbeats,
        )
        sub.dismissed = state.dismissed
        user_id = state.viewer.user_id
        if user_id is not None and state.session_key:
            sub.session_key = state.session_key
            sub.session = session_digest(state.session_key)
            sub.expires_at = state.expires_at.timestamp() if state.expires_at else None
        self.subscribers.add(sub, config["MAX_STREAMS_PER_USER"])
        try:
            self.presence.joined(sub.viewer)
            self.access.connected(sub, state.head)
        except BaseException:
            # The connect fails: no stream of it may stay behind, fanned out to forever.
            self.unsubscribe(sub)
            raise
        self.counters.connects += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        removed = self.subscribers.remove(sub)
        if removed:
            self.presence.left(sub.viewer)
        if removed and sub.closed:
            self.counters.closed(sub.closed)

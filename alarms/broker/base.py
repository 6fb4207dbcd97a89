"""The process-wide broker: one reader of the change journal, fanned out to every stream.

Streams never query for new alarms. The broker keeps every current alarm (live
or scheduled) in memory, reads the journal once per wake-up, re-reads only the
alarms that changed, and pushes encoded events into bounded per-stream queues.
Scheduled alarms go live and expire on the broker's own timer: no write, and no
query, happens at ``publish_at`` or ``expires_at``.

Subclasses decide what wakes it: ``MemoryBroker`` polls (and is woken at once by
commits in its own process); ``PostgresBroker`` listens for ``NOTIFY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from django.core.exceptions import ValidationError
from django.db import Error as DatabaseError
from django.db import connections
from django.utils import timezone

from alarms import events, runtime
from alarms.conf import get_config
from alarms.journal import session_digest
from alarms.translation import choose_language, direction
from alarms.validators import is_safe_link

logger = logging.getLogger("alarms.broker")

T = TypeVar("T")


class BrokerFull(Exception):
    """The process holds ``MAX_STREAMS`` streams already (or is shutting down)."""


class AddressFull(BrokerFull):
    """The client's address holds ``MAX_STREAMS_PER_ADDRESS`` streams already."""


@dataclass(frozen=True)
class Viewer:
    """Who a stream belongs to, as far as visibility and language go."""

    user_id: int | None = None
    is_staff: bool = False
    group_ids: frozenset[int] = frozenset()
    language: str = "en"

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None


@dataclass
class CachedAlarm:
    id: int
    level: str
    audience: str
    url: str
    publish_at: datetime
    expires_at: datetime | None
    user_ids: frozenset[int]
    group_ids: frozenset[int]
    translations: dict[str, tuple[str, str]]
    announced: bool = False
    _payloads: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, alarm: Any, *, members: bool = True) -> CachedAlarm:
        """From an ``Alarm`` with its translations (and, with ``members``, its
        users and groups) prefetched."""
        return cls(
            id=alarm.pk,
            level=alarm.level,
            audience=alarm.audience,
            url=alarm.url,
            publish_at=alarm.publish_at,
            expires_at=alarm.expires_at,
            user_ids=frozenset(u.pk for u in alarm.users.all()) if members else frozenset(),
            group_ids=frozenset(g.pk for g in alarm.groups.all()) if members else frozenset(),
            translations={t.language_code: (t.title, t.message) for t in alarm.translations.all()},
        )

    def visible_to(self, viewer: Viewer) -> bool:
        if self.audience == "everyone":
            return True
        if viewer.user_id is None:
            return False
        if self.audience == "authenticated":
            return True
        if self.audience == "staff":
            return viewer.is_staff
        return viewer.user_id in self.user_ids or not self.group_ids.isdisjoint(viewer.group_ids)

    def live(self, now: datetime) -> bool:
        return self.publish_at <= now and (self.expires_at is None or self.expires_at > now)

    def payload(self, language: str) -> dict[str, Any]:
        """The event payload for a reader of ``language``, built once per language."""
        if language not in self._payloads:
            code = choose_language(language, self.translations) or language
            title, message = self.translations.get(code, ("", ""))
            self._payloads[language] = {
                "id": self.id,
                "level": self.level,
                "title": title,
                "message": message,
                "language": code,
                "dir": direction(code),
                # Checked again here: a row written around the validators
                # (raw SQL, a migration) must not reach a browser as a link.
                "url": self.url if is_safe_link(self.url) else "",
                "published_at": self.publish_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            }
        return self._payloads[language]


class Subscriber:
    """One open stream: a bounded queue of encoded events and a reason if closed."""

    __slots__ = (
        "_queue",
        "_size",
        "_waiter",
        "address",
        "closed",
        "dismissed",
        "expires_at",
        "id",
        "session",
        "session_key",
        "tracking",
        "viewer",
    )
    _ids = itertools.count(1)

    def __init__(self, viewer: Viewer, queue_size: int, address: str = "") -> None:
        self.id = next(self._ids)
        self.viewer = viewer
        self.address = address
        self.dismissed: set[int] = set()
        # While a connecting stream awaits its journal read, the ids of alarms
        # queued to it meanwhile: its replay leaves them to the queue.
        self.tracking: set[int] | None = None
        self.closed: str | None = None
        # The session the stream was opened with (its key, to authorise the
        # stream again; its digest, to match the journal's session rows) and
        # when that session expires: the stream must not outlive it.
        self.session_key: str | None = None
        self.session = ""
        self.expires_at: float | None = None  # time.time() scale
        self._queue: list[bytes] = []
        self._size = queue_size
        self._waiter: asyncio.Future[None] | None = None

    def push(self, chunk: bytes) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._size:
            # Too slow to keep up: close it; the client reconnects and replays.
            self.close("slow")
            logger.warning(
                "stream %d dropped: %d events queued unread (slow)",
                self.id,
                self._size,
                extra={"event": "stream_slow", "stream": self.id, "address": self.address},
            )
            return
        self._queue.append(chunk)
        self._wake()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = reason
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, within: float) -> list[bytes] | None:
        """Everything queued, waiting at most ``within`` seconds; None on timeout."""
        if not self._queue and not self.closed:
            # A bare future and a timer handle: this runs for every stream on
            # every event, so no wait_for() with its extra task.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(within, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if not self._queue:
            return None
        chunks, self._queue = self._queue, []
        return chunks


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class ConnectState:
    """What a connecting stream needs from the database, loaded in one executor call."""

    viewer: Viewer
    seen: set[int]
    dismissed: set[int]
    session_key: str | None = None
    expires_at: datetime | None = None
    # The journal row the broker had read when this load began: access and
    # session rows read since then were not seen by it (see subscribe()).
    head: int = 0


# Bounds of what the broker remembers of recent access and session rows, for
# streams whose connect raced them.
_RECENT = 10_000


class BaseBroker:
    """Base class of brokers. Subclasses implement :meth:`wait_for_wake`.

    One instance runs per process (see :func:`alarms.broker.get_broker`); it
    starts on the event loop of the first stream and reads the database through
    its own small thread pool (``DB_THREADS``), so the number of database
    connections does not grow with the number of streams.
    """

    #: Database vendors this broker works with; None for any.
    vendors: ClassVar[tuple[str, ...] | None] = None

    def __init__(self) -> None:
        self.config = get_config()
        self.alias: str = self.config["DATABASE"]
        self.alarms: dict[int, CachedAlarm] = {}
        self.head = 0
        self.subscribers: set[Subscriber] = set()
        self.by_user: dict[int, deque[Subscriber]] = defaultdict(deque)
        self.by_address: dict[str, int] = defaultdict(int)
        self.by_session: dict[str, set[Subscriber]] = {}
        # The journal row of the latest access change per user, and of ended
        # sessions, kept for streams that connect while one is read.
        self._access_at: OrderedDict[int, int] = OrderedDict()
        self._sessions_ended: OrderedDict[str, int] = OrderedDict()
        self._pending_access: set[int] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=self.config["DB_THREADS"], thread_name_prefix="alarms-db"
        )
        self._db_queue = _DatabaseQueue(self.config["DB_THREADS"])
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self.stats: dict[str, int] = defaultdict(int)
        # lag_s: from the newest journal row's insert to the broker's read of it.
        self.timings: dict[str, float] = {"read_ms": 0.0, "fan_out_ms": 0.0, "lag_s": 0.0}
        self._gc_timer: asyncio.TimerHandle | None = None
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
            await self.read_db(self._load_all)
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
        loop = self.loop
        if loop is None:
            return

        def begin(reason: str) -> None:
            self.shutting_down = True
            logger.info("%s: closing %d streams", reason, len(self.subscribers))
            for sub in list(self.subscribers):
                sub.close("shutdown")

        runtime.install_shutdown_handlers(
            loop,
            begin,
            float(self.config["SHUTDOWN_GRACE"]),
            drained=lambda: not self.subscribers,
        )

    async def stop(self) -> None:
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._resume_gc()
        for sub in list(self.subscribers):
            sub.close("shutdown")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.on_stop()
        self._task = None
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
        return await self._db_queue.run(_QUEUED, self._executor, func, args)

    async def read_db(self, func: Callable[..., T], *args: Any) -> T:
        """:meth:`run_db` ahead of every queued call: the broker's own journal reads."""
        return await self._db_queue.run(_URGENT, self._executor, func, args)

    def _load_all(self) -> None:
        from alarms.models import AlarmChange

        last = AlarmChange.objects.using(self.alias).order_by("-id").values_list("id", flat=True)
        head = last.first() or 0
        alarms = self._load_alarms(None)
        now = timezone.now()
        for alarm in alarms.values():
            alarm.announced = alarm.live(now)
        self.alarms = alarms
        self.head = head

    def _load_alarms(
        self, ids: Iterable[int] | None, *, current_only: bool = True
    ) -> dict[int, CachedAlarm]:
        from alarms.models import Alarm

        qs = Alarm.objects.using(self.alias).prefetch_related("translations", "users", "groups")
        if current_only:
            qs = qs.current()
        if ids is not None:
            qs = qs.filter(pk__in=list(ids))
        return {a.pk: CachedAlarm.from_model(a) for a in qs}

    def _read_changes(self, head: int) -> tuple[list[Row], dict, datetime | None]:
        from alarms.models import AlarmChange

        found = list(
            AlarmChange.objects.using(self.alias)
            .filter(id__gt=head)
            .order_by("id")
            .values_list("id", "alarm_id", "kind", "user_id", "session", "created_at")[:10000]
        )
        rows = [row[:5] for row in found]
        newest = found[-1][5] if found else None
        changed = {row[1] for row in rows if row[2] == "alarm"}
        return rows, (self._load_alarms(changed) if changed else {}), newest

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
        rows, loaded, newest = await self.read_db(self._read_changes, self.head)
        self.stats["reads"] += 1
        read = time.perf_counter()
        if newest is not None:
            self.timings["lag_s"] = max(0.0, (timezone.now() - newest).total_seconds())
        if rows and self.subscribers:
            self._defer_gc()
        while True:
            await self._authorise_again(rows)
            if rows:
                self._apply(rows, loaded)
            if len(rows) < 10000:
                break
            rows, loaded, _newest = await self.read_db(self._read_changes, self.head)
        self._tick()
        if rows:
            done = time.perf_counter()
            self.timings["read_ms"] = (read - started) * 1000
            self.timings["fan_out_ms"] = (done - read) * 1000
            logger.info(
                "journal #%d: %d rows read in %.1f ms, queued to %d streams in %.1f ms",
                self.head,
                len(rows),
                (read - started) * 1000,
                len(self.subscribers),
                (done - read) * 1000,
            )

    def _defer_gc(self) -> None:
        """Keep the cyclic garbage collector out of the burst of writes that follows.

        With thousands of streams a full collection walks every object of every
        connection; landing in the middle of a broadcast it delays delivery by
        up to a second (measured: p99 1.6 s against 0.4 s at 5,000 streams).
        Collection resumes ``GC_PAUSE`` seconds later, once the writes are out.
        """
        pause = float(self.config["GC_PAUSE"])
        if pause <= 0 or self.loop is None or self._gc_timer is not None:
            # Already held off: the hold is never extended, or broadcasts
            # coming faster than GC_PAUSE would keep the collector off for good
            # and every reference cycle since would pile up (a leak).
            return
        if not gc.isenabled():
            return  # someone else manages the collector
        gc.disable()
        self._gc_timer = self.loop.call_later(pause, self._resume_gc)

    def _resume_gc(self) -> None:
        self._gc_timer = None
        gc.enable()

    def _apply(self, rows: list[Row], loaded: dict) -> None:
        now = timezone.now()
        self.head = rows[-1][0]
        event_id = events.format_event_id(self.head, _millis())
        # In journal order of each alarm's last change: a replayed burst reads as written.
        changed = {a: i for i, a, kind, _u, _s in rows if kind == "alarm"}
        for alarm_id in sorted(changed, key=changed.__getitem__):
            old = self.alarms.pop(alarm_id, None)
            new = loaded.get(alarm_id)
            if new is not None:
                new.announced = new.live(now)
                self.alarms[alarm_id] = new
            self._fan_out(old, new, now, event_id)
        for _i, alarm_id, kind, user_id, _s in rows:
            if kind == "dismiss" and user_id is not None:
                chunk = events.dismiss(alarm_id, event_id)
                for sub in self.by_user.get(user_id, ()):
                    sub.dismissed.add(alarm_id)
                    sub.push(chunk)
                    if sub.tracking is not None:
                        sub.tracking.add(alarm_id)
                self.stats["events"] += 1

    # -- authorisation that follows the user ------------------------------

    async def _authorise_again(self, rows: list[Row]) -> None:
        """Re-make the authorisation of every stream the journal's access and
        session rows (and streams that connected while one was read) concern,
        before the rows' alarm changes fan out with it."""
        for row_id, _a, kind, user_id, session in rows:
            if kind == "session" and session:
                _remember(self._sessions_ended, session, row_id)
                for sub in list(self.by_session.get(session, ())):
                    self.sign_out(sub, "signed_out")
            elif kind == "access" and user_id is not None:
                _remember(self._access_at, user_id, row_id)
                self._pending_access.add(user_id)
        users = {u for u in self._pending_access if u in self.by_user}
        self._pending_access.clear()
        if not users:
            return
        keys = {u: {sub.session_key or "" for sub in self.by_user[u]} for u in users}
        states = await self.read_db(self._load_access, keys, list(self.alarms))
        now = timezone.now()
        event_id = events.format_event_id(max(self.head, rows[-1][0] if rows else 0), _millis())
        for user_id in users:
            for sub in list(self.by_user.get(user_id, ())):
                state = states.get((user_id, sub.session_key or ""))
                if state is None or state.viewer.user_id != user_id:
                    self.sign_out(sub, "signed_out", now, event_id)
                else:
                    self._reauthorise(sub, state, now, event_id)
        self.stats["reauthorised"] += len(users)

    def _load_access(
        self, keys: dict[int, set[str]], alarm_ids: list[int]
    ) -> dict[tuple[int, str], ConnectState]:
        """Runs in a database thread: each session's user as Django would
        authenticate it now, with their groups and receipts. A session that no
        longer authenticates its user is missing from the result. Streams of a
        user signed in without a session (key "") are checked by the user alone."""
        found: dict[tuple[int, str], ConnectState] = {}
        for user_id, session_keys in keys.items():
            for key in session_keys:
                if key:
                    session, user = _session_user(key)
                else:
                    session, user = None, _active_user(user_id)
                if user is not None and user.pk == user_id:
                    found[(user_id, key)] = self.load_viewer(user, "", alarm_ids, session)
        return found

    def _reauthorise(
        self, sub: Subscriber, state: ConnectState, now: datetime, event_id: str
    ) -> None:
        """Give ``sub`` its user's current viewer: retract what they may no longer
        read, send what they now may (unless dismissed, or seen and not critical)."""
        new = Viewer(
            user_id=state.viewer.user_id,
            is_staff=state.viewer.is_staff,
            group_ids=state.viewer.group_ids,
            language=sub.viewer.language,
        )
        sub.expires_at = state.expires_at.timestamp() if state.expires_at else None
        sub.dismissed |= state.dismissed
        self._switch_viewer(sub, new, state.seen, now, event_id)
        sub.viewer = new  # the same user: by_user stays as it is

    def sign_out(
        self,
        sub: Subscriber,
        reason: str,
        now: datetime | None = None,
        event_id: str | None = None,
    ) -> None:
        """End a stream whose session no longer holds. What only its user could
        read is retracted first, so the page it fed shows none of it; the
        browser reconnects with what credentials it has now."""
        now = now or timezone.now()
        event_id = event_id or events.format_event_id(self.head, _millis())
        # sub.viewer stays: unsubscribe() finds the stream under its user by it.
        self._switch_viewer(sub, Viewer(language=sub.viewer.language), set(), now, event_id)
        sub.close(reason)

    def _switch_viewer(
        self, sub: Subscriber, new: Viewer, seen: set[int], now: datetime, event_id: str
    ) -> None:
        """Push to ``sub`` the difference between what its viewer and ``new`` may read."""
        old = sub.viewer
        for alarm in sorted(self.alarms.values(), key=lambda a: (a.publish_at, a.id)):
            if not (alarm.announced and alarm.live(now)):
                continue
            was, now_visible = alarm.visible_to(old), alarm.visible_to(new)
            if was and not now_visible:
                sub.push(events.retract(alarm.id, event_id))
            elif now_visible and not was and alarm.id not in sub.dismissed:
                if alarm.id in seen and alarm.level != "critical":
                    continue
                sub.push(events.alarm(alarm.payload(new.language), event_id))
            else:
                continue
            if sub.tracking is not None:
                sub.tracking.add(alarm.id)
            self.stats["events"] += 1

    def _fan_out(
        self, old: CachedAlarm | None, new: CachedAlarm | None, now: datetime, event_id: str
    ) -> None:
        encoded: dict[str, bytes] = {}
        retract: bytes | None = None
        alarm_id = new.id if new is not None else old.id if old is not None else 0
        for sub in self.subscribers:
            viewer = sub.viewer
            if new is not None and new.live(now) and new.visible_to(viewer):
                if new.id in sub.dismissed:
                    continue
                chunk = encoded.get(viewer.language)
                if chunk is None:
                    chunk = encoded[viewer.language] = events.alarm(
                        new.payload(viewer.language), event_id
                    )
                sub.push(chunk)
            elif old is not None and old.announced and old.visible_to(viewer):
                retract = retract or events.retract(old.id, event_id)
                sub.push(retract)
            else:
                continue
            if sub.tracking is not None:
                sub.tracking.add(alarm_id)
            self.stats["events"] += 1

    def _tick(self) -> None:
        """Announce alarms whose time came, retract those that expired."""
        now = timezone.now()
        event_id: str | None = None
        for alarm in list(self.alarms.values()):
            expired = alarm.expires_at is not None and alarm.expires_at <= now
            if expired or (not alarm.announced and alarm.publish_at <= now):
                if event_id is None:
                    event_id = events.format_event_id(self.head, _millis())
                    if self.subscribers:
                        self._defer_gc()
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

    # -- streams -----------------------------------------------------------

    def load_viewer(
        self,
        user: Any,
        language: str,
        alarm_ids: list[int],
        session: Any = None,
        expires_at: datetime | None = None,
    ) -> ConnectState:
        """Runs in a database thread: the viewer, their receipts and their session.

        ``expires_at``: the session's expiry if the caller read it (``prime_session``).
        """
        from alarms.models import AlarmReceipt

        if not getattr(user, "is_authenticated", False):
            return ConnectState(Viewer(language=language), set(), set())
        viewer = Viewer(
            user_id=user.pk,
            is_staff=bool(user.is_staff),
            group_ids=frozenset(user.groups.values_list("pk", flat=True)),
            language=language,
        )
        seen: set[int] = set()
        dismissed: set[int] = set()
        receipts = AlarmReceipt.objects.using(self.alias).filter(
            user_id=user.pk, alarm_id__in=alarm_ids
        )
        for alarm_id, seen_at, dismissed_at in receipts.values_list(
            "alarm_id", "seen_at", "dismissed_at"
        ):
            if seen_at:
                seen.add(alarm_id)
            if dismissed_at:
                dismissed.add(alarm_id)
        key = getattr(session, "session_key", None)
        if key and expires_at is None:
            expires_at = _session_expiry(session)
        return ConnectState(viewer, seen, dismissed, key, expires_at if key else None)

    def subscribe(self, state: ConnectState, address: str = "") -> Subscriber:
        """Register a stream (on the broker's loop, after :meth:`ensure_started`)."""
        if self.shutting_down or len(self.subscribers) >= self.config["MAX_STREAMS"]:
            self.stats["refused_full"] += 1
            raise BrokerFull
        per_address = self.config["MAX_STREAMS_PER_ADDRESS"]
        if address and per_address is not None and self.by_address[address] >= per_address:
            self.stats["refused_address"] += 1
            raise AddressFull
        sub = Subscriber(state.viewer, self.config["QUEUE_SIZE"], address)
        sub.dismissed = state.dismissed
        self.subscribers.add(sub)
        if address:
            self.by_address[address] += 1
        user_id = state.viewer.user_id
        if user_id is not None:
            mine = self.by_user[user_id]
            mine.append(sub)
            while len(mine) > self.config["MAX_STREAMS_PER_USER"]:
                mine.popleft().close("replaced")
            if state.session_key:
                sub.session_key = state.session_key
                sub.session = session_digest(state.session_key)
                sub.expires_at = state.expires_at.timestamp() if state.expires_at else None
                self.by_session.setdefault(sub.session, set()).add(sub)
                # Rows read while this stream's user was loaded were not seen by
                # that load: a session that ended then ends this stream too, and
                # an access change then is applied to it on the next read.
                if self._sessions_ended.get(sub.session, 0) > state.head:
                    sub.close("signed_out")
                if self._access_at.get(user_id, 0) > state.head:
                    self._pending_access.add(user_id)
                    self.wake()
        self.stats["connects"] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        if sub.address:
            left = self.by_address[sub.address] - 1
            if left > 0:
                self.by_address[sub.address] = left
            else:
                del self.by_address[sub.address]
        user_id = sub.viewer.user_id
        if user_id is not None and user_id in self.by_user:
            mine = self.by_user[user_id]
            with contextlib.suppress(ValueError):
                mine.remove(sub)
            if not mine:
                del self.by_user[user_id]
        if sub.session:
            same = self.by_session.get(sub.session)
            if same is not None:
                same.discard(sub)
                if not same:
                    del self.by_session[sub.session]
        if sub.closed:
            self.stats[f"closed_{sub.closed}"] += 1

    def snapshot(self, sub: Subscriber, seen: set[int]) -> list[bytes]:
        """What a fresh stream should show: live, visible, not dismissed, unseen or critical."""
        now = timezone.now()
        event_id = events.format_event_id(self.head, _millis())
        queued = sub.tracking or set()
        return [
            events.alarm(a.payload(sub.viewer.language), event_id)
            for a in self._deliverable(sub, now)
            if (a.id not in seen or a.level == "critical") and a.id not in queued
        ]

    def _deliverable(self, sub: Subscriber, now: datetime) -> list[CachedAlarm]:
        found = [
            a
            for a in self.alarms.values()
            if a.live(now) and a.visible_to(sub.viewer) and a.id not in sub.dismissed
        ]
        return sorted(found, key=lambda a: (a.publish_at, a.id))

    def read_missed(self, viewer: Viewer, since: tuple[int, int], head: int) -> Missed | None:
        """Runs in a database thread: the journal between a Last-Event-ID and ``head``."""
        from alarms.models import Alarm, AlarmChange

        seq, millis = since
        journal = AlarmChange.objects.using(self.alias)
        if seq > head:
            return None  # from another database
        if head - seq > self.config["REPLAY_MAX_ROWS"]:
            return None  # a snapshot costs less than reading that much journal
        # At the head (a reconnect storm after a restart of a proxy or a process:
        # nothing was written meanwhile) there is no journal to read.
        if seq < head:
            first = journal.order_by("id").values_list("id", flat=True).first()
            if first is not None and seq < first - 1:
                return None  # older than what is kept
        now = timezone.now()
        # The client's clock says what it saw; it cannot say it saw more than the
        # journal keeps, nor anything after now.
        floor = now - timedelta(days=self.config["JOURNAL_RETENTION_DAYS"])
        when = datetime.fromtimestamp(millis / 1000, tz=UTC)
        missed = Missed(since=min(max(when, floor), now), head=head)
        rows = (
            journal.filter(id__gt=seq, id__lte=head, kind__in=("alarm", "dismiss")).values_list(
                "alarm_id", "kind", "user_id", "detail"
            )
            if seq < head
            else ()
        )
        deleted: dict[int, str] = {}
        for alarm_id, kind, row_user, detail in rows:
            if kind == "alarm":
                missed.changed.add(alarm_id)
                if detail:
                    deleted[alarm_id] = detail
            elif row_user is not None and row_user == viewer.user_id:
                missed.dismissed.add(alarm_id)
        expired = Alarm.objects.using(self.alias).filter(
            expires_at__gt=missed.since, expires_at__lte=now
        )
        candidates = missed.changed | set(expired.values_list("pk", flat=True))
        existing: dict[int, CachedAlarm | None] = (
            dict(self._load_alarms(candidates, current_only=False)) if candidates else {}
        )
        for alarm_id, detail in deleted.items():
            existing.setdefault(alarm_id, _deleted_alarm(alarm_id, detail))

        # A retract names only an alarm this reader may have on screen: published
        # before they left, and theirs to read. Never a scheduled alarm, another
        # user's, or a deleted one whose journal row does not say it was theirs.
        def shown(alarm: CachedAlarm | None) -> bool:
            return (
                alarm is not None and alarm.publish_at <= missed.since and alarm.visible_to(viewer)
            )

        missed.retract = {i for i in candidates if shown(existing.get(i))}
        return missed

    def replay(self, sub: Subscriber, missed: Missed) -> list[bytes]:
        """Exactly what a resuming stream missed since its Last-Event-ID."""
        now = timezone.now()
        # The journal was read up to missed.head; what came after is queued to
        # the stream already (sub.tracking), with later event ids than these.
        event_id = events.format_event_id(missed.head or self.head, _millis())
        queued = sub.tracking or set()
        chunks = []
        delivered = set(queued)
        for a in self._deliverable(sub, now):
            if a.id in queued:
                continue
            if a.id in missed.changed or a.publish_at > missed.since:
                chunks.append(events.alarm(a.payload(sub.viewer.language), event_id))
            delivered.add(a.id)
        for alarm_id in sorted(missed.retract - delivered):
            chunks.append(events.retract(alarm_id, event_id))
        for alarm_id in sorted(missed.dismissed - queued):
            chunks.append(events.dismiss(alarm_id, event_id))
        return chunks


@dataclass
class Missed:
    since: datetime
    head: int = 0
    changed: set[int] = field(default_factory=set)
    dismissed: set[int] = field(default_factory=set)
    retract: set[int] = field(default_factory=set)

    def merge(self, later: Missed) -> Missed:
        """This read and a later one of the rows after it, as one read up to ``later.head``."""
        return Missed(
            since=self.since,
            head=max(self.head, later.head),
            changed=self.changed | later.changed,
            dismissed=self.dismissed | later.dismissed,
            retract=self.retract | later.retract,
        )


def _deleted_alarm(alarm_id: int, text: str) -> CachedAlarm | None:
    """A deleted alarm as far as a resume needs it, from its journal row's detail
    (``alarms.journal.deletion_detail``, as JSON)."""
    try:
        detail = json.loads(text)
        return CachedAlarm(
            id=alarm_id,
            level="",
            audience=str(detail["audience"]),
            url="",
            publish_at=datetime.fromisoformat(detail["publish_at"]),
            expires_at=None,
            user_ids=frozenset(int(u) for u in detail.get("users", ())),
            group_ids=frozenset(int(g) for g in detail.get("groups", ())),
            translations={},
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


# Priorities of the broker's database queue.
_URGENT, _QUEUED = 0, 1


class _DatabaseQueue:
    """At most ``width`` calls in the broker's database threads at once; the rest
    wait on the loop in priority order, so the broker's own journal reads go
    before any connect load that queued earlier (a connect storm must not delay
    delivery to the streams already open)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def run(
        self, priority: int, executor: ThreadPoolExecutor, func: Callable[..., T], args: Any
    ) -> T:
        loop = asyncio.get_running_loop()
        if self.busy < self.width and not self._waiting:
            self.busy += 1
        else:
            turn: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), turn))
            try:
                await turn  # the slot is ours once it resolves (see _release)
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed a slot just as the caller went away
                raise
        try:
            return await loop.run_in_executor(executor, _db_call, func, args)
        finally:
            self._release()

    def _release(self) -> None:
        self.busy -= 1
        while self._waiting and self.busy < self.width:
            _priority, _n, turn = heapq.heappop(self._waiting)
            if not turn.done():
                self.busy += 1
                turn.set_result(None)


# A journal row as the broker reads it: id, alarm id, kind, user id, session digest.
Row = tuple[int, int, str, int | None, str]


def _remember(recent: OrderedDict[Any, int], key: Any, row_id: int) -> None:
    recent[key] = row_id
    recent.move_to_end(key)
    while len(recent) > _RECENT:
        recent.popitem(last=False)


def _session_user(session_key: str) -> tuple[Any, Any]:
    """The session and the user it authenticates now, as ``django.contrib.auth.get_user``
    decides it (the session exists and has not expired, its backend is still
    configured and still returns the user, its hash matches the user's
    password), but without its side effects: no flush, no new key, which would
    sign the browser out or leave it with a key it was never sent."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )
    from django.utils.crypto import constant_time_compare

    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValueError, TypeError, ValidationError):
        return session, None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return session, None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return session, user
    stored = session.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash()]
    hashes += list(getattr(user, "get_session_auth_fallback_hash", list)())
    if stored and any(constant_time_compare(stored, h) for h in hashes):
        return session, user
    return session, None


def _active_user(user_id: int) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model()._default_manager.filter(pk=user_id).first()
    return user if user is not None and getattr(user, "is_active", True) else None


def prime_session(session: Any) -> datetime | None:
    """Load a database session and its stored expiry in one query; the expiry, or None.

    Django's database engines read the data and then, for the stream, the
    expiry again (``_session_expiry``): two queries per signed-in connect. This
    reads both, and hands the data to the session as its own ``load()`` would
    (``runtime.set_session_data``). None, and nothing loaded, for another
    engine, no key, or a session that is gone or expired: the session's own
    ``load()`` then decides, as before.
    """
    model = getattr(type(session), "get_model_class", None)
    key = getattr(session, "session_key", None)
    if model is None or not key or runtime.session_loaded(session):
        return None
    row = (
        model()
        .objects.filter(session_key=key, expire_date__gt=timezone.now())
        .values_list("session_data", "expire_date")
        .first()
    )
    if row is None:
        return None
    runtime.set_session_data(session, session.decode(row[0]))
    return row[1]


def _session_expiry(session: Any) -> datetime | None:
    """When ``session`` stops authenticating: its stored expiry where the engine
    keeps one in the database, else the latest it can be (expiry age from now)."""
    model = getattr(type(session), "get_model_class", None)
    if model is not None:
        stored = (
            model()
            .objects.filter(session_key=session.session_key)
            .values_list("expire_date", flat=True)
            .first()
        )
        if stored is not None:
            return stored
    try:
        return session.get_expiry_date()
    except Exception:  # an engine of the project's own that cannot say
        return None


def _millis() -> int:
    return int(time.time() * 1000)


def _db_call(func: Callable[..., T], args: tuple[Any, ...]) -> T:
    # These threads keep their connections for the life of the process. One the
    # server dropped (a restart, an idle timeout) fails once; it is closed and
    # the call made again on a fresh connection.
    try:
        return func(*args)
    except DatabaseError:
        broken = False
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.is_usable():
                conn.close()
                broken = True
        if not broken:
            raise
    return func(*args)


def broker_path() -> str:
    path = get_config()["BROKER"]
    if path:
        return str(path)
    from django.conf import settings

    alias = get_config()["DATABASE"]
    engine = settings.DATABASES.get(alias, {}).get("ENGINE", "")
    if "postgresql" in engine or "postgis" in engine:
        return "alarms.broker.postgres.PostgresBroker"
    return "alarms.broker.memory.MemoryBroker"

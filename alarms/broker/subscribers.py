"""Open streams: each a bounded queue of encoded events, indexed by user, address and session."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Callable

from alarms.broker.cache import Viewer
from alarms.broker.counters import CloseReason

logger = logging.getLogger("alarms.broker")


class BrokerFull(Exception):
    """The process holds ``MAX_STREAMS`` streams already (or is shutting down)."""


class AddressFull(BrokerFull):
    """The client's address holds ``MAX_STREAMS_PER_ADDRESS`` streams already."""


class Backlog:
    """How many streams hold events their generator has not taken yet.

    After a broadcast, the receipts' path waits until this falls to 0
    (:meth:`BaseBroker.yield_to_delivery`): recording a dismissal can wait a
    moment, showing an alarm cannot. Kept by :class:`Subscriber` as its queue
    fills and empties, so knowing it costs nothing per stream.
    """

    __slots__ = ("_waiters", "count")

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[asyncio.Future[None]] = []

    def rise(self) -> None:
        self.count += 1

    def fall(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self.count = 0
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                _resolve(waiter)

    def when_empty(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once no stream holds an untaken event:
        at once if none does. No timer, no task: nothing is left pending when
        the loop closes before the streams drain."""
        if self.count <= 0:
            callback()
            return
        waiter = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda _waiter: callback())
        self._waiters.append(waiter)

    async def empty(self, within: float) -> None:
        """Wait until no stream holds an untaken event, or ``within`` seconds."""
        if self.count <= 0 or within <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(within, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class Heartbeats:
    """Ends the waits of streams whose time ran out: one loop timer per tick that
    has any, not one per stream per wait.

    A stream waits for its next event at most until its next heartbeat. With a
    ``call_later`` per wait, every event cost every stream a timer made and
    cancelled: a push onto the loop's heap, whose every comparison is a Python
    call (``TimerHandle.__lt__``), about 10 ms per 1,000 streams per broadcast.
    Here a wait that moves to another tick is two set operations, and a wait
    ended by an event leaves nothing to undo. A wait ends up to ``TICK`` late;
    waits shorter than ``SHORT`` keep an exact timer of their own.
    """

    TICK = 0.25
    SHORT = 1.0

    __slots__ = ("_ticks",)

    def __init__(self) -> None:
        # Tick number -> the streams whose wait ends by then.
        self._ticks: dict[int, set[Subscriber]] = {}

    def add(self, sub: Subscriber, loop: asyncio.AbstractEventLoop, within: float) -> None:
        tick = math.ceil((loop.time() + within) / self.TICK)
        if sub._tick == tick:
            return
        self.discard(sub)
        streams = self._ticks.get(tick)
        if streams is None:
            streams = self._ticks[tick] = set()
            loop.call_at(tick * self.TICK, self._due, tick)
        streams.add(sub)
        sub._tick = tick

    def discard(self, sub: Subscriber) -> None:
        tick = sub._tick
        if tick is not None:
            sub._tick = None
            streams = self._ticks.get(tick)
            if streams is not None:
                streams.discard(sub)

    def _due(self, tick: int) -> None:
        for sub in self._ticks.pop(tick, ()):
            sub._tick = None
            sub._wake()  # a stream not waiting now has nothing to wake


class Subscriber:
    """One open stream: a bounded queue of encoded events and a reason if closed."""

    __slots__ = (
        "_queue",
        "_size",
        "_tick",
        "_waiter",
        "address",
        "backlog",
        "closed",
        "dismissed",
        "expires_at",
        "heartbeats",
        "id",
        "session",
        "session_key",
        "tracking",
        "viewer",
    )
    _ids = itertools.count(1)

    def __init__(
        self,
        viewer: Viewer,
        queue_size: int,
        address: str = "",
        backlog: Backlog | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self.id = next(self._ids)
        self.viewer = viewer
        self.address = address
        self.dismissed: set[int] = set()
        # While a connecting stream awaits its journal read, the ids of alarms
        # queued to it meanwhile: its replay leaves them to the queue.
        self.tracking: set[int] | None = None
        self.closed: CloseReason | None = None
        # The session the stream was opened with (its key, to authorise the
        # stream again; its digest, to match the journal's session rows) and
        # when that session expires: the stream must not outlive it.
        self.session_key: str | None = None
        self.session = ""
        self.expires_at: float | None = None  # time.time() scale
        self._queue: list[bytes] = []
        self._size = queue_size
        self._waiter: asyncio.Future[None] | None = None
        # Counted in while its queue holds events (None once it left the broker).
        self.backlog = backlog
        # Where its waits are timed (None: a timer per wait), and its tick there.
        self.heartbeats = heartbeats
        self._tick: int | None = None

    def push(self, chunk: bytes, alarm_id: int | None = None) -> None:
        """Queue ``chunk``; ``alarm_id`` names the alarm it is about, for a
        connect in progress (``tracking``)."""
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
        if not self._queue and self.backlog is not None:
            self.backlog.rise()
        self._queue.append(chunk)
        if alarm_id is not None and self.tracking is not None:
            self.tracking.add(alarm_id)
        self._wake()

    def close(self, reason: CloseReason) -> None:
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
            # A bare future, timed by the heartbeats' ticks: this runs for every
            # stream on every event, so no wait_for() with its extra task.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            heartbeats = self.heartbeats
            timer = None
            if heartbeats is not None and within >= heartbeats.SHORT:
                heartbeats.add(self, loop, within)
            else:
                if heartbeats is not None:
                    heartbeats.discard(self)  # a longer wait's tick must not end this one
                timer = loop.call_later(within, _resolve, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None
        if not self._queue:
            return None
        chunks, self._queue = self._queue, []
        if self.backlog is not None:
            self.backlog.fall()
        return chunks

    def leave(self) -> None:
        """Stop counting in the backlog: the stream left the broker."""
        if self._queue and self.backlog is not None:
            self.backlog.fall()
        self.backlog = None
        if self.heartbeats is not None:
            self.heartbeats.discard(self)
            self.heartbeats = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscribers:
    """Every open stream of the process, and the indexes the broker looks them up by."""

    def __init__(self) -> None:
        self.all: set[Subscriber] = set()
        # A list, not a deque: a user has a few streams (MAX_STREAMS_PER_USER), and an
        # empty deque alone is 600 bytes, held as long as any of them is open.
        self.by_user: dict[int, list[Subscriber]] = defaultdict(list)
        self.by_address: dict[str, int] = defaultdict(int)
        # By session digest (``alarms.journal.session_digest``).
        self.by_session: dict[str, set[Subscriber]] = {}
        self.backlog = Backlog()
        self.heartbeats = Heartbeats()

    def __len__(self) -> int:
        return len(self.all)

    def __contains__(self, sub: object) -> bool:
        return sub in self.all

    def check_room(self, address: str, max_streams: int, per_address: int | None) -> None:
        """Raise :class:`BrokerFull` or :class:`AddressFull` if one more stream may not open."""
        if len(self.all) >= max_streams:
            raise BrokerFull
        if address and per_address is not None and self.by_address[address] >= per_address:
            raise AddressFull

    def add(self, sub: Subscriber, per_user: int) -> None:
        """Index ``sub``; past ``per_user`` streams of its user, the oldest is replaced."""
        self.all.add(sub)
        if sub.address:
            self.by_address[sub.address] += 1
        user_id = sub.viewer.user_id
        if user_id is not None:
            mine = self.by_user[user_id]
            mine.append(sub)
            while len(mine) > per_user:
                mine.pop(0).close("replaced")
        if sub.session:
            self.by_session.setdefault(sub.session, set()).add(sub)

    def remove(self, sub: Subscriber) -> bool:
        """Forget ``sub``; False if it was not here (removing twice is harmless)."""
        if sub not in self.all:
            return False
        self.all.discard(sub)
        sub.leave()
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
        return True

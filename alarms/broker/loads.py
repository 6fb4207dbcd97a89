"""Connect loads in batches: the connects of a storm read the database together.

Each connect needs its session, user, groups and receipts, and, resuming, what
it missed. Loaded one by one that is five queries a connect, one after another
in the broker's database thread, each built by the ORM and each a round trip.
Here the connects that arrive while a load is in flight (or in the same turn of
the loop) wait for it and then go together, up to ``LOAD_BATCH`` in one call to
the database thread: a few queries for them all (``Reads.viewers``,
``Reads.missed_many``). A lone connect goes at once, as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alarms.broker.reads import LOAD_BATCH, ConnectState, Missed, Reads, Resume
from alarms.broker.sessions import Login

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker
    from alarms.broker.cache import Viewer

Loaded = tuple[ConnectState, Missed | None]


@dataclass(eq=False)
class Load:
    """One connect's load: who the reader is (``login``), or who they are known
    to be (``viewer``), and what they missed since ``since`` up to ``head``
    (None: the journal row the broker had reached when the batch left)."""

    login: Login | None
    language: str
    since: tuple[int, int] | None = None
    viewer: Viewer | None = None
    head: int | None = None
    #: ``language`` was asked for (``?lang=``): it wins over a stored one.
    chosen: bool = False
    future: asyncio.Future[Loaded] = field(init=False)


class Loads:
    """The broker's batcher of connect loads (one per broker, on its loop)."""

    def __init__(self, broker: BaseBroker) -> None:
        self.broker = broker
        self._waiting: deque[Load] = deque()
        self._running = 0  # batches on their way, at most DB_THREADS
        self._tasks: set[asyncio.Task[None]] = set()  # held, or they may be collected

    async def connect(
        self, request: Any, language: str, since: tuple[int, int] | None, chosen: bool = False
    ) -> Loaded:
        """The reader of ``request`` and, resuming, what they missed up to the head."""
        login = Login(session=getattr(request, "session", None), request=request)
        return await self._submit(Load(login, language, since, chosen=chosen))

    async def missed(self, viewer: Viewer, since: tuple[int, int], head: int) -> Missed | None:
        """What ``viewer`` missed between ``since`` and ``head`` (see ``Reads.missed``)."""
        _state, missed = await self._submit(Load(None, viewer.language, since, viewer, head))
        return missed

    async def _submit(self, load: Load) -> Loaded:
        loop = asyncio.get_running_loop()
        load.future = loop.create_future()
        self._waiting.append(load)
        if self._running < self.broker.config["DB_THREADS"]:
            # It starts on the loop's next turn: connects of this turn go with it.
            self._running += 1
            task = loop.create_task(self._drain(), name="alarms-loads")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A connect that goes away cancels its future; the batch leaves it out.
        return await load.future

    async def _drain(self) -> None:
        try:
            await self._batches()
        finally:
            # With nothing awaited since the queue was found empty: a load queued
            # from now on starts a batch of its own.
            self._running -= 1

    async def _batches(self) -> None:
        broker = self.broker
        while self._waiting:
            batch: list[Load] = []
            while self._waiting and len(batch) < LOAD_BATCH:
                load = self._waiting.popleft()
                if not load.future.done():
                    batch.append(load)
            if not batch:
                continue
            try:
                # The ids and the head as they are when the batch leaves the loop.
                results = await broker.run_db(
                    load_batch, broker.reads, batch, list(broker.alarms), broker.head
                )
            except asyncio.CancelledError:
                for load in batch:
                    load.future.cancel()
                raise
            except Exception as exc:
                for load in batch:
                    if not load.future.done():
                        load.future.set_exception(exc)
                continue
            for load, result in zip(batch, results, strict=True):
                if load.future.done():
                    continue
                if isinstance(result, Exception):
                    load.future.set_exception(result)
                else:
                    load.future.set_result(result)


def load_batch(
    reads: Reads, batch: list[Load], alarm_ids: list[int], head: int
) -> list[Loaded | Exception]:
    """In a database thread: every load of ``batch``, in a few queries for them all.

    Readers come from ``Reads.viewers``; what the resuming ones missed from
    ``Reads.missed_many``, read up to ``head`` (or a load's own). Each state's
    ``head`` is the journal row the load began at (``BaseBroker.subscribe``).
    """
    logins = [load for load in batch if load.login is not None]
    states = reads.viewers(
        [load.login for load in logins if load.login is not None],
        [load.language for load in logins],
        alarm_ids,
        chosen=[load.chosen for load in logins],
    )
    state_of: dict[int, ConnectState | Exception] = {
        id(load): state for load, state in zip(logins, states, strict=True)
    }
    resumes: list[Resume] = []
    resuming: list[Load] = []
    for load in batch:
        state = state_of.get(id(load))
        viewer = load.viewer if state is None else getattr(state, "viewer", None)
        if load.since is not None and viewer is not None:
            resumes.append((viewer, load.since, head if load.head is None else load.head))
            resuming.append(load)
    missed_of = {
        id(load): missed for load, missed in zip(resuming, reads.missed_many(resumes), strict=True)
    }
    results: list[Loaded | Exception] = []
    for load in batch:
        state = state_of.get(id(load))
        if isinstance(state, Exception):
            results.append(state)
            continue
        if state is None:  # a later read of a known reader: only what they missed
            assert load.viewer is not None
            state = ConnectState(load.viewer, set(), set())
        state.head = head
        results.append((state, missed_of.get(id(load))))
    return results

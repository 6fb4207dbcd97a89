"""The broker's database threads: a few, shared by every stream, with its own reads first."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import Error as DatabaseError
from django.db import connections

T = TypeVar("T")

# Priorities of the queue.
URGENT, QUEUED = 0, 1


class DatabaseQueue:
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
            return await loop.run_in_executor(executor, db_call, func, args)
        finally:
            self._release()

    def _release(self) -> None:
        self.busy -= 1
        while self._waiting and self.busy < self.width:
            _priority, _n, turn = heapq.heappop(self._waiting)
            if not turn.done():
                self.busy += 1
                turn.set_result(None)


def db_call(func: Callable[..., T], args: tuple[Any, ...]) -> T:
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

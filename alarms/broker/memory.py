from __future__ import annotations

import asyncio
import contextlib

from alarms.broker.base import BaseBroker


class MemoryBroker(BaseBroker):
    """For one process, or SQLite: woken at once by commits in this process, and
    polling the journal every ``POLL_INTERVAL`` seconds for writes from others
    (a ``send_alarm`` command, a second server process)."""

    async def wait_for_wake(self, within: float | None) -> bool:
        assert self._wake is not None
        poll = float(self.config["POLL_INTERVAL"])
        # On PostgreSQL a pending gap in the journal is read again sooner than the
        # poll (JournalCursor.recheck_in); on SQLite there are no gaps.
        recheck = self.reads.recheck_in()
        if recheck is not None:
            poll = min(poll, recheck)
        # asyncio.timeout, not wait_for(): on Python 3.11 wait_for() swallows a
        # cancellation that comes as the event is set, and stop() then waits for
        # a read loop that never ends.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll if within is None else min(within, poll)):
                await self._wake.wait()
        return True  # each timeout is a poll

    def poll_interval(self) -> float:
        return float(self.config["POLL_INTERVAL"])

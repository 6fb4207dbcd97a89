from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from django.db import connections

from alarms import runtime
from alarms.broker.base import BaseBroker

logger = logging.getLogger("alarms.broker")


class PostgresBroker(BaseBroker):
    """For PostgreSQL: woken by ``NOTIFY`` on one dedicated async connection.

    The journal writers notify in the same transaction as the write, so a
    notification means a committed row. When the listening connection is lost
    the listener reconnects with backoff and wakes the broker, which reads the
    journal from its last position: nothing written meanwhile is missed. While
    idle it makes no query at all (unless ``SAFETY_POLL_INTERVAL`` is set); while
    a gap in the journal is pending it reads again every ``GAP_RECHECK`` seconds
    or so (``alarms.broker.reads.JournalCursor``).
    """

    vendors = ("postgresql",)

    def __init__(self) -> None:
        super().__init__()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.listen_connection: psycopg.AsyncConnection[Any] | None = None
        self.listening_since_start = False

    @classmethod
    def check(cls) -> list[Any]:
        from django.core.checks import Error

        from alarms.conf import get_config

        alias = get_config()["DATABASE"]
        if alias in connections and connections[alias].vendor != "postgresql":
            return [
                Error(
                    f"PostgresBroker needs a PostgreSQL database; {alias!r} is "
                    f"{connections[alias].vendor}.",
                    hint="Use alarms.broker.memory.MemoryBroker, or leave ALARMS['BROKER'] "
                    "unset to choose by database.",
                    id="alarms.E005",
                )
            ]
        if alias in connections and not hasattr(connections[alias], "get_connection_params"):
            from django.core.checks import Warning

            return [
                Warning(
                    "Django's PostgreSQL backend has no get_connection_params(): the "
                    "broker cannot open its listening connection.",
                    hint="See alarms.runtime.listen_params; please report it.",
                    id="alarms.W003",
                )
            ]
        return []

    async def on_start(self) -> None:
        # A start whose first read failed is retried by the next stream; the
        # listener it began reconnects by itself and must not get a twin.
        if self._listener is None or self._listener.done():
            self.listening = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="alarms-listen"
            )
        # Listen before the first read: a write between the two is then seen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 10)

    async def on_stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def refresh(self) -> None:
        try:
            await super().refresh()
        except Exception:
            # The journal past ``head`` is still unread, and this broker does not
            # poll: without a wake-up of its own, what the failed read was for
            # (the catch-up after a reconnect, say) would wait for the next write.
            # The read loop's backoff still spaces the attempts.
            self.wake()
            raise

    def health(self) -> dict[str, dict[str, Any]]:
        conn = self.listen_connection
        connected = conn is not None and not conn.closed
        listening = self.listening.is_set()
        check = {"ok": listening and connected, "listening": listening, "connected": connected}
        return {"listener": check}

    async def wait_for_wake(self, within: float | None) -> bool:
        assert self._wake is not None
        # A read without a NOTIFY: the safety poll, if set, and while a gap in
        # the journal is pending, its re-check (a rollback notifies nobody).
        timers = (self.idle_poll(), self.reads.recheck_in())
        read_in = min((t for t in timers if t is not None), default=None)
        poll = read_in is not None and (within is None or read_in <= within)
        try:
            # Not wait_for(): see MemoryBroker.wait_for_wake.
            async with asyncio.timeout(read_in if poll else within):
                await self._wake.wait()
        except TimeoutError:
            return poll  # a timer for the schedule needs no query
        return True

    def idle_poll(self) -> float | None:
        """Seconds between reads while nothing wakes the broker; None: no reads."""
        value = self.config["SAFETY_POLL_INTERVAL"]
        return None if value is None else float(value)

    def _conninfo(self) -> dict[str, Any]:
        return runtime.listen_params(connections[self.alias])

    async def _listen(self) -> None:
        failures = 0
        channel = self.config["CHANNEL"]
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**self._conninfo())
                self.listen_connection = conn
                async with conn:
                    await conn.execute(
                        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
                    )
                    if failures:
                        logger.warning("listening again on %r after %d failures", channel, failures)
                    failures = 0
                    if self.listening_since_start:
                        # Catch up with whatever was written while not listening.
                        self.wake()
                    self.listening_since_start = True
                    self.listening.set()
                    async for _notify in conn.notifies():
                        self.counters.notifications += 1
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                logger.warning("listen connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            finally:
                self.listen_connection = None

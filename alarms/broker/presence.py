"""Who this process has streams open for: counted as streams come and go, published as one row.

The admin shows an operator how many readers of an alarm's audience are online
now, per language, across every process (``alarms.reach``). Each broker keeps
its share in memory, updated in O(1) when a stream subscribes or leaves (no
walk over the streams, no query per stream), and writes it to its own
``AlarmPresence`` row: at most every ``PRESENCE_INTERVAL`` seconds, only when it
changed, and otherwise a touch of the row's time every third of
``PRESENCE_TTL`` while streams are open, so that the rows of a process that
died age out. A broker with no stream writes nothing (its row is deleted when
its last stream leaves, and at its stop).

What a row holds per language: the number of anonymous streams and the sorted
ids of the signed-in users with a stream in it. Whether a user is staff, or in
a group, is read by the admin when it counts (one query for them all), so that
a change of groups needs no new row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from alarms.broker.cache import Viewer

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

logger = logging.getLogger("alarms.broker")

#: The version of the data format, for a reader of rows written by another release.
VERSION = 1


def process_name() -> str:
    """This process, as its presence row names it: host, pid and a random part (a
    pid is reused after a restart, and two brokers in one process are tests)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class Presence:
    """This broker's streams by language and user, and the writes of its row."""

    def __init__(self, broker: BaseBroker) -> None:
        self.broker = broker
        self.process = process_name()
        self.anonymous: Counter[str] = Counter()
        # language -> user id -> streams of that user in that language
        self.users: dict[str, Counter[int]] = {}
        self.streams = 0
        #: Whether the counts differ from the row last written.
        self.changed = False
        self.writes = 0  # rows written (not touches), for the tests and the bench
        self._row = False  # whether our row exists
        # The next write or touch, and its loop time: uvloop's call_at gives a
        # time already past a plain Handle, which has no when().
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._written_at = float("-inf")  # loop time of the last write or touch
        self._stopped = False

    # -- counting, on the broker's loop ------------------------------------

    def joined(self, viewer: Viewer) -> None:
        if viewer.user_id is None:
            self.anonymous[viewer.language] += 1
        else:
            self.users.setdefault(viewer.language, Counter())[viewer.user_id] += 1
        self.streams += 1
        self._changed()

    def left(self, viewer: Viewer) -> None:
        language = viewer.language
        if viewer.user_id is None:
            self.anonymous[language] -= 1
            if self.anonymous[language] <= 0:
                del self.anonymous[language]
        else:
            users = self.users.get(language)
            if users is not None:
                users[viewer.user_id] -= 1
                if users[viewer.user_id] <= 0:
                    del users[viewer.user_id]
                if not users:
                    del self.users[language]
        self.streams -= 1
        self._changed()

    def data(self) -> dict[str, Any]:
        """What the row says: per language, anonymous streams and signed-in users."""
        languages = set(self.anonymous) | set(self.users)
        return {
            "v": VERSION,
            "languages": {
                language: {
                    "anonymous": self.anonymous.get(language, 0),
                    "users": sorted(self.users.get(language, ())),
                }
                for language in sorted(languages)
            },
        }

    # -- writing the row ---------------------------------------------------

    def _changed(self) -> None:
        self.changed = True
        self._schedule()

    def _schedule(self) -> None:
        loop = self.broker.loop
        if self._stopped or loop is None or self._task is not None:
            return  # a write under way schedules the next when it ends
        config = self.broker.config
        if self.changed:
            delay = float(config["PRESENCE_INTERVAL"])
        elif self.streams:
            delay = float(config["PRESENCE_TTL"]) / 3
        else:
            return
        at = max(self._written_at + delay, loop.time())
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()  # a touch was due later than this change's write
        self._timer = loop.call_at(at, self._fire)
        self._timer_at = at

    def _fire(self) -> None:
        self._timer = None
        loop = self.broker.loop
        if loop is not None and not self._stopped:
            self._task = loop.create_task(self._write(), name="alarms-presence")

    async def _write(self) -> None:
        broker = self.broker
        try:
            if self.changed:
                self.changed = False
                if self.streams:
                    # Serialised on the loop (the counts change only here), written in a thread.
                    text = json.dumps(self.data(), separators=(",", ":"))
                    await broker.housekeeping_db(
                        write, broker.alias, self.process, text, timezone.now()
                    )
                    self._row = True
                    self.writes += 1
                elif self._row:
                    await broker.housekeeping_db(delete, broker.alias, self.process)
                    self._row = False
            elif self.streams and not await broker.housekeeping_db(
                touch, broker.alias, self.process, timezone.now()
            ):
                self.changed = True  # our row was deleted (a prune, a flush): write it again
        except asyncio.CancelledError:
            raise
        except Exception:
            self.changed = True
            logger.exception("could not write this process's presence; retrying")
        finally:
            assert broker.loop is not None
            self._written_at = broker.loop.time()
            self._task = None
            self._schedule()

    async def stop(self) -> None:
        """No more writes; delete our row (the process is going away)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.broker.housekeeping_db(delete, self.broker.alias, self.process)


def write(alias: str, process: str, text: str, now: datetime) -> None:
    from alarms.models import AlarmPresence

    rows = AlarmPresence.objects.using(alias)
    if not rows.filter(process=process).update(data=text, updated_at=now):
        rows.create(process=process, data=text, updated_at=now)


def touch(alias: str, process: str, now: datetime) -> bool:
    from alarms.models import AlarmPresence

    return bool(AlarmPresence.objects.using(alias).filter(process=process).update(updated_at=now))


def delete(alias: str, process: str) -> None:
    from alarms.models import AlarmPresence

    AlarmPresence.objects.using(alias).filter(process=process).delete()

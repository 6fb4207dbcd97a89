"""An operator's test send (``alarms.operator``), from the journal to that operator's streams.

A ``test`` journal row carries the payloads in its detail. Each broker sends
them to the streams of the row's user on its process, and to no other stream;
a broker with no stream of that user reads nothing for it. The row is never
replayed: a connect's snapshot is built from the alarms in memory, and a
resume's read of what it missed takes only ``alarm`` and ``dismiss`` rows
(``Reads.missed_many``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from alarms import events
from alarms.broker.reads import Row
from alarms.broker.subscribers import Subscriber

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

logger = logging.getLogger("alarms.broker")

TEST = "test"


async def load_tests(broker: BaseBroker, rows: list[Row]) -> dict[int, str]:
    """The details of the test rows among ``rows`` whose user has a stream here
    (no query when there is none)."""
    by_user = broker.subscribers.by_user
    wanted = [row[0] for row in rows if row[2] == TEST and row[3] in by_user]
    if not wanted:
        return {}
    return await broker.read_db(load_details, broker.alias, wanted)


def send_tests(broker: BaseBroker, rows: list[Row], details: Mapping[int, str]) -> int:
    """Send the tests of ``details`` to their users' streams here; how many events.

    Called right after the same read's alarm changes are queued, with no await
    between: a test comes after the alarm events of its read, not between them.
    """
    if not details:
        return 0
    queued = fan_out(rows, details, broker.subscribers.by_user)
    broker.counters.events += queued
    return queued


def load_details(alias: str, ids: list[int]) -> dict[int, str]:
    """In a database thread: the detail of each test row (one query)."""
    from alarms.models import AlarmChange

    rows = AlarmChange.objects.using(alias).filter(id__in=ids, kind=TEST)
    return dict(rows.values_list("id", "detail"))


def fan_out(
    rows: Iterable[Row], details: Mapping[int, str], by_user: Mapping[int, Iterable[Subscriber]]
) -> int:
    """Queue each test's payloads to every stream of its user (and only theirs)."""
    queued = 0
    for row_id, _alarm, kind, user_id, _session in rows:
        if kind != TEST or user_id is None or row_id not in details:
            continue
        chunks = [events.test(payload) for payload in payloads(row_id, details[row_id])]
        for sub in by_user.get(user_id, ()):
            for chunk in chunks:
                sub.push(chunk)
                queued += 1
    return queued


def payloads(row_id: int, detail: str) -> list[dict[str, Any]]:
    """The test's payloads as sent: each with its string id and ``"test": true``."""
    try:
        found = json.loads(detail)
    except ValueError:
        logger.warning("test row %d: its detail is not JSON; nothing sent", row_id)
        return []
    if not isinstance(found, list):
        return []
    return [
        {**p, "id": f"test-{row_id}-{p.get('language', '')}", "test": True}
        for p in found
        if isinstance(p, dict)
    ]

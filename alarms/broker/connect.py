"""Opening a stream: who the reader is, what they missed, and the first bytes they get.

A fresh stream gets a snapshot: every live alarm it may read, not dismissed,
and unseen (critical alarms even when seen). A stream that resumes with a
``Last-Event-ID`` gets exactly what changed since: the alarms changed or
published meanwhile, a ``retract`` for each it may have on screen that is
gone, and the dismissals made elsewhere. The journal is read up to the head
the broker had reached when the connect began; what the broker fans out
after that reaches the new stream's queue (``Subscriber.tracking`` keeps the
replay from sending it twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from alarms import events
from alarms.broker.cache import CachedAlarm, in_order
from alarms.broker.reads import ConnectState, Missed
from alarms.broker.subscribers import Subscriber

if TYPE_CHECKING:
    from django.http import HttpRequest

    from alarms.broker.base import BaseBroker


@dataclass
class Connection:
    """An open stream and the bytes it starts with."""

    sub: Subscriber
    first: list[bytes]
    state: ConnectState
    resumed: bool


async def connect(
    broker: BaseBroker,
    request: HttpRequest,
    language: str,
    since: tuple[int, int] | None,
    address: str = "",
    *,
    chosen: bool = False,
) -> Connection:
    """Open a stream for ``request``'s user (on the broker's loop, once started).

    The stream speaks ``language`` when ``chosen`` (``?lang=``); else the
    user's stored language, if any, read with the user; else ``language``.

    Raises :class:`~alarms.broker.subscribers.BrokerFull` or ``AddressFull``
    when the process or the address holds as many streams as it may.
    """
    # One trip to the database threads, with the connects that came together:
    # the viewer, then what it missed up to the head as it was when the batch
    # left the loop (each trip costs a wake-up of the loop).
    state, missed = await broker.loads.connect(request, language, since, chosen)
    loaded_at = state.head
    sub = broker.subscribe(state, address)
    if since is not None:
        # Alarms fanned out from now on reach the queue; the replay must not
        # send them a second time.
        sub.tracking = set()
    head = broker.head
    try:
        if since is not None and missed is not None and head > loaded_at:
            # Rows fanned out between the load and the subscription reached
            # neither: read them too.
            later = await broker.loads.missed(state.viewer, (loaded_at, since[1]), head)
            missed = missed.merge(later) if later is not None else None
        if missed is not None:
            first = replay(broker, sub, missed)
            broker.counters.resumes += 1
        else:
            first = snapshot(broker, sub, state.seen)
            if since is not None:
                broker.counters.resumes_snapshot += 1
    except BaseException:
        broker.unsubscribe(sub)
        raise
    finally:
        sub.tracking = None
    return Connection(sub, first, state, missed is not None)


def snapshot(broker: BaseBroker, sub: Subscriber, seen: set[int]) -> list[bytes]:
    """What a fresh stream should show: live, visible, not dismissed, unseen or critical."""
    event_id = events.event_id(broker.head)
    queued = sub.tracking or set()
    return [
        events.alarm(a.payload(sub.viewer.language), event_id)
        for a in deliverable(broker.alarms.values(), sub, timezone.now())
        if (a.id not in seen or a.level == "critical") and a.id not in queued
    ]


def replay(broker: BaseBroker, sub: Subscriber, missed: Missed) -> list[bytes]:
    """Exactly what a resuming stream missed since its Last-Event-ID."""
    # The journal was read up to missed.head; what came after is queued to
    # the stream already (sub.tracking), with later event ids than these.
    event_id = events.event_id(missed.head or broker.head)
    queued = sub.tracking or set()
    chunks = []
    delivered = set(queued)
    now = timezone.now()
    # Expired, but the broker's own timer has not retracted them yet: it will,
    # to this stream's queue too, so the replay leaves them to it.
    delivered |= {a.id for a in broker.alarms.values() if a.announced and not a.live(now)}
    for a in deliverable(broker.alarms.values(), sub, now):
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


def deliverable(alarms: Any, sub: Subscriber, now: datetime) -> list[CachedAlarm]:
    """Live alarms ``sub`` may read, has not muted and has not dismissed, in the
    order they are shown. A muted alarm is neither in a snapshot nor replayed."""
    return in_order(
        a for a in alarms if a.live(now) and a.interrupts(sub.viewer) and a.id not in sub.dismissed
    )

"""What each open stream is sent when an alarm, a dismissal or a reader's access changes.

Pure bookkeeping on the loop: no query, no await. Each function returns how
many events it queued, for the broker's counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from alarms import events
from alarms.broker.cache import CachedAlarm, Viewer, in_order
from alarms.broker.reads import Row
from alarms.broker.subscribers import Subscriber


def alarm_changed(
    subscribers: Iterable[Subscriber],
    old: CachedAlarm | None,
    new: CachedAlarm | None,
    now: datetime,
    event_id: str,
) -> int:
    """Send ``new`` to every stream that may read it now (and has not muted its
    level), and retract ``old`` (as last announced) from those that had it and
    may not read ``new``."""
    encoded: dict[str, bytes] = {}
    retract: bytes | None = None
    alarm_id = new.id if new is not None else old.id if old is not None else 0
    queued = 0
    for sub in subscribers:
        viewer = sub.viewer
        if new is not None and new.live(now) and new.interrupts(viewer):
            if new.id in sub.dismissed:
                continue
            # Encoded once per language, not once per stream.
            chunk = encoded.get(viewer.language)
            if chunk is None:
                chunk = encoded[viewer.language] = events.alarm(
                    new.payload(viewer.language), event_id
                )
            sub.push(chunk, alarm_id)
        elif old is not None and old.announced and _lost(old, new, viewer, now):
            retract = retract or events.retract(old.id, event_id)
            sub.push(retract, alarm_id)
        else:
            continue
        queued += 1
    return queued


def _lost(old: CachedAlarm, new: CachedAlarm | None, viewer: Viewer, now: datetime) -> bool:
    """Whether a stream that ``old`` reached (toasted, or muted but counted by the
    page's badge) must be told it is gone: it interrupted this viewer and ``new``
    does not, or it was visible and ``new`` is not (withdrawn, expired, moved)."""
    if old.interrupts(viewer):
        return True
    still = new is not None and new.live(now) and new.visible_to(viewer)
    return old.visible_to(viewer) and not still


def dismissed(
    rows: Iterable[Row], by_user: Mapping[int, Iterable[Subscriber]], event_id: str
) -> int:
    """Tell each stream of a user which alarms that user dismissed elsewhere."""
    queued = 0
    for _i, alarm_id, kind, user_id, _s in rows:
        if kind == "dismiss" and user_id is not None:
            chunk = events.dismiss(alarm_id, event_id)
            for sub in by_user.get(user_id, ()):
                sub.dismissed.add(alarm_id)
                sub.push(chunk, alarm_id)
            queued += 1
    return queued


def switch_viewer(
    sub: Subscriber,
    alarms: Iterable[CachedAlarm],
    new: Viewer,
    seen: set[int],
    now: datetime,
    event_id: str,
) -> int:
    """Push to ``sub`` the difference between what its viewer and ``new`` may read:
    retract what it may no longer read, send what it now may (unless dismissed,
    or seen and not critical)."""
    old = sub.viewer
    queued = 0
    for alarm in in_order(alarms):
        if not (alarm.announced and alarm.live(now)):
            continue
        was, now_visible = alarm.interrupts(old), alarm.interrupts(new)
        # A muted alarm the page's badge counts goes too when it is no longer visible.
        if (was and not now_visible) or (alarm.visible_to(old) and not alarm.visible_to(new)):
            sub.push(events.retract(alarm.id, event_id), alarm.id)
        elif now_visible and not was and alarm.id not in sub.dismissed:
            if alarm.id in seen and alarm.level != "critical":
                continue
            sub.push(events.alarm(alarm.payload(new.language), event_id), alarm.id)
        else:
            continue
        queued += 1
    return queued

"""Authorisation that follows the user: open streams decided again when access changes.

A stream is an authorisation decision made at connect. The journal's
``access`` rows (a user's groups, flags or password changed, the user was
deleted) and ``session`` rows (a session ended) make every process decide
again, before the same read's alarm changes fan out: each stream of the user
is given its user's current viewer, or signed out. See docs/architecture.md,
"Access follows the user". ``prefs`` rows (the user's language, time zone or
mute floor changed) end each stream of the user after a ``prefs`` event that
carries the new preferences: the browser reconnects, and its connect reads the
new language and floor (docs/preferences.md).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from alarms import events
from alarms.broker import fanout
from alarms.broker.cache import Viewer
from alarms.broker.counters import CloseReason
from alarms.broker.reads import ConnectState, Row
from alarms.broker.subscribers import Subscriber
from alarms.preferences import FIELDS

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

# Bounds of what is remembered of recent access and session rows, for streams
# whose connect raced them.
_RECENT = 10_000


class Access:
    """The broker's part that keeps each open stream's authorisation current."""

    def __init__(self, broker: BaseBroker) -> None:
        self.broker = broker
        # The journal row of the latest access change per user, and of ended
        # sessions, kept for streams that connect while one is read.
        self._access_at: OrderedDict[int, int] = OrderedDict()
        self._sessions_ended: OrderedDict[str, int] = OrderedDict()
        self._prefs_at: OrderedDict[int, int] = OrderedDict()
        self._pending: set[int] = set()
        self._prefs_pending: set[int] = set()

    def connected(self, sub: Subscriber, loaded_at: int) -> None:
        """A stream whose user was loaded at journal row ``loaded_at`` just subscribed.

        Rows read since were not seen by that load: a session that ended then
        ends this stream too, and an access change then is applied to it on
        the next read.
        """
        user_id = sub.viewer.user_id
        if user_id is None:
            return
        if self._prefs_at.get(user_id, 0) > loaded_at:
            self._prefs_pending.add(user_id)
            self.broker.wake()
        if not sub.session:
            return
        if self._sessions_ended.get(sub.session, 0) > loaded_at:
            sub.close("signed_out")
        if self._access_at.get(user_id, 0) > loaded_at:
            self._pending.add(user_id)
            self.broker.wake()

    async def authorise_again(self, rows: list[Row]) -> None:
        """Re-make the authorisation of every stream the journal's access and
        session rows (and streams that connected while one was read) concern."""
        broker = self.broker
        subscribers = broker.subscribers
        for row_id, _a, kind, user_id, session in rows:
            if kind == "session" and session:
                _remember(self._sessions_ended, session, row_id)
                for sub in list(subscribers.by_session.get(session, ())):
                    broker.sign_out(sub, "signed_out")
            elif kind == "access" and user_id is not None:
                _remember(self._access_at, user_id, row_id)
                self._pending.add(user_id)
            elif kind == "prefs" and user_id is not None:
                _remember(self._prefs_at, user_id, row_id)
                self._prefs_pending.add(user_id)
        by_user = subscribers.by_user
        await self._preferences_changed()
        users = {u for u in self._pending if u in by_user}
        self._pending.clear()
        if not users:
            return
        keys = {u: {sub.session_key or "" for sub in by_user[u]} for u in users}
        states = await broker.read_db(broker.reads.access, keys, list(broker.alarms))
        now = timezone.now()
        event_id = events.event_id(max(broker.head, rows[-1][0] if rows else 0))
        for user_id in users:
            for sub in list(by_user.get(user_id, ())):
                state = states.get((user_id, sub.session_key or ""))
                if state is None or state.viewer.user_id != user_id:
                    self.sign_out(sub, "signed_out", now, event_id)
                else:
                    self._reauthorise(sub, state, now, event_id)
        broker.counters.reauthorised += len(users)

    async def _preferences_changed(self) -> None:
        """End the streams of the users whose preferences changed, each after a
        ``prefs`` event with what they are now: the browser reloads a page in
        another language or time zone, and reconnects in any case; the connect
        reads the new language and mute floor with the user."""
        broker = self.broker
        by_user = broker.subscribers.by_user
        users = {u for u in self._prefs_pending if u in by_user}
        self._prefs_pending.clear()
        if not users:
            return
        found = await broker.read_db(broker.reads.preferences_of, users)
        for user_id in users:
            # No id: the stream's Last-Event-ID stays at what it was sent, so the
            # reconnect replays this read's alarm changes it will not be sent now.
            values = dict(zip(FIELDS, found.get(user_id, ("", "", "", "")), strict=True))
            chunk = events.encode(events.dumps(values), event="prefs")
            for sub in list(by_user.get(user_id, ())):
                sub.push(chunk)
                broker.counters.events += 1
                sub.close("preferences")

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
            muted=state.viewer.muted,
        )
        sub.expires_at = state.expires_at.timestamp() if state.expires_at else None
        sub.dismissed |= state.dismissed
        self.broker.counters.events += fanout.switch_viewer(
            sub, self.broker.alarms.values(), new, state.seen, now, event_id
        )
        sub.viewer = new  # the same user: by_user stays as it is

    def sign_out(self, sub: Subscriber, reason: CloseReason, now: datetime, event_id: str) -> None:
        """End a stream whose session no longer holds. What only its user could
        read is retracted first, so the page it fed shows none of it; the
        browser reconnects with what credentials it has now."""
        # sub.viewer stays: unsubscribe() finds the stream under its user by it.
        anonymous = Viewer(language=sub.viewer.language)
        self.broker.counters.events += fanout.switch_viewer(
            sub, self.broker.alarms.values(), anonymous, set(), now, event_id
        )
        sub.close(reason)


def _remember(recent: OrderedDict[Any, int], key: Any, row_id: int) -> None:
    recent[key] = row_id
    recent.move_to_end(key)
    while len(recent) > _RECENT:
        recent.popitem(last=False)

"""Every query the broker makes. Each runs in the broker's database threads, never on the loop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from alarms.broker.cache import CachedAlarm, Viewer
from alarms.broker.sessions import active_user, session_expiry, session_user

# A journal row as the broker reads it: id, alarm id, kind, user id, session digest.
Row = tuple[int, int, str, int | None, str]

#: Rows read from the journal at once.
BATCH = 10_000


@dataclass
class ConnectState:
    """What a connecting stream needs from the database, loaded in one executor call."""

    viewer: Viewer
    seen: set[int]
    dismissed: set[int]
    session_key: str | None = None
    expires_at: datetime | None = None
    # The journal row the broker had read when this load began: access and
    # session rows read since then were not seen by it (see BaseBroker.subscribe).
    head: int = 0


@dataclass
class Missed:
    """What a resuming reader missed between its Last-Event-ID and ``head``."""

    since: datetime
    head: int = 0
    changed: set[int] = field(default_factory=set)
    dismissed: set[int] = field(default_factory=set)
    retract: set[int] = field(default_factory=set)

    def merge(self, later: Missed) -> Missed:
        """This read and a later one of the rows after it, as one read up to ``later.head``."""
        return Missed(
            since=self.since,
            head=max(self.head, later.head),
            changed=self.changed | later.changed,
            dismissed=self.dismissed | later.dismissed,
            retract=self.retract | later.retract,
        )


class Reads:
    """The broker's queries against its database ``alias``."""

    def __init__(self, alias: str, config: dict[str, Any]) -> None:
        self.alias = alias
        self.config = config

    def everything(self) -> tuple[int, dict[int, CachedAlarm]]:
        """The journal's last row and every current alarm (the broker's start)."""
        from alarms.models import AlarmChange

        last = AlarmChange.objects.using(self.alias).order_by("-id").values_list("id", flat=True)
        head = last.first() or 0
        return head, self.alarms(None)

    def alarms(
        self, ids: Iterable[int] | None, *, current_only: bool = True
    ) -> dict[int, CachedAlarm]:
        from alarms.models import Alarm

        qs = Alarm.objects.using(self.alias).prefetch_related("translations", "users", "groups")
        if current_only:
            qs = qs.current()
        if ids is not None:
            qs = qs.filter(pk__in=list(ids))
        return {a.pk: CachedAlarm.from_model(a) for a in qs}

    def changes(self, head: int) -> tuple[list[Row], dict[int, CachedAlarm], datetime | None]:
        """Up to ``BATCH`` journal rows after ``head``, the alarms they changed,
        and when the newest of them was written."""
        from alarms.models import AlarmChange

        found = list(
            AlarmChange.objects.using(self.alias)
            .filter(id__gt=head)
            .order_by("id")
            .values_list("id", "alarm_id", "kind", "user_id", "session", "created_at")[:BATCH]
        )
        rows = [row[:5] for row in found]
        newest = found[-1][5] if found else None
        changed = {row[1] for row in rows if row[2] == "alarm"}
        return rows, (self.alarms(changed) if changed else {}), newest

    def viewer(
        self,
        user: Any,
        language: str,
        alarm_ids: list[int],
        session: Any = None,
        expires_at: datetime | None = None,
    ) -> ConnectState:
        """The viewer, their receipts and their session.

        ``expires_at``: the session's expiry if the caller read it (``prime_session``).
        """
        from alarms.models import AlarmReceipt

        if not getattr(user, "is_authenticated", False):
            return ConnectState(Viewer(language=language), set(), set())
        viewer = Viewer(
            user_id=user.pk,
            is_staff=bool(user.is_staff),
            group_ids=frozenset(user.groups.values_list("pk", flat=True)),
            language=language,
        )
        seen: set[int] = set()
        dismissed: set[int] = set()
        receipts = AlarmReceipt.objects.using(self.alias).filter(
            user_id=user.pk, alarm_id__in=alarm_ids
        )
        for alarm_id, seen_at, dismissed_at in receipts.values_list(
            "alarm_id", "seen_at", "dismissed_at"
        ):
            if seen_at:
                seen.add(alarm_id)
            if dismissed_at:
                dismissed.add(alarm_id)
        key = getattr(session, "session_key", None)
        if key and expires_at is None:
            expires_at = session_expiry(session)
        return ConnectState(viewer, seen, dismissed, key, expires_at if key else None)

    def access(
        self, keys: dict[int, set[str]], alarm_ids: list[int]
    ) -> dict[tuple[int, str], ConnectState]:
        """Each session's user as Django would authenticate it now, with their
        groups and receipts. A session that no longer authenticates its user is
        missing from the result. Streams of a user signed in without a session
        (key "") are checked by the user alone."""
        found: dict[tuple[int, str], ConnectState] = {}
        for user_id, session_keys in keys.items():
            for key in session_keys:
                if key:
                    session, user = session_user(key)
                else:
                    session, user = None, active_user(user_id)
                if user is not None and user.pk == user_id:
                    found[(user_id, key)] = self.viewer(user, "", alarm_ids, session)
        return found

    def missed(self, viewer: Viewer, since: tuple[int, int], head: int) -> Missed | None:
        """The journal between a Last-Event-ID and ``head``; None when a snapshot must do."""
        from alarms.models import Alarm, AlarmChange

        seq, millis = since
        journal = AlarmChange.objects.using(self.alias)
        if seq > head:
            return None  # from another database
        if head - seq > self.config["REPLAY_MAX_ROWS"]:
            return None  # a snapshot costs less than reading that much journal
        # At the head (a reconnect storm after a restart of a proxy or a process:
        # nothing was written meanwhile) there is no journal to read.
        if seq < head:
            first = journal.order_by("id").values_list("id", flat=True).first()
            if first is not None and seq < first - 1:
                return None  # older than what is kept
        now = timezone.now()
        # The client's clock says what it saw; it cannot say it saw more than the
        # journal keeps, nor anything after now.
        floor = now - timedelta(days=self.config["JOURNAL_RETENTION_DAYS"])
        when = datetime.fromtimestamp(millis / 1000, tz=UTC)
        missed = Missed(since=min(max(when, floor), now), head=head)
        rows = (
            journal.filter(id__gt=seq, id__lte=head, kind__in=("alarm", "dismiss")).values_list(
                "alarm_id", "kind", "user_id", "detail"
            )
            if seq < head
            else ()
        )
        deleted: dict[int, str] = {}
        for alarm_id, kind, row_user, detail in rows:
            if kind == "alarm":
                missed.changed.add(alarm_id)
                if detail:
                    deleted[alarm_id] = detail
            elif row_user is not None and row_user == viewer.user_id:
                missed.dismissed.add(alarm_id)
        expired = Alarm.objects.using(self.alias).filter(
            expires_at__gt=missed.since, expires_at__lte=now
        )
        candidates = missed.changed | set(expired.values_list("pk", flat=True))
        existing: dict[int, CachedAlarm | None] = (
            dict(self.alarms(candidates, current_only=False)) if candidates else {}
        )
        for alarm_id, detail in deleted.items():
            existing.setdefault(alarm_id, CachedAlarm.deleted(alarm_id, detail))

        # A retract names only an alarm this reader may have on screen: published
        # before they left, and theirs to read. Never a scheduled alarm, another
        # user's, or a deleted one whose journal row does not say it was theirs.
        def shown(alarm: CachedAlarm | None) -> bool:
            return (
                alarm is not None and alarm.publish_at <= missed.since and alarm.visible_to(viewer)
            )

        missed.retract = {i for i in candidates if shown(existing.get(i))}
        return missed

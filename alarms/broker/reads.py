"""Every query the broker makes. Each runs in the broker's database threads, never on the loop."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import router
from django.db.models.fields.related_descriptors import ManyToManyDescriptor
from django.utils import timezone
from django.utils.module_loading import import_string

from alarms.broker.cache import CachedAlarm, Viewer
from alarms.broker.sessions import Login, authenticate

# A journal row as the broker reads it: id, alarm id, kind, user id, session digest.
Row = tuple[int, int, str, int | None, str]

#: Rows read from the journal at once.
BATCH = 10_000

# A resuming reader: who, their Last-Event-ID (journal row, unix ms), and the
# journal row to read up to.
Resume = tuple[Viewer, tuple[int, int], int]

#: Readers loaded together at most: the connects of a storm in one call to the
#: database thread (``loads``), the sessions of an access change in chunks.
LOAD_BATCH = 256


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

    def viewers(
        self, logins: Sequence[Login], languages: Sequence[str], alarm_ids: list[int]
    ) -> list[ConnectState | Exception]:
        """Each reader's viewer, receipts and session, for many readers at once.

        Who each is comes from :func:`~alarms.broker.sessions.authenticate`;
        then one query for the groups of all these users and one for their
        receipts of ``alarm_ids``. A login whose decision raised gets its error
        in place of a state.
        """
        authenticate(logins)
        users = [
            login.user if getattr(login.user, "is_authenticated", False) else None
            for login in logins
        ]
        signed_in = [user for user in users if user is not None]
        groups = _group_ids(signed_in)
        receipts = self._receipts({user.pk for user in signed_in}, alarm_ids)
        states: list[ConnectState | Exception] = []
        for login, user, language in zip(logins, users, languages, strict=True):
            if login.error is not None:
                states.append(login.error)
                continue
            if user is None:
                states.append(ConnectState(Viewer(language=language), set(), set()))
                continue
            viewer = Viewer(
                user_id=user.pk,
                is_staff=bool(user.is_staff),
                group_ids=groups[user.pk],
                language=language,
            )
            seen, dismissed = receipts.get(user.pk, ((), ()))
            key = getattr(login.session, "session_key", None)
            expires_at = login.expires_at if key else None
            # Sets of the stream's own: a subscriber adds to its dismissed set.
            states.append(ConnectState(viewer, set(seen), set(dismissed), key, expires_at))
        return states

    def _receipts(
        self, user_ids: set[Any], alarm_ids: list[int]
    ) -> dict[Any, tuple[set[int], set[int]]]:
        """Per user, the alarms of ``alarm_ids`` they have seen and dismissed."""
        from alarms.models import AlarmReceipt

        found: dict[Any, tuple[set[int], set[int]]] = {}
        if not user_ids or not alarm_ids:
            return found
        receipts = (
            AlarmReceipt.objects.using(self.alias)
            .filter(user_id__in=user_ids, alarm_id__in=alarm_ids)
            .order_by()
            .values_list("user_id", "alarm_id", "seen_at", "dismissed_at")
        )
        for user_id, alarm_id, seen_at, dismissed_at in receipts:
            seen, dismissed = found.setdefault(user_id, (set(), set()))
            if seen_at:
                seen.add(alarm_id)
            if dismissed_at:
                dismissed.add(alarm_id)
        return found

    def access(
        self, keys: dict[int, set[str]], alarm_ids: list[int]
    ) -> dict[tuple[int, str], ConnectState]:
        """Each session's user as Django would authenticate it now, with their
        groups and receipts. A session that no longer authenticates its user is
        missing from the result. Streams of a user signed in without a session
        (key "") are checked by the user alone. In batches of ``LOAD_BATCH``."""
        store = import_string(settings.SESSION_ENGINE + ".SessionStore")
        wanted = [(user_id, key) for user_id, session_keys in keys.items() for key in session_keys]
        found: dict[tuple[int, str], ConnectState] = {}
        for start in range(0, len(wanted), LOAD_BATCH):
            chunk = wanted[start : start + LOAD_BATCH]
            logins = [
                Login(session=store(key)) if key else Login(user_id=user_id)
                for user_id, key in chunk
            ]
            states = self.viewers(logins, [""] * len(chunk), alarm_ids)
            for (user_id, key), state in zip(chunk, states, strict=True):
                if isinstance(state, Exception):
                    raise state
                if state.viewer.user_id == user_id:
                    found[(user_id, key)] = state
        return found

    def missed(self, viewer: Viewer, since: tuple[int, int], head: int) -> Missed | None:
        """The journal between a Last-Event-ID and ``head``; None when a snapshot must do."""
        return self.missed_many([(viewer, since, head)])[0]

    def missed_many(self, resumes: Sequence[Resume]) -> list[Missed | None]:
        """What each resuming reader missed, or None when a snapshot must do.

        Read once for them all: the journal rows between the smallest
        Last-Event-ID and the largest head, and the alarms expired since the
        earliest time; each reader's share is then picked out in memory.
        """
        from alarms.models import Alarm, AlarmChange

        journal = AlarmChange.objects.using(self.alias)
        seqs = [seq for _viewer, (seq, _millis), _head in resumes]
        heads = [head for _viewer, _since, head in resumes]
        found: list[Missed | None] = [None] * len(resumes)
        replaying = [
            i
            for i, (seq, head) in enumerate(zip(seqs, heads, strict=True))
            # Past the head: from another database. Far behind it: a snapshot
            # costs less than reading that much journal.
            if seq <= head and head - seq <= self.config["REPLAY_MAX_ROWS"]
        ]
        # At the head (a reconnect storm after a restart of a proxy or a process:
        # nothing was written meanwhile) there is no journal to read.
        behind = [i for i in replaying if seqs[i] < heads[i]]
        if behind:
            first = journal.order_by("id").values_list("id", flat=True).first()
            if first is not None:
                old = {i for i in behind if seqs[i] < first - 1}  # older than what is kept
                replaying = [i for i in replaying if i not in old]
                behind = [i for i in behind if i not in old]
        if not replaying:
            return found
        now = timezone.now()
        # The client's clock says what it saw; it cannot say it saw more than the
        # journal keeps, nor anything after now.
        floor = now - timedelta(days=self.config["JOURNAL_RETENTION_DAYS"])
        missed: dict[int, Missed] = {}
        for i in replaying:
            when = datetime.fromtimestamp(resumes[i][1][1] / 1000, tz=UTC)
            missed[i] = found[i] = Missed(since=min(max(when, floor), now), head=heads[i])
        rows: list[tuple[int, int, str, int | None, str]] = []
        if behind:
            rows = list(
                journal.filter(
                    id__gt=min(seqs[i] for i in behind),
                    id__lte=max(heads[i] for i in behind),
                    kind__in=("alarm", "dismiss"),
                ).values_list("id", "alarm_id", "kind", "user_id", "detail")
            )
        expired = list(
            Alarm.objects.using(self.alias)
            .filter(expires_at__gt=min(m.since for m in missed.values()), expires_at__lte=now)
            .order_by()
            .values_list("pk", "expires_at")
        )
        # Readers resuming together mostly left together: each window of the
        # journal, and each time's expiries, is worked out once.
        ids = [row[0] for row in rows]
        windows: dict[tuple[int, int], _Window] = {}
        expired_since: dict[datetime, set[int]] = {}
        for m in missed.values():
            if m.since not in expired_since:
                expired_since[m.since] = {pk for pk, at in expired if at and at > m.since}
        candidates = set().union(*expired_since.values())
        for i in replaying:
            if (seqs[i], heads[i]) not in windows:
                window = windows[(seqs[i], heads[i])] = _Window(rows, ids, seqs[i], heads[i])
                candidates |= window.changed
        existing = self.alarms(candidates, current_only=False) if candidates else {}
        gone: dict[tuple[int, str], CachedAlarm | None] = {}
        for i in replaying:
            viewer, window, m = resumes[i][0], windows[(seqs[i], heads[i])], missed[i]
            m.changed = set(window.changed)
            if viewer.user_id is not None:
                m.dismissed = set(window.dismissed.get(viewer.user_id, ()))
            # A retract names only an alarm this reader may have on screen:
            # published before they left, and theirs to read. Never a scheduled
            # alarm, another user's, or a deleted one whose journal row does not
            # say it was theirs.
            for alarm_id in m.changed | expired_since[m.since]:
                alarm = existing.get(alarm_id)
                if alarm is None and alarm_id in window.deleted:
                    detail = (alarm_id, window.deleted[alarm_id])
                    if detail not in gone:
                        gone[detail] = CachedAlarm.deleted(*detail)
                    alarm = gone[detail]
                if alarm is not None and alarm.publish_at <= m.since and alarm.visible_to(viewer):
                    m.retract.add(alarm_id)
        return found


class _Window:
    """The journal rows ``(seq, head]`` as every reader resuming over them needs them."""

    def __init__(
        self, rows: list[tuple[int, int, str, int | None, str]], ids: list[int], seq: int, head: int
    ) -> None:
        self.changed: set[int] = set()
        self.deleted: dict[int, str] = {}
        self.dismissed: dict[int, set[int]] = {}
        # The rows are in journal order (the model's ordering), ``ids`` their ids.
        for _id, alarm_id, kind, user_id, detail in rows[
            bisect.bisect_right(ids, seq) : bisect.bisect_right(ids, head)
        ]:
            if kind == "alarm":
                self.changed.add(alarm_id)
                if detail:
                    self.deleted[alarm_id] = detail
            elif user_id is not None:
                self.dismissed.setdefault(user_id, set()).add(alarm_id)


def _group_ids(users: list[Any]) -> dict[Any, frozenset[int]]:
    """Each user's groups (by pk): one query on the user model's groups table for them all."""
    model = get_user_model()
    relation = getattr(model, "groups", None)
    if not isinstance(relation, ManyToManyDescriptor) or relation.reverse:
        relation = None  # not the user model's own many-to-many field (PermissionsMixin's)
    found: dict[Any, frozenset[int]] = {}
    by_db: dict[str, set[Any]] = {}
    for user in users:
        if relation is not None and isinstance(user, model):
            db = router.db_for_read(relation.through, instance=user)
            by_db.setdefault(db, set()).add(user.pk)
        elif user.pk not in found:  # a backend's own kind of user
            found[user.pk] = frozenset(user.groups.values_list("pk", flat=True))
    if relation is not None and by_db:
        user_field = relation.field.m2m_field_name()
        group_field = relation.field.m2m_reverse_field_name()
        member: dict[Any, set[int]] = {}
        for db, pks in by_db.items():
            rows = (
                relation.through._default_manager.using(db)
                .filter(**{f"{user_field}__in": pks})
                .order_by()
                .values_list(user_field, group_field)
            )
            for user_id, group_id in rows:
                member.setdefault(user_id, set()).add(group_id)
            for pk in pks:
                found[pk] = frozenset(member.get(pk, ()))
    return found

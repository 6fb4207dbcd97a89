"""Every query the broker makes. Each runs in the broker's database threads, never on the loop."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models.fields.related_descriptors import ManyToManyDescriptor
from django.utils import timezone
from django.utils.module_loading import import_string

from alarms.broker.cache import CachedAlarm, Viewer
from alarms.broker.sessions import Login, authenticate
from alarms.preferences import FIELDS, muted_levels
from alarms.translation import supported_language

# A journal row as the broker reads it: id, alarm id, kind, user id, session digest.
Row = tuple[int, int, str, int | None, str]

# A journal row as read, with when it was written (for the broker's lag).
Read = tuple[int, int, str, int | None, str, datetime]

#: Rows read from the journal at once.
BATCH = 10_000

# A resuming reader: who, their Last-Event-ID (journal row, unix ms), and the
# journal row to read up to.
Resume = tuple[Viewer, tuple[int, int], int]

#: Readers loaded together at most: the connects of a storm in one call to the
#: database thread (``loads``), the sessions of an access change in chunks.
LOAD_BATCH = 256


#: Seconds before the broker reads the journal again while a gap in it is
#: pending (see :class:`JournalCursor`), doubled at each read that settles none
#: of it, up to ``GAP_RECHECK_MAX``. A gap whose writer commits is filled by the
#: read its NOTIFY wakes; one whose writer rolls back sends nothing, and only
#: this timer reads again. An idle broker has no gap, and no timer.
GAP_RECHECK = 0.025
GAP_RECHECK_MAX = 0.5


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Which transactions a read's snapshot counts as finished: every one below
    ``xmax`` but those in ``running`` (``pg_current_snapshot()``, 64-bit ids).
    A transaction given its id after the last one to finish is at or above
    ``xmax``, and in no list: still running for this snapshot."""

    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        _xmin, xmax, running = text.split(":")
        return cls(int(xmax), frozenset(int(x) for x in running.split(",") if x))

    def finished(self, xid: int) -> bool:
        # The list holds top-level ids only: a subtransaction's id counts as
        # finished here while its transaction runs. That transaction's own id,
        # always among a gap's writers beside it (pg_locks), keeps the gap open.
        return xid < self.xmax and xid not in self.running

    def widen(self, xid32: int) -> int:
        """The 64-bit id of a running transaction known by its 32 bits (``pg_locks``)."""
        d = (xid32 - self.xmax) % 2**32
        return self.xmax + (d - 2**32 if d >= 2**31 else d)


@dataclass(frozen=True, slots=True)
class Gap:
    """Journal ids ``first`` to ``last``, missing from a read that found a higher
    one, and the transactions that may still write them (None: not asked yet)."""

    first: int
    last: int
    writers: frozenset[int] | None = None


class JournalCursor:
    """How far a broker has read a PostgreSQL journal, and what it holds back.

    Journal ids are drawn in order but committed in any order (``alarms.journal``
    says why this reading is safe, and what writers do for it). Every id up to
    ``position`` has been delivered or will never appear; the broker's head, and
    so every event id and every resume, stays there. Each id above it, up to
    ``seen`` (the highest read), is *held* (read, waiting behind a gap), in a
    pending *gap*, or final (passed over: rolled back, or a row that was in
    the table when the broker started and so in its cache already).

    Each read gives :meth:`absorb` the rows past ``seen`` and in the gaps, with
    the read's snapshot. A gap keeps only the writers its snapshot does not
    count as finished; with none left, what the read did not find of it is
    final. A new gap's writers are then asked for (:meth:`adopt`): the
    transactions holding a lock on the journal table just after the read. A
    writer takes that lock before its insert draws an id and holds it to its
    end, so one that is not among them had ended, and the next read's snapshot
    shows its row if it wrote one. :meth:`deliver` hands out the held rows
    below the first gap, in id order.
    """

    def __init__(self, position: int) -> None:
        self.position = position
        self.seen = position
        self.held: dict[int, Read] = {}
        self.gaps: list[Gap] = []
        # Reads in a row that settled nothing (see recheck_in).
        self.stalls = 0

    @classmethod
    def at_start(cls, top: int, present: list[int]) -> JournalCursor:
        """The cursor of a broker whose start read found the journal up to ``top``
        and the ids ``present`` in its last ``BATCH``.

        Rows present then are in the broker's cache: passed over, not delivered.
        A missing id may still be committed: it is a gap. Ids more than
        ``BATCH`` below ``top`` are taken as final: a write still open, with
        that many journal rows committed after it, is missed by a broker that
        starts at that moment.
        """
        cursor = cls(top)
        expected = max(0, top - BATCH) + 1
        for i in [*present, top + 1]:
            if i > expected:
                cursor.gaps.append(Gap(expected, i - 1))
            expected = i + 1
        cursor.settle()
        return cursor

    @property
    def asking(self) -> bool:
        """Whether a gap waits for :meth:`adopt`."""
        return any(g.writers is None for g in self.gaps)

    def absorb(self, snapshot: Snapshot, found: Iterable[Read]) -> None:
        """Take in one read: ``found``, its rows past ``seen`` and in the gaps, and
        the ``snapshot`` it was read in."""
        rows = {row[0]: row for row in found}
        ids = sorted(rows)
        gaps: list[Gap] = []
        settled = False
        for gap in self.gaps:
            inside = ids[bisect_left(ids, gap.first) : bisect_right(ids, gap.last)]
            for i in inside:
                self.held[i] = rows[i]
            writers = gap.writers
            if writers is not None:
                writers = frozenset(x for x in writers if not snapshot.finished(x))
                if not writers:
                    settled = True
                    continue  # final: what this read did not find, no later one will
            settled = settled or bool(inside) or writers != gap.writers
            start = gap.first
            for i in inside:
                if i > start:
                    gaps.append(Gap(start, i - 1, writers))
                start = i + 1
            if start <= gap.last:
                gaps.append(Gap(start, gap.last, writers))
        expected = self.seen + 1
        for i in ids[bisect_right(ids, self.seen) :]:
            if i > expected:
                gaps.append(Gap(expected, i - 1))
                settled = True
            self.held[i] = rows[i]
            expected = i + 1
        self.seen = expected - 1
        self.gaps = gaps
        self.stalls = 0 if settled or not gaps else self.stalls + 1

    def adopt(self, snapshot: Snapshot, writers: frozenset[int]) -> None:
        """Give the gaps not asked for yet their writers: the 32-bit ids of the
        transactions that held a lock on the journal table after the read of
        ``snapshot``. With none, the gap is final at the next read (not this
        one: its writer may have committed in between)."""
        wide = frozenset(snapshot.widen(x) for x in writers)
        self.gaps = [g if g.writers is not None else Gap(g.first, g.last, wide) for g in self.gaps]

    def deliver(self, limit: int) -> list[Read]:
        """Up to ``limit`` held rows below the first gap, in id order; the position after them."""
        first_gap = self.gaps[0].first if self.gaps else None
        out: list[Read] = []
        for i in sorted(self.held):
            if len(out) == limit or (first_gap is not None and i > first_gap):
                break
            out.append(self.held.pop(i))
        if len(out) == limit:
            self.position = out[-1][0]
        else:
            self.settle()
        return out

    def settle(self) -> None:
        """Move the position up to the first held row or gap."""
        firsts = [self.gaps[0].first] if self.gaps else []
        firsts += [min(self.held)] if self.held else []
        self.position = min(firsts) - 1 if firsts else self.seen

    def recheck_in(self) -> float | None:
        """Seconds until the journal should be read again for a gap (or for rows a
        broker's start found committed meanwhile); None when there is none."""
        if not self.gaps and not self.held:
            return None
        return min(GAP_RECHECK_MAX, GAP_RECHECK * (1 << min(self.stalls, 10)))


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
        #: How far :meth:`changes` has read: every journal row up to here has
        #: been returned, or will never appear (the broker's head follows it).
        self.position = 0
        # PostgreSQL's ids do not follow commit order: there, the reads go
        # through a cursor that knows the gaps (JournalCursor).
        self.cursor: JournalCursor | None = None

    @property
    def gap_aware(self) -> bool:
        return connections[self.alias].vendor == "postgresql"

    def everything(self) -> tuple[int, dict[int, CachedAlarm]]:
        """The journal's position and every current alarm (the broker's start)."""
        from alarms.models import AlarmChange

        if self.gap_aware:
            self.cursor = self._start_cursor()
            head = self.cursor.position
        else:
            journal = AlarmChange.objects.using(self.alias)
            head = journal.order_by("-id").values_list("id", flat=True).first() or 0
        self.position = head
        return head, self.alarms(None)

    def recheck_in(self) -> float | None:
        """Seconds until the journal should be read again although nothing woke
        the broker (a gap is pending); None when only a wake-up need bring a read."""
        return None if self.cursor is None else self.cursor.recheck_in()

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
        and when the newest of them was written. On PostgreSQL, only rows below
        every pending gap (see :class:`JournalCursor`); ``position`` may then move
        past the last row returned, over ids that will never appear."""
        from alarms.models import AlarmChange

        if self.gap_aware:
            if self.cursor is None or self.cursor.position != head:
                # A first read, or one after a failed fan-out: from ``head`` afresh.
                self.cursor = JournalCursor(head)
            self._read(self.cursor)
            read = self.cursor.deliver(BATCH)
            self.position = self.cursor.position
        else:
            read = list(
                AlarmChange.objects.using(self.alias)
                .filter(id__gt=head)
                .order_by("id")
                .values_list("id", "alarm_id", "kind", "user_id", "session", "created_at")[:BATCH]
            )
            self.position = read[-1][0] if read else head
        rows = [row[:5] for row in read]
        newest = read[-1][5] if read else None
        changed = {row[1] for row in rows if row[2] == "alarm"}
        return rows, (self.alarms(changed) if changed else {}), newest

    def _start_cursor(self) -> JournalCursor:
        """At the broker's start: the last id drawn (the sequence's, or the last
        row's if higher) and the ids present among the last ``BATCH``, in one
        snapshot. Its gaps then get their writers, and a read decides at once
        those that no running writer may still fill: after a prune, or on an
        emptied table, the start's position is then the sequence's, not 0."""
        table, _columns = self._journal()
        sql = (
            "SELECT pg_current_snapshot()::text, t.top, "
            f"ARRAY(SELECT id FROM {table} WHERE id > t.top - %s ORDER BY id) "
            "FROM (SELECT greatest(coalesce(max(id), 0), coalesce(pg_sequence_last_value("
            f"pg_get_serial_sequence(%s, 'id')::regclass), 0)) AS top FROM {table}) AS t"
        )
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, [BATCH, table])
            snapshot, top, present = cursor.fetchone()
        journal = JournalCursor.at_start(top, present)
        if journal.gaps:
            journal.adopt(Snapshot.parse(snapshot), self._journal_writers())
            if any(not g.writers for g in journal.gaps):
                self._read(journal)
                journal.settle()
        return journal

    def _read(self, journal: JournalCursor) -> None:
        """One read into ``journal``: the rows past ``seen`` (as many as it has room
        to hold) and in its gaps, in one statement and so one snapshot; then,
        for new gaps, who may still write them."""
        table, columns = self._journal()
        room = max(0, BATCH - len(journal.held))
        sql = (
            "SELECT s.snapshot, c.* FROM (SELECT pg_current_snapshot()::text AS snapshot) AS s "
            f"LEFT JOIN ((SELECT {columns} FROM {table} WHERE id > %s ORDER BY id LIMIT %s) "
            "UNION ALL "
            "(SELECT g.* FROM unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi), "
            # OFFSET 0: one index range scan per gap, never a join over the table.
            f"LATERAL (SELECT {columns} FROM {table} WHERE id BETWEEN r.lo AND r.hi OFFSET 0) AS g)"
            ") AS c ON TRUE"
        )
        params: list[Any] = [
            journal.seen,
            room,
            [g.first for g in journal.gaps],
            [g.last for g in journal.gaps],
        ]
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            result = cursor.fetchall()
        snapshot = Snapshot.parse(result[0][0])
        journal.absorb(snapshot, [row[1:] for row in result if row[1] is not None])
        if journal.asking:
            journal.adopt(snapshot, self._journal_writers())

    def _journal_writers(self) -> frozenset[int]:
        """The (32-bit) ids of the transactions holding or awaiting any lock on the
        journal table, prepared transactions included (they hold their locks
        under a virtual transaction of their own, with no pid)."""
        table, _columns = self._journal()
        sql = (
            "SELECT DISTINCT t.transactionid::text FROM pg_locks AS r "
            "JOIN pg_locks AS t ON t.virtualtransaction = r.virtualtransaction "
            "AND t.locktype = 'transactionid' AND t.granted "
            "WHERE r.locktype = 'relation' AND r.relation = %s::regclass "
            "AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, [table])
            return frozenset(int(x) for (x,) in cursor.fetchall())

    def _journal(self) -> tuple[str, str]:
        """The journal's table and the columns of a :data:`Read`, quoted for SQL."""
        from alarms.models import AlarmChange

        quote = connections[self.alias].ops.quote_name
        meta = AlarmChange._meta
        column = {f.name: f.column for f in meta.concrete_fields}
        names = ("id", "alarm_id", "kind", "user_id", "session", "created_at")
        return quote(meta.db_table), ", ".join(quote(column[n]) for n in names)

    def viewers(
        self,
        logins: Sequence[Login],
        languages: Sequence[str],
        alarm_ids: list[int],
        *,
        chosen: Sequence[bool] | None = None,
    ) -> list[ConnectState | Exception]:
        """Each reader's viewer, receipts and session, for many readers at once.

        Who each is comes from :func:`~alarms.broker.sessions.authenticate`,
        whose query for the users brings their preferences along; then one
        query for the groups of all these users and one for their receipts of
        ``alarm_ids``. A reader speaks their stored language unless theirs in
        ``languages`` was ``chosen`` (``?lang=``), and has their mute floor.
        A login whose decision raised gets its error in place of a state.
        """
        authenticate(logins)
        users = [
            login.user if getattr(login.user, "is_authenticated", False) else None
            for login in logins
        ]
        signed_in = [user for user in users if user is not None]
        groups = _group_ids(signed_in)
        prefs = self._preferences(signed_in)
        receipts = self._receipts({user.pk for user in signed_in}, alarm_ids)
        states: list[ConnectState | Exception] = []
        asked = chosen if chosen is not None else [False] * len(logins)
        for login, user, language, fixed in zip(logins, users, languages, asked, strict=True):
            if login.error is not None:
                states.append(login.error)
                continue
            if user is None:
                states.append(ConnectState(Viewer(language=language), set(), set()))
                continue
            stored_language, mute_below = prefs.get(user.pk, ("", ""))
            viewer = Viewer(
                user_id=user.pk,
                is_staff=bool(user.is_staff),
                group_ids=groups[user.pk],
                # A stored language the site no longer speaks falls back as a request's would.
                language=language
                if fixed or not stored_language
                else supported_language(stored_language) or language,
                muted=muted_levels(mute_below),
            )
            seen, dismissed = receipts.get(user.pk, ((), ()))
            key = getattr(login.session, "session_key", None)
            expires_at = login.expires_at if key else None
            # Sets of the stream's own: a subscriber adds to its dismissed set.
            states.append(ConnectState(viewer, set(seen), set(dismissed), key, expires_at))
        return states

    def _preferences(self, users: list[Any]) -> dict[Any, tuple[str, str]]:
        """Each user's stored language and mute floor: from the user query where
        it brought them (``sessions.authenticate``), else one query for the rest."""
        found: dict[Any, tuple[str, str]] = {}
        missing: set[Any] = set()
        for user in users:
            cached = _cached_preferences(user)
            if cached is _NOT_CACHED:
                missing.add(user.pk)
            elif cached is not None:
                found[user.pk] = (cached.language, cached.mute_below)
        if missing:
            found.update(self.preferences_of(missing, ("language", "mute_below")))
        return found

    def preferences_of(
        self, user_ids: Iterable[Any], names: Sequence[str] = FIELDS
    ) -> dict[Any, tuple[str, ...]]:
        """The stored ``names`` preferences of each of ``user_ids`` that has a row."""
        from alarms.models import Preferences

        rows = (
            Preferences.objects.using(self.alias)
            .filter(user_id__in=list(user_ids))
            .order_by()
            .values_list("user_id", *names)
        )
        return {row[0]: tuple(row[1:]) for row in rows}

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
                    # Never "test" rows (an operator's test send): a test goes to
                    # the streams open when it is sent, and a page opened or
                    # resumed later must not show it again as if it were news.
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
            bisect_right(ids, seq) : bisect_right(ids, head)
        ]:
            if kind == "alarm":
                self.changed.add(alarm_id)
                if detail:
                    self.deleted[alarm_id] = detail
            elif user_id is not None:
                self.dismissed.setdefault(user_id, set()).add(alarm_id)


_NOT_CACHED = object()


def _cached_preferences(user: Any) -> Any:
    """The user's ``alarm_preferences`` as its query brought it (None: no row),
    or ``_NOT_CACHED`` when it was not read with the user."""
    descriptor = getattr(type(user), "alarm_preferences", None)
    related = getattr(descriptor, "related", None)
    if related is None or not related.is_cached(user):
        return _NOT_CACHED
    return related.get_cached_value(user)


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

"""The change journal: every write a stream must see leaves a numbered row.

Which writes record a row, and where (each in the transaction of the write):

- an alarm or a translation saved or deleted one at a time: ``Alarm.save``,
  ``Alarm.delete``, ``AlarmTranslation.save``, ``AlarmTranslation.delete``;
- in bulk: the ``update``, ``bulk_create`` and ``delete`` of ``AlarmQuerySet`` and
  ``AlarmTranslationQuerySet`` (``alarms.querysets``), one row per alarm touched;
  ``bulk_update`` runs ``update``. An ``Alarm.objects.bulk_create`` that cannot tell
  which ids it wrote (``ignore_conflicts``) raises and writes nothing;
- an alarm's users or groups changed from either side (``add``, ``remove``,
  ``set``, ``clear``): ``m2m_changed`` below, Django's one hook into those managers;
- a dismissal: ``alarms.api.dismiss``.

So the admin, ``alarms.api``, ``manage.py send_alarm`` and plain ORM code all take
the same path: the model layer. What goes around it reaches open streams only when
they reconnect: raw SQL, writes to the users and groups tables of the relations
(``Alarm.users.through``) themselves, ``QuerySet._raw_delete`` (``prune_alarms``
deletes ended alarms that way on purpose), fixtures (``loaddata`` saves with
``save_base(raw=True)``), receipts written other than by ``alarms.api``, and
``alarm.translations.add(existing)`` with ``bulk=True`` (an update through Django's
base manager: save the translation instead).

Row numbers need not follow commit order, and on PostgreSQL they do not: two
writers draw ids from the sequence, and the one with the lower id may commit
later (or roll back). No writer waits for another. A reader that kept only
"the last id I saw" would then skip the late row, so the reader is gap-aware
(``alarms.broker.reads.JournalCursor``). Its position, which every stream's
event ids and every resume are counted from, moves only over ids that are
final. An id it does not find below one it found is a gap: the rows above it
are held back, in id order. For each gap it asks, just after the read, which
transactions hold a lock on the journal table (``pg_locks``): the gap's
possible writers. A committed row fills its gap at the next read (its
``NOTIFY`` brings one). A gap is final at a read whose own snapshot counts
every one of its possible writers as finished: that read shows the row if it
ever will, and if not, the id is passed over for good. A rollback sends no
``NOTIFY``, so while a gap is pending the broker reads again on a short timer.

Why that is enough. The writer that drew the missing id ``g`` took the lock on
the journal table before its ``INSERT`` drew ``g`` (PostgreSQL locks a table
before it runs a statement on it), and holds it until it ends. The reader
found a higher id, drawn after ``g`` and committed before the read, so the
lock was taken before the read. After the read the writer either still holds
it, and is one of the gap's possible writers, or has ended, and every later
read's snapshot shows its row if it wrote one (a transaction leaves the list
of running ones before it lets go of its locks). A possible writer counts as
finished for a snapshot once it is below the snapshot's ``xmax`` and not in
its list of running transactions: then a read in that snapshot sees its rows.

Two things the obvious shortcuts get wrong. The snapshot's own list of
running transactions (``pg_snapshot_xip``) is not the gap's list of writers:
it leaves out every transaction that took its id after the last one to end
(at or past ``xmax``), and a writer that took its id after the one whose
higher row was read is one of those. And ``pg_xact_status`` says "committed"
a moment before the transaction leaves the list of running ones, when a
snapshot still does not show its rows.

The lock table names transactions by their id: each journal write first
gives its transaction one (``SELECT pg_current_xact_id()``, see ``_write``)
if it has none yet (a logout's session row is the first write of its
transaction). An ``INSERT`` alone takes its id only when it stores the row,
after it drew the row's number; asked in between, the lock table would name
no transaction for it. The ids are drawn in order only with the sequence's
``CACHE`` at 1 (PostgreSQL's and Django's default): with a cache, each
connection draws from a block of its own. And only ``alarms.journal`` may
insert journal rows, as its writes do.

What this costs a reader is a held-back delivery while a lower id is open: in
practice the milliseconds between a writer's journal insert and its commit.
A rolled-back journal write holds the rows above it until the journal writers
that were running when its gap was seen have ended, and at least one re-check
(``GAP_RECHECK``). SQLite serialises writers, so its ids follow commit order
by themselves and its reader keeps the plain "rows past my position".

The ``NOTIFY`` is issued in the same transaction: it is delivered on commit,
never on rollback, and a crash between the two is impossible. With
``ALARMS["WAKE_URL"]`` the write does not notify: the brokers are woken on
Redis after the commit (``alarms.broker.redis``, which says what covers the
moment between the two).

Besides alarm changes and dismissals, the journal carries what an open stream's
authorisation depends on, so every process re-makes it within a read:
``access`` rows (a user's groups, flags or password changed, or the user was
deleted: their streams are authorised again from their sessions),
``session`` rows (a session ended: the streams opened with it close) and
``prefs`` rows (a user's preferences changed: their streams close, and the
browser reconnects with the new language and mute floor).

And one kind that is no change at all: ``test`` rows, an operator's "Send a
test to me" from the admin (``record_test``). The journal is the one path that
reaches every process, so the test travels on it; the broker sends it to that
user's open streams and nowhere else, and never replays it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model, user_logged_out
from django.db import connections, router, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver
from django.utils import timezone

from alarms.conf import get_config

# Arbitrary but fixed. Journal writes take no lock; storm control
# (``alarms.storm``) serialises the sends it checks with this one.
ADVISORY_LOCK_KEY = 0x616C61726D73  # "alarms"


def record(
    alarm_ids: Iterable[int],
    *,
    kind: str = "alarm",
    user_id: int | None = None,
    using: str,
) -> None:
    """One row per alarm id (duplicates dropped), in the transaction of ``using``."""
    from alarms.models import AlarmChange

    ids = sorted(set(alarm_ids))
    rows = [AlarmChange(alarm_id=i, kind=kind, user_id=user_id) for i in ids]
    _write(rows, using)


def deletion_details(alarm_ids: Iterable[int], *, using: str) -> dict[int, dict[str, Any]]:
    """What a resuming reader's broker needs of a deleted alarm to decide whether
    that reader may have had it on screen (and so gets a ``retract``): when it
    was published and whom it was for. Read before the delete: the users and
    groups go with it."""
    from alarms.models import Alarm

    ids = list(alarm_ids)
    if not ids:
        return {}
    rows = Alarm._base_manager.using(using).filter(pk__in=ids)
    details: dict[int, dict[str, Any]] = {
        pk: {"audience": audience, "publish_at": publish_at.isoformat(), "users": [], "groups": []}
        for pk, audience, publish_at in rows.values_list("pk", "audience", "publish_at")
    }
    for name, through, column in (
        ("users", Alarm.users.through, "user_id"),
        ("groups", Alarm.groups.through, "group_id"),
    ):
        members = through.objects.using(using).filter(alarm_id__in=ids).order_by(column)
        for alarm_id, member in members.values_list("alarm_id", column):
            details[alarm_id][name].append(member)
    return details


def record_deleted(details: dict[int, dict[str, Any]], *, using: str) -> None:
    """The alarms of ``deletion_details`` are deleted: one row each, with its detail."""
    from alarms.models import AlarmChange

    rows = [
        AlarmChange(alarm_id=pk, detail=json.dumps(detail, separators=(",", ":")))
        for pk, detail in sorted(details.items())
    ]
    _write(rows, using)


def record_access(user_ids: Iterable[int]) -> None:
    """The access of these users changed: their open streams are authorised again."""
    from alarms.models import AlarmChange

    kind = AlarmChange.Kind.ACCESS
    rows = [AlarmChange(alarm_id=0, kind=kind, user_id=u) for u in sorted(set(user_ids))]
    _write(rows, router.db_for_write(AlarmChange))


def record_session_end(session_key: str, user_id: int | None) -> None:
    """A session ended: the streams opened with it close."""
    from alarms.models import AlarmChange

    row = AlarmChange(
        alarm_id=0,
        kind=AlarmChange.Kind.SESSION,
        user_id=user_id,
        session=session_digest(session_key),
    )
    _write([row], router.db_for_write(AlarmChange))


#: The most a test row's detail may hold (characters of JSON): every translation
#: of an alarm at its longest fits many times over; more is no alarm of ours.
MAX_TEST_DETAIL = 256 * 1024


class TestTooLarge(ValueError):
    """The payloads of a test send are larger than ``MAX_TEST_DETAIL``."""


def record_test(user_id: int, payloads: list[dict[str, Any]]) -> None:
    """Send ``payloads`` (reader payloads, one per language) to the open streams of
    ``user_id`` only, marked as a test: one ``test`` row, no alarm, no receipt.

    Raises :class:`TestTooLarge` (and writes nothing) past ``MAX_TEST_DETAIL``.
    """
    from alarms.models import AlarmChange

    detail = json.dumps(payloads, ensure_ascii=False, separators=(",", ":"))
    if len(detail) > MAX_TEST_DETAIL:
        raise TestTooLarge(f"{len(detail)} characters of test payloads, {MAX_TEST_DETAIL} at most")
    row = AlarmChange(alarm_id=0, kind=AlarmChange.Kind.TEST, user_id=user_id, detail=detail)
    _write([row], router.db_for_write(AlarmChange))


def record_preferences(user_id: int) -> None:
    """A user's preferences changed: their open streams close and reconnect
    with the new ones (``alarms.preferences.store``)."""
    from alarms.models import AlarmChange

    row = AlarmChange(alarm_id=0, kind=AlarmChange.Kind.PREFS, user_id=user_id)
    _write([row], router.db_for_write(AlarmChange))


def session_digest(session_key: str) -> str:
    """What the journal keeps of a session key: enough to match it, never to use it."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def _write(rows: list[Any], using: str) -> None:
    from alarms.models import AlarmChange

    if not rows:
        return
    connection = connections[using]
    # Inside the caller's transaction (a receipt, a save) no savepoint: an error here
    # fails the whole write anyway, and a savepoint is two more round trips.
    with transaction.atomic(using=using, savepoint=False):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if get_config()["WAKE_URL"]:
                    # The brokers are woken on Redis after the commit.
                    cursor.execute("SELECT pg_current_xact_id()")
                else:
                    # An id for the transaction before the insert draws row ids
                    # (see above), and the NOTIFY, which PostgreSQL sends at commit
                    # wherever it stands in the transaction: one round trip.
                    cursor.execute(
                        "SELECT pg_current_xact_id(), pg_notify(%s, '')",
                        [get_config()["CHANNEL"]],
                    )
        AlarmChange.objects.using(using).bulk_create(rows)
        # Wake the brokers as soon as the outer transaction commits: once, however
        # many journal writes it holds (a PUBLISH each would be a round trip each).
        if not _wake_pending(connection):
            transaction.on_commit(partial(_wake_brokers, using), using=using)


def _wake_pending(connection: Any) -> bool:
    """Whether this transaction already wakes the brokers at its commit. Django
    drops the hooks of a savepoint rolled back, so a write after one registers
    again. (``run_on_commit`` is Django's list of hooks, a private attribute:
    without it, every write registers its own.)"""
    hooks = getattr(connection, "run_on_commit", ())
    return any(isinstance(hook[1], partial) and hook[1].func is _wake_brokers for hook in hooks)


def _wake_brokers(using: str) -> None:
    from alarms.broker import wake_local

    # This process's broker first: it needs no round trip.
    wake_local()
    if get_config()["WAKE_URL"] and connections[using].vendor == "postgresql":
        # Here, not at the top: the broker's modules import the models.
        from alarms.broker import redis

        redis.wake_after_commit(using)


def _audience_changed(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    using: str,
    **kwargs: Any,
) -> None:
    if not action.startswith("post_"):
        return
    from alarms.models import Alarm

    if not reverse:
        record([instance.pk], using=using)
    elif action == "post_clear":
        # A user or group lost all its alarms: which ones is no longer known
        # here, so every alarm that targets anyone is re-read.
        ids = Alarm.objects.using(using).filter(audience="selected").values_list("pk", flat=True)
        record(ids, using=using)
    else:
        record(pk_set or (), using=using)


def connect_audience_signals() -> None:
    from alarms.models import Alarm

    for through in (Alarm.users.through, Alarm.groups.through):
        m2m_changed.connect(
            _audience_changed, sender=through, dispatch_uid=f"alarms.journal.{through.__name__}"
        )


# -- what a stream's authorisation depends on -------------------------------

# Fields of the user model that decide what a stream may read, or whether its
# session still holds (the password: Django's session hash is derived from it).
_ACCESS_FIELDS = frozenset({"is_active", "is_staff", "is_superuser", "password"})


def _user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any
) -> None:
    if created:
        return  # no stream can belong to a user that did not exist
    if update_fields is not None and _ACCESS_FIELDS.isdisjoint(update_fields):
        return  # e.g. the last_login that every login saves
    record_access([instance.pk])


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    record_access([instance.pk])


def _user_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    if not reverse:  # user.groups.add(...): one user
        if action.startswith("post_"):
            record_access([instance.pk])
    elif action == "pre_clear":  # group.user_set.clear(): who is in it is gone after
        instance._alarms_cleared_users = _members(instance)
    elif action == "post_clear":
        record_access(getattr(instance, "_alarms_cleared_users", ()))
    elif action.startswith("post_"):
        record_access(pk_set or ())


def _group_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # The membership rows go by cascade, which sends no m2m_changed; this row
    # commits with the delete, so the streams are authorised again after it.
    record_access(_members(instance))


def _members(group: Any) -> list[int]:
    return list(get_user_model()._default_manager.filter(groups=group).values_list("pk", flat=True))


@receiver(user_logged_out, dispatch_uid="alarms.journal.logged_out")
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        record_session_end(key, getattr(user, "pk", None))


def _session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # flush() and logout on the database-backed engines. An expired session's
    # streams have ended at its expiry already (clearsessions deletes only those),
    # and one that signed nobody in has no stream to end: every login deletes
    # the visitor's session it replaces, and that needs no journal row.
    if instance.expire_date <= timezone.now():
        return
    try:
        signed_in = SESSION_KEY in instance.get_decoded()
    except Exception:  # data this secret key cannot read: no stream of ours has it
        return
    if signed_in:
        record_session_end(instance.session_key, None)


def connect_access_signals() -> None:
    user_model = get_user_model()
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="alarms.journal.user_saved")
    post_delete.connect(
        _user_deleted, sender=user_model, dispatch_uid="alarms.journal.user_deleted"
    )
    groups = getattr(user_model, "groups", None)
    if groups is not None:
        m2m_changed.connect(
            _user_groups_changed,
            sender=groups.through,
            dispatch_uid="alarms.journal.user_groups",
        )
        pre_delete.connect(
            _group_deleted,
            sender=groups.field.related_model,
            dispatch_uid="alarms.journal.group_deleted",
        )
    if "django.contrib.sessions" in settings.INSTALLED_APPS:
        from django.contrib.sessions.models import Session

        post_delete.connect(
            _session_deleted, sender=Session, dispatch_uid="alarms.journal.session_deleted"
        )

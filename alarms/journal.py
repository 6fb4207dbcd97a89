"""The change journal: every write a stream must see leaves a numbered row.

Row numbers must follow commit order, or a reader that keeps "the last number
I saw" would skip a transaction that took a lower number but committed later.
SQLite serialises writers, so its numbers follow commit order by themselves.
On PostgreSQL each writer takes a transaction-scoped advisory lock just before
it inserts its row and holds it to commit, so the next number goes only to a
transaction that starts its journal write after this one has committed. The
lock is held from the journal insert to the commit: a few statements at most.

The ``NOTIFY`` is issued in the same transaction: it is delivered on commit,
never on rollback, and a crash between the two is impossible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from alarms.conf import get_config

# Arbitrary but fixed: the advisory lock key the journal writers share.
ADVISORY_LOCK_KEY = 0x616C61726D73  # "alarms"


def record(
    alarm_ids: Iterable[int], *, kind: str = "alarm", user_id: int | None = None, using: str
) -> None:
    from alarms.models import AlarmChange

    ids = sorted(set(alarm_ids))
    if not ids:
        return
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        AlarmChange.objects.using(using).bulk_create(
            [AlarmChange(alarm_id=i, kind=kind, user_id=user_id) for i in ids]
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [get_config()["CHANNEL"]])
    # Wake this process's broker as soon as the outer transaction commits.
    transaction.on_commit(_wake_local_broker, using=using)


def _wake_local_broker() -> None:
    from alarms.broker import wake_local

    wake_local()


@receiver(post_save, sender="alarms.Alarm", dispatch_uid="alarms.journal.alarm_saved")
@receiver(post_delete, sender="alarms.Alarm", dispatch_uid="alarms.journal.alarm_deleted")
def _alarm_changed(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    record([instance.pk], using=using)


@receiver(post_save, sender="alarms.AlarmTranslation", dispatch_uid="alarms.journal.tr_saved")
@receiver(post_delete, sender="alarms.AlarmTranslation", dispatch_uid="alarms.journal.tr_deleted")
def _translation_changed(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    record([instance.alarm_id], using=using)


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

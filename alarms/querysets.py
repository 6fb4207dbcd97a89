"""The SQL form of the rules in ``alarms.rules``, and the bulk writes that journal.

Each rule has one SQL form here (the database cannot call Python), next to the
name of its Python form; ``tests/test_rules.py`` checks the two against each other.

The bulk writes (``update``, ``bulk_create``, ``delete``) record a journal row for
every alarm they touch, in the transaction of the write; ``bulk_update`` is a series
of ``update()`` calls, so it does too (``tests/test_journal.py`` holds Django to that).
``alarms.journal`` lists every write and the few that are not journaled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import models, router, transaction
from django.db.models import Case, CharField, Q, Value, When
from django.db.models.functions import Now

from alarms import journal, rules

if TYPE_CHECKING:
    from alarms.models import Alarm, AlarmTranslation

# Time windows are compared with the database clock (Now()), never a time frozen
# in Python, so every process and query agrees on "now". One Q per status of
# rules.status, in its order of precedence.


def _withdrawn() -> Q:
    return Q(withdrawn_at__isnull=False)


def _scheduled() -> Q:
    return Q(withdrawn_at__isnull=True, publish_at__gt=Now())


def _expired() -> Q:
    return Q(withdrawn_at__isnull=True, expires_at__lte=Now())


def _current() -> Q:
    return Q(withdrawn_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=Now()))


def _live() -> Q:
    return _current() & Q(publish_at__lte=Now())


def _write_db(queryset: models.QuerySet[Any]) -> str:
    # What QuerySet.db answers once a queryset is marked for writing. _db and
    # _hints are private to Django, read on purpose; the stubs do not declare them.
    db: str | None = queryset._db  # type: ignore[attr-defined]
    hints: dict[str, Any] = queryset._hints  # type: ignore[attr-defined]
    return db or router.db_for_write(queryset.model, **hints)


class AlarmQuerySet(models.QuerySet["Alarm"]):
    # -- time: rules.status, rules.is_live, rules.is_current --------------------

    def live(self) -> AlarmQuerySet:
        """Python form: ``rules.is_live``."""
        return self.filter(_live())

    def scheduled(self) -> AlarmQuerySet:
        return self.filter(_scheduled())

    def expired(self) -> AlarmQuerySet:
        return self.filter(_expired())

    def withdrawn(self) -> AlarmQuerySet:
        return self.filter(_withdrawn())

    def published(self) -> AlarmQuerySet:
        """Live or expired: what a reader may have seen."""
        return self.filter(_live() | _expired())

    def current(self) -> AlarmQuerySet:
        """Live or still to come: what the broker keeps in memory.

        Python form: ``rules.is_current``.
        """
        return self.filter(_current())

    def with_status(self) -> AlarmQuerySet:
        """Annotated with ``status_code``. Python form: ``rules.status``."""
        return self.annotate(
            status_code=Case(
                When(_withdrawn(), then=Value(rules.WITHDRAWN)),
                When(_scheduled(), then=Value(rules.SCHEDULED)),
                When(_expired(), then=Value(rules.EXPIRED)),
                default=Value(rules.LIVE),
                output_field=CharField(),
            )
        )

    # -- audience: rules.can_see ------------------------------------------------

    def visible_to(self, user: Any) -> AlarmQuerySet:
        """Python form: ``rules.can_see``."""
        if not getattr(user, "is_authenticated", False):
            return self.filter(audience=rules.EVERYONE)
        audiences = [rules.EVERYONE, rules.AUTHENTICATED]
        if user.is_staff:
            audiences.append(rules.STAFF)
        selected = Q(audience=rules.SELECTED) & (Q(users=user) | Q(groups__in=user.groups.all()))
        ids = self.filter(selected).values("pk")
        return self.filter(Q(audience__in=audiences) | Q(pk__in=ids))

    def not_dismissed_by(self, user: Any) -> AlarmQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self
        # One filter() call, so that both conditions hold of the same receipt: in an
        # exclude() they may hold of two (the user's seen, another's dismissal).
        dismissed = self.model._default_manager.filter(
            receipts__user=user, receipts__dismissed_at__isnull=False
        )
        return self.exclude(pk__in=dismissed.values("pk"))

    def for_user(self, user: Any) -> AlarmQuerySet:
        """Live now, visible to ``user``, not dismissed by them."""
        return self.live().visible_to(user).not_dismissed_by(user)

    # -- writes that journal --------------------------------------------------------

    def update(self, **kwargs: Any) -> int:
        using = _write_db(self)
        with transaction.atomic(using=using, savepoint=False):
            # Exactly the rows journaled are updated, even if others start to
            # match meanwhile.
            ids = list(self.using(using).order_by().values_list("pk", flat=True))
            count = super(AlarmQuerySet, self.using(using).filter(pk__in=ids)).update(**kwargs)
            journal.record(ids, using=using)
        return count

    def bulk_create(self, objs: Iterable[Alarm], *args: Any, **kwargs: Any) -> list[Alarm]:
        using = _write_db(self)
        # A savepoint: refusing below undoes the insert, not the caller's transaction.
        with transaction.atomic(using=using):
            created = super().bulk_create(objs, *args, **kwargs)
            ids = [a.pk for a in created]
            if None in ids:
                # ignore_conflicts, or a database that returns no ids: the journal
                # cannot name the rows, and a silent miss is worse than an error.
                raise TypeError(
                    "Alarm.objects.bulk_create() could not tell which alarms it wrote, so "
                    "open streams would never hear of them: give the alarms their ids, "
                    "or create them one by one."
                )
            journal.record(ids, using=using)
        return created

    def delete(self) -> tuple[int, dict[str, int]]:
        using = _write_db(self)
        with transaction.atomic(using=using, savepoint=False):
            ids = list(self.using(using).order_by().values_list("pk", flat=True))
            # Read before the delete: the audience's rows go with it.
            details = journal.deletion_details(ids, using=using)
            result = super(AlarmQuerySet, self.using(using).filter(pk__in=ids)).delete()
            journal.record_deleted(details, using=using)
        return result


def audience_users(alarm: Alarm) -> models.QuerySet[Any]:
    """The user accounts ``alarm`` reaches: ``AlarmQuerySet.visible_to`` turned
    around, for one alarm (escalation by email asks "who", not "what").

    Python form: ``rules.can_see`` with a ``user_id`` (signed-in users only).
    """
    user_model = get_user_model()
    users = user_model._default_manager.all()
    if alarm.audience in (rules.EVERYONE, rules.AUTHENTICATED):
        return users
    if alarm.audience == rules.STAFF:
        return users.filter(is_staff=True)
    if alarm.audience == rules.SELECTED:
        # Subqueries, not a join: a member of two of the alarm's groups is one row.
        groups = alarm.groups.values("pk")
        members = user_model._default_manager.filter(groups__in=groups).values("pk")
        return users.filter(Q(pk__in=alarm.users.values("pk")) | Q(pk__in=members))
    return users.none()


class AlarmTranslationQuerySet(models.QuerySet["AlarmTranslation"]):
    """Each write records a journal row for the alarms whose text it changes."""

    def update(self, **kwargs: Any) -> int:
        using = _write_db(self)
        with transaction.atomic(using=using, savepoint=False):
            rows = list(self.using(using).order_by().values_list("pk", "alarm_id"))
            pks = [pk for pk, _alarm in rows]
            qs = self.using(using).filter(pk__in=pks)
            count = super(AlarmTranslationQuerySet, qs).update(**kwargs)
            alarm_ids = {alarm for _pk, alarm in rows}
            if "alarm" in kwargs or "alarm_id" in kwargs:  # moved: the new alarms too
                moved = self.model._base_manager.using(using).filter(pk__in=pks)
                alarm_ids |= set(moved.values_list("alarm_id", flat=True))
            journal.record(alarm_ids, using=using)
        return count

    def bulk_create(
        self, objs: Iterable[AlarmTranslation], *args: Any, **kwargs: Any
    ) -> list[AlarmTranslation]:
        using = _write_db(self)
        with transaction.atomic(using=using, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            journal.record((t.alarm_id for t in created), using=using)
        return created

    def delete(self) -> tuple[int, dict[str, int]]:
        using = _write_db(self)
        with transaction.atomic(using=using, savepoint=False):
            rows = list(self.using(using).order_by().values_list("pk", "alarm_id"))
            qs = self.using(using).filter(pk__in=[pk for pk, _alarm in rows])
            result = super(AlarmTranslationQuerySet, qs).delete()
            journal.record({alarm for _pk, alarm in rows}, using=using)
        return result

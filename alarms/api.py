"""The public verbs of the alarms app.

Their writes reach open streams through the change journal: the model layer
records it for alarms, translations and audiences (``alarms.journal`` lists how),
and ``dismiss`` records the dismissals itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from alarms import journal, storm
from alarms.models import Alarm, AlarmReceipt, AlarmTranslation, Audience, Level
from alarms.rules import MAX_MESSAGE, MAX_TITLE, MAX_URL
from alarms.translation import default_language
from alarms.validators import is_safe_link, validate_storable_text

__all__ = ["dismiss", "mark_seen", "send_alarm", "withdraw"]


def send_alarm(
    translations: Mapping[str, Mapping[str, str]],
    *,
    level: str = Level.INFO,
    audience: str | None = None,
    users: Iterable[Any] = (),
    groups: Iterable[Group | str] = (),
    url: str = "",
    publish_at: datetime | None = None,
    expires_at: datetime | None = None,
    created_by: Any = None,
) -> Alarm:
    """Create an alarm with its translations in one transaction, and return it.

    ``translations`` maps a language code of ``settings.LANGUAGES`` to
    ``{"title": ..., "message": ...}``; the ``LANGUAGE_CODE`` one is required.
    ``audience`` defaults to "selected" when users or groups are given, else to
    "authenticated". Raises ``ValueError`` with a readable message on bad input, and
    ``alarms.storm.StormLimitExceeded`` (a ``ValueError``) when the audience already
    had ``ALARMS["STORM_LIMIT"]`` alarms within ``ALARMS["STORM_WINDOW"]`` seconds.
    """
    users = list(users)
    group_list = [_group(g) for g in groups]
    if audience is None:
        audience = Audience.SELECTED if users or group_list else Audience.AUTHENTICATED
    if level not in Level.values:
        raise ValueError(f"Unknown level {level!r}: choose one of {', '.join(Level.values)}.")
    if audience not in Audience.values:
        raise ValueError(
            f"Unknown audience {audience!r}: choose one of {', '.join(Audience.values)}."
        )
    if (users or group_list) and audience != Audience.SELECTED:
        raise ValueError('Users and groups can only be given with the audience "selected".')
    if audience == Audience.SELECTED and not (users or group_list):
        raise ValueError('The audience "selected" needs at least one user or group.')
    if len(url) > MAX_URL:
        raise ValueError(f"The link is longer than {MAX_URL} characters.")
    if url and not is_safe_link(url):
        raise ValueError(f"Unsafe link {url!r}: use http(s):// or a path starting with '/'.")
    cleaned = _clean_translations(translations)
    publish_at = publish_at or timezone.now()
    if timezone.is_naive(publish_at) or (expires_at and timezone.is_naive(expires_at)):
        raise ValueError("publish_at and expires_at must be timezone-aware.")
    if expires_at is not None and expires_at <= publish_at:
        raise ValueError("expires_at must be after publish_at.")

    # Where the alarm is written, so where its journal row takes the journal's lock
    # (ALARMS["DATABASE"] is only where the brokers read and listen).
    alias = router.db_for_write(Alarm)
    # The storm check and the insert in one transaction: check() takes a lock that
    # keeps a concurrent sender from counting before this alarm is committed.
    with transaction.atomic(using=alias):
        storm.check(
            audience,
            publish_at=publish_at,
            expires_at=expires_at,
            user_ids=[getattr(u, "pk", u) for u in users],
            group_ids=[g.pk for g in group_list],
            using=alias,
        )
        alarm = Alarm.objects.create(
            level=level,
            audience=audience,
            url=url,
            publish_at=publish_at,
            expires_at=expires_at,
            created_by=created_by,
        )
        AlarmTranslation.objects.bulk_create(
            [AlarmTranslation(alarm=alarm, language_code=c, **t) for c, t in cleaned.items()]
        )
        if users:
            alarm.users.set(users)
        if group_list:
            alarm.groups.set(group_list)
    return alarm


def _group(group: Group | str) -> Group:
    if isinstance(group, Group):
        return group
    try:
        return Group.objects.get(name=group)
    except Group.DoesNotExist:
        raise ValueError(f"Unknown group {group!r}.") from None


def _clean_translations(
    translations: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    known = {code.lower(): code for code, _name in settings.LANGUAGES}
    cleaned: dict[str, dict[str, str]] = {}
    for code, text in translations.items():
        lang = known.get(str(code).lower())
        if lang is None:
            raise ValueError(
                f"Unknown language {code!r}: this site speaks {', '.join(known.values())}."
            )
        if lang in cleaned:
            raise ValueError(f"Language {lang!r} is given twice.")
        title = str(text.get("title", "")).strip()
        message = str(text.get("message", "")).strip()
        if not title or not message:
            raise ValueError(f"The {lang!r} translation needs both a title and a message.")
        if len(title) > MAX_TITLE:
            raise ValueError(f"The {lang!r} title is longer than {MAX_TITLE} characters.")
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"The {lang!r} message is longer than {MAX_MESSAGE} characters.")
        for part, value in (("title", title), ("message", message)):
            try:
                validate_storable_text(value)
            except ValidationError as exc:
                raise ValueError(f"The {lang!r} {part}: {exc.messages[0]}") from None
        cleaned[lang] = {"title": title, "message": message}
    default = default_language()
    if default not in cleaned:
        raise ValueError(f"A translation in the default language {default!r} is required.")
    return cleaned


def withdraw(alarms: QuerySet[Alarm] | Iterable[Alarm]) -> int:
    """Take live or scheduled alarms down now; open streams retract them. Returns the count."""
    qs = (
        alarms
        if isinstance(alarms, QuerySet)
        else Alarm.objects.filter(pk__in=[a.pk for a in alarms])
    )
    now = timezone.now()
    # Alarm.objects whatever queryset came in: its update() records the journal
    # rows that make open streams retract the alarms.
    pending = Alarm.objects.using(qs.db).filter(pk__in=qs.values("pk"), withdrawn_at__isnull=True)
    return pending.update(withdrawn_at=now, updated_at=now)


def mark_seen(user: Any, alarm_ids: Iterable[int]) -> int:
    """Record that ``user`` was shown these alarms (the first time only).

    Only alarms live now and visible to ``user`` are recorded; other ids (scheduled,
    expired, withdrawn, deleted, someone else's) are ignored, not an error. Returns
    how many receipts changed.
    """
    return _receipts(user, alarm_ids, "seen_at")


def dismiss(user: Any, alarm_ids: Iterable[int]) -> int:
    """Record that ``user`` dismissed these alarms; their other streams close the toasts.

    As ``mark_seen``: only alarms live now and visible to ``user`` are dismissed, so a
    scheduled alarm still shows when it goes live. Returns how many were dismissed.
    """
    return _receipts(user, alarm_ids, "dismissed_at")


def _receipts(user: Any, alarm_ids: Iterable[int], field: str) -> int:
    if not getattr(user, "is_authenticated", False):
        return 0
    now = timezone.now()
    wanted = {int(i) for i in alarm_ids}
    alias = router.db_for_write(AlarmReceipt)
    with transaction.atomic(using=alias):
        # Only what this user's toasts can show: live now and theirs. A receipt for a
        # scheduled alarm would hide it before it is ever shown; a late one (a toast
        # racing its withdrawal or expiry) has nothing left to record.
        ids = set(
            Alarm.objects.live().visible_to(user).filter(pk__in=wanted).values_list("pk", flat=True)
        )
        existing = {
            r.alarm_id: r
            for r in AlarmReceipt.objects.select_for_update().filter(user=user, alarm_id__in=ids)
        }
        new = [AlarmReceipt(user=user, alarm_id=i, **{field: now}) for i in ids - set(existing)]
        AlarmReceipt.objects.bulk_create(new, ignore_conflicts=True)
        stale = [r for r in existing.values() if getattr(r, field) is None]
        for r in stale:
            setattr(r, field, now)
        AlarmReceipt.objects.bulk_update(stale, [field])
        changed = [r.alarm_id for r in new] + [r.alarm_id for r in stale]
        if field == "dismissed_at":
            # seen implies dismissed-ness is known; keep seen_at for the counts.
            AlarmReceipt.objects.filter(
                user=user, alarm_id__in=changed, seen_at__isnull=True
            ).update(seen_at=now)
            journal.record(changed, kind="dismiss", user_id=user.pk, using=alias)
    return len(changed)

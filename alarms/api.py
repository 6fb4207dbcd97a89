"""The public verbs of the alarms app.

Their writes reach open streams through the change journal: the model layer
records it for alarms, translations and audiences (``alarms.journal`` lists how),
and ``dismiss`` records the dismissals itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import get_language

from alarms import journal, signals, storm
from alarms.models import (
    Alarm,
    AlarmReceipt,
    AlarmToken,
    AlarmTranslation,
    Audience,
    Level,
)
from alarms.rules import MAX_EXTERNAL_ID, MAX_MESSAGE, MAX_TITLE, MAX_URL
from alarms.translation import choose_language, default_language, supported_language
from alarms.validators import is_safe_link, validate_storable_text

__all__ = [
    "AlarmEnded",
    "InvalidAlarm",
    "Published",
    "delete_alarms",
    "dismiss",
    "mark_seen",
    "publish",
    "send_alarm",
    "withdraw",
]


# The times an alarm may have: storm control looks a window either side of them,
# which must stay within what a datetime can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class InvalidAlarm(ValueError):
    """A send :func:`publish` refuses, and which part of it: ``field`` is the path to
    that part (``("translations", "fr", "title")``, ``("groups", 1)``), ``()`` for
    the send as a whole. ``str()`` is the readable message."""

    def __init__(self, message: str, *, field: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.field = field


class AlarmEnded(ValueError):
    """The external id names an alarm that was withdrawn: it is not brought back."""


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: the alarm, whether it is new, whether anything changed."""

    alarm: Alarm
    created: bool
    changed: bool


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
    ``users`` are users, their primary keys, or their usernames; ``groups`` groups
    or their names. ``audience`` defaults to "selected" when users or groups are
    given, else to "authenticated". Raises :class:`InvalidAlarm` (a ``ValueError``
    that names the field) with a readable message on bad input, and
    ``alarms.storm.StormLimitExceeded`` (a ``ValueError``) when the audience already
    had ``ALARMS["STORM_LIMIT"]`` alarms within ``ALARMS["STORM_WINDOW"]`` seconds.
    """
    return publish(
        translations,
        level=level,
        audience=audience,
        users=users,
        groups=groups,
        url=url,
        publish_at=publish_at,
        expires_at=expires_at,
        created_by=created_by,
    ).alarm


def publish(
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
    token: AlarmToken | None = None,
    external_id: str | None = None,
    dry_run: bool = False,
) -> Published:
    """:func:`send_alarm`, and the one path every sender takes (admin aside).

    With ``external_id``, a send that names an existing alarm updates it instead
    (a retried request or a repeated webhook): only what differs is written, and a
    send identical to the alarm as it stands writes nothing (``changed`` False), so
    open pages do not show it again. An alarm that was withdrawn is not brought
    back: :class:`AlarmEnded`. Sent with ``token``, the alarm records it, the
    token's default audience applies when none is named, and the token's own storm
    limit too. ``dry_run`` checks everything, storm control included, and writes
    nothing. Signals (``alarms.signals``) follow the commit.
    """
    users = _users(users)
    group_list = [_group(g, i) for i, g in enumerate(groups)]
    if audience is None:
        if users or group_list:
            audience = Audience.SELECTED
        elif token is not None:
            audience = token.audience
            if audience == Audience.SELECTED:
                group_list = list(token.groups.all())
        else:
            audience = Audience.AUTHENTICATED
    if level not in Level.values:
        raise InvalidAlarm(
            f"Unknown level {level!r}: choose one of {', '.join(Level.values)}.", field=("level",)
        )
    if audience not in Audience.values:
        raise InvalidAlarm(
            f"Unknown audience {audience!r}: choose one of {', '.join(Audience.values)}.",
            field=("audience",),
        )
    if (users or group_list) and audience != Audience.SELECTED:
        raise InvalidAlarm(
            'Users and groups can only be given with the audience "selected".',
            field=("audience",),
        )
    if audience == Audience.SELECTED and not (users or group_list):
        raise InvalidAlarm(
            'The audience "selected" needs at least one user or group.', field=("audience",)
        )
    if len(url) > MAX_URL:
        raise InvalidAlarm(f"The link is longer than {MAX_URL} characters.", field=("url",))
    if url and not is_safe_link(url):
        raise InvalidAlarm(
            f"Unsafe link {url!r}: use http(s):// or a path starting with '/'.", field=("url",)
        )
    if external_id is not None:
        external_id = external_id.strip()
        if not external_id or len(external_id) > MAX_EXTERNAL_ID:
            raise InvalidAlarm(
                f"The external id must be 1 to {MAX_EXTERNAL_ID} characters.",
                field=("external_id",),
            )
        validate_storable_text_or_raise("external id", external_id, field=("external_id",))
    cleaned = _clean_translations(translations)
    _check_time("publish_at", publish_at)
    _check_time("expires_at", expires_at)

    # Where the alarm is written, so where its journal row goes (ALARMS["DATABASE"]
    # is only where the brokers read and listen).
    alias = router.db_for_write(Alarm)
    with transaction.atomic(using=alias):
        existing = None
        if external_id is not None:
            existing = (
                Alarm.objects.using(alias).select_for_update().filter(external_id=external_id)
            ).first()
        if existing is None:
            try:
                # A savepoint: a concurrent send with the same external id that
                # committed first makes this insert fail, and this send an update.
                with transaction.atomic(using=alias):
                    result = _create(
                        cleaned,
                        level=level,
                        audience=audience,
                        users=users,
                        groups=group_list,
                        url=url,
                        publish_at=publish_at or timezone.now(),
                        expires_at=expires_at,
                        created_by=created_by,
                        token=token,
                        external_id=external_id,
                        using=alias,
                    )
            except IntegrityError:
                if external_id is None:
                    raise
                existing = (
                    Alarm.objects.using(alias).select_for_update().get(external_id=external_id)
                )
        if existing is not None:
            result = _update(
                existing,
                cleaned,
                level=level,
                audience=audience,
                users=users,
                groups=group_list,
                url=url,
                publish_at=publish_at,
                expires_at=expires_at,
                token=token,
                using=alias,
            )
        if dry_run:
            # Everything above ran, storm control included; nothing of it is kept,
            # and the on-commit signals are dropped with it.
            transaction.set_rollback(True, using=alias)
        elif result.changed:
            signal = signals.alarm_created if result.created else signals.alarm_updated
            signals.send_on_commit(signal, using=alias, alarm=result.alarm)
    return result


def _create(
    cleaned: dict[str, dict[str, str]],
    *,
    level: str,
    audience: str,
    users: list[Any],
    groups: list[Group],
    url: str,
    publish_at: datetime,
    expires_at: datetime | None,
    created_by: Any,
    token: AlarmToken | None,
    external_id: str | None,
    using: str,
) -> Published:
    if expires_at is not None and expires_at <= publish_at:
        raise InvalidAlarm("expires_at must be after publish_at.", field=("expires_at",))
    # The storm check and the insert in one transaction: check() takes a lock that
    # keeps a concurrent sender from counting before this alarm is committed.
    storm.check(
        audience,
        publish_at=publish_at,
        expires_at=expires_at,
        user_ids=[getattr(u, "pk", u) for u in users],
        group_ids=[g.pk for g in groups],
        token=token,
        using=using,
    )
    alarm = Alarm.objects.create(
        level=level,
        audience=audience,
        url=url,
        publish_at=publish_at,
        expires_at=expires_at,
        created_by=created_by,
        created_by_token=token,
        external_id=external_id,
    )
    AlarmTranslation.objects.bulk_create(
        [AlarmTranslation(alarm=alarm, language_code=c, **t) for c, t in cleaned.items()]
    )
    if users:
        alarm.users.set(users)
    if groups:
        alarm.groups.set(groups)
    return Published(alarm, created=True, changed=True)


def _update(
    alarm: Alarm,
    cleaned: dict[str, dict[str, str]],
    *,
    level: str,
    audience: str,
    users: list[Any],
    groups: list[Group],
    url: str,
    publish_at: datetime | None,
    expires_at: datetime | None,
    token: AlarmToken | None,
    using: str,
) -> Published:
    """Make ``alarm`` what the send describes, writing only what differs."""
    if alarm.withdrawn_at is not None:
        raise AlarmEnded(
            f"The alarm with external id {alarm.external_id!r} (#{alarm.pk}) was withdrawn; "
            "send under a new external id to raise it again."
        )
    publish_at = publish_at or alarm.publish_at
    if expires_at is not None and expires_at <= publish_at:
        raise InvalidAlarm("expires_at must be after publish_at.", field=("expires_at",))
    user_ids = {getattr(u, "pk", u) for u in users}
    group_ids = {g.pk for g in groups}
    old_users = set(alarm.users.values_list("pk", flat=True))
    old_groups = set(alarm.groups.values_list("pk", flat=True))
    fields = {
        "level": level,
        "audience": audience,
        "url": url,
        "publish_at": publish_at,
        "expires_at": expires_at,
    }
    changed_fields = [name for name, value in fields.items() if getattr(alarm, name) != value]
    reaches_others = (
        "audience" in changed_fields
        or "publish_at" in changed_fields
        or user_ids != old_users
        or group_ids != old_groups
    )
    if reaches_others:
        # A new audience or a new publication time is a new send as far as
        # storm control goes; the alarm does not count against itself.
        storm.check(
            audience,
            publish_at=publish_at,
            expires_at=expires_at,
            user_ids=user_ids,
            group_ids=group_ids,
            exclude=alarm.pk,
            token=token,
            using=using,
        )
    translations = {t.language_code: t for t in alarm.translations.all()}
    stale = [code for code in translations if code not in cleaned]
    edits = [
        (code, text)
        for code, text in cleaned.items()
        if code not in translations
        or (translations[code].title, translations[code].message)
        != (text["title"], text["message"])
    ]
    changed = bool(changed_fields or stale or edits or reaches_others)
    if not changed:
        return Published(alarm, created=False, changed=False)
    for name in changed_fields:
        setattr(alarm, name, fields[name])
    alarm.save(using=using)
    if stale:
        AlarmTranslation.objects.using(using).filter(alarm=alarm, language_code__in=stale).delete()
    for code, text in edits:
        translation = translations.get(code) or AlarmTranslation(alarm=alarm, language_code=code)
        translation.title, translation.message = text["title"], text["message"]
        translation.save(using=using)
    if user_ids != old_users:
        alarm.users.set(users)
    if group_ids != old_groups:
        alarm.groups.set(groups)
    return Published(alarm, created=False, changed=True)


def _check_time(name: str, value: datetime | None) -> None:
    if value is None:
        return
    if timezone.is_naive(value):
        raise InvalidAlarm("publish_at and expires_at must be timezone-aware.", field=(name,))
    try:
        in_range = EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:  # a time at the very edge whose offset takes it past the edge
        in_range = False
    if not in_range:
        raise InvalidAlarm(
            f"{name} must be from {EARLIEST.date()} to before {LATEST.date()} (UTC).",
            field=(name,),
        )


def _users(users: Iterable[Any]) -> list[Any]:
    """Users as given, with usernames (``str``) looked up; an unknown one is refused."""
    given = list(users)
    names = [u for u in given if isinstance(u, str)]
    if not names:
        return given
    User = get_user_model()
    field = User.USERNAME_FIELD
    for i, u in enumerate(given):
        if isinstance(u, str):
            validate_storable_text_or_raise("username", u, field=("users", i))
    found = {getattr(u, field): u for u in User.objects.filter(**{f"{field}__in": names})}
    for i, u in enumerate(given):
        if isinstance(u, str) and u not in found:
            raise InvalidAlarm(f"Unknown user {u!r}.", field=("users", i))
    return [found[u] if isinstance(u, str) else u for u in given]


def _group(group: Group | str, index: int = 0) -> Group:
    if isinstance(group, Group):
        return group
    validate_storable_text_or_raise("group", group, field=("groups", index))
    try:
        return Group.objects.get(name=group)
    except Group.DoesNotExist:
        raise InvalidAlarm(f"Unknown group {group!r}.", field=("groups", index)) from None


def _clean_translations(
    translations: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    known = {code.lower(): code for code, _name in settings.LANGUAGES}
    cleaned: dict[str, dict[str, str]] = {}
    for code, text in translations.items():
        lang = known.get(str(code).lower())
        at = ("translations", str(code))
        if lang is None:
            raise InvalidAlarm(
                f"Unknown language {code!r}: this site speaks {', '.join(known.values())}.",
                field=at,
            )
        if lang in cleaned:
            raise InvalidAlarm(f"Language {lang!r} is given twice.", field=at)
        title = str(text.get("title", "")).strip()
        message = str(text.get("message", "")).strip()
        if not title or not message:
            raise InvalidAlarm(
                f"The {lang!r} translation needs both a title and a message.",
                field=(*at, "message" if title else "title"),
            )
        if len(title) > MAX_TITLE:
            raise InvalidAlarm(
                f"The {lang!r} title is longer than {MAX_TITLE} characters.", field=(*at, "title")
            )
        if len(message) > MAX_MESSAGE:
            raise InvalidAlarm(
                f"The {lang!r} message is longer than {MAX_MESSAGE} characters.",
                field=(*at, "message"),
            )
        for part, value in (("title", title), ("message", message)):
            try:
                validate_storable_text(value)
            except ValidationError as exc:
                raise InvalidAlarm(
                    f"The {lang!r} {part}: {exc.messages[0]}", field=(*at, part)
                ) from None
        cleaned[lang] = {"title": title, "message": message}
    default = default_language()
    if default not in cleaned:
        raise InvalidAlarm(
            f"A translation in the default language {default!r} is required.",
            field=("translations",),
        )
    return cleaned


def validate_storable_text_or_raise(
    what: str, value: str, *, field: tuple[str | int, ...] = ()
) -> None:
    try:
        validate_storable_text(value)
    except ValidationError as exc:
        raise InvalidAlarm(f"The {what}: {exc.messages[0]}", field=field) from None


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
    alias = qs.db
    with transaction.atomic(using=alias):
        pending = Alarm.objects.using(alias).filter(
            pk__in=qs.values("pk"), withdrawn_at__isnull=True
        )
        taken = list(pending.select_for_update().order_by("pk"))
        count = (
            Alarm.objects.using(alias)
            .filter(pk__in=[a.pk for a in taken])
            .update(withdrawn_at=now, updated_at=now)
        )
        for alarm in taken:
            alarm.withdrawn_at = alarm.updated_at = now
            signals.send_on_commit(signals.alarm_withdrawn, using=alias, alarm=alarm)
    return count


def delete_alarms(alarms: QuerySet[Alarm] | Iterable[Alarm]) -> int:
    """Delete alarms with their translations and receipts; open streams retract them."""
    qs = (
        alarms
        if isinstance(alarms, QuerySet)
        else Alarm.objects.filter(pk__in=[a.pk for a in alarms])
    )
    alias = qs.db
    with transaction.atomic(using=alias):
        gone = list(
            Alarm.objects.using(alias)
            .filter(pk__in=qs.values("pk"))
            .values_list("pk", "external_id")
        )
        Alarm.objects.using(alias).filter(pk__in=[pk for pk, _ in gone]).delete()
        for pk, external_id in gone:
            signals.send_on_commit(
                signals.alarm_deleted, using=alias, alarm_id=pk, external_id=external_id
            )
    return len(gone)


def mark_seen(user: Any, alarm_ids: Iterable[int], *, language: str | None = None) -> int:
    """Record that ``user`` was shown these alarms (the first time only).

    Only alarms live now and visible to ``user`` are recorded; other ids (scheduled,
    expired, withdrawn, deleted, someone else's) are ignored, not an error. Returns
    how many receipts changed.

    ``language`` is the reader's language (default: the active one); a new receipt
    records the translation of each alarm that such a reader is shown
    (``alarms.translation.choose_language``).
    """
    return _receipts(user, alarm_ids, "seen_at", language)


def dismiss(user: Any, alarm_ids: Iterable[int], *, language: str | None = None) -> int:
    """Record that ``user`` dismissed these alarms; their other streams close the toasts.

    As ``mark_seen``: only alarms live now and visible to ``user`` are dismissed, so a
    scheduled alarm still shows when it goes live. Returns how many were dismissed.
    """
    return _receipts(user, alarm_ids, "dismissed_at", language)


def _shown_languages(alarm_ids: Collection[int], language: str | None) -> dict[int, str]:
    """The translation of each alarm a reader of ``language`` is shown (as the stream)."""
    wanted = supported_language(language or get_language())
    codes: dict[int, list[str]] = defaultdict(list)
    for alarm_id, code in AlarmTranslation.objects.filter(alarm_id__in=alarm_ids).values_list(
        "alarm_id", "language_code"
    ):
        codes[alarm_id].append(code)
    return {i: choose_language(wanted, codes[i]) or "" for i in alarm_ids}


def _receipts(user: Any, alarm_ids: Iterable[int], field: str, language: str | None) -> int:
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
        fresh = ids - set(existing)
        shown = _shown_languages(fresh, language) if fresh else {}
        # A dismissal is a sighting too: seen_at is kept for the counts.
        fields = [field, "seen_at"] if field == "dismissed_at" else [field]
        new = [
            AlarmReceipt(user=user, alarm_id=i, language=shown[i], **dict.fromkeys(fields, now))
            for i in fresh
        ]
        AlarmReceipt.objects.bulk_create(new, ignore_conflicts=True)
        if fresh:
            # A receipt another request inserted since the read above (the seen and the
            # dismiss of one toast, posted at once) made this insert a no-op: record
            # this request's field on that row instead of losing it.
            AlarmReceipt.objects.filter(
                user=user, alarm_id__in=fresh, **{f"{field}__isnull": True}
            ).update(**{name: Coalesce(name, Value(now)) for name in fields})
        stale = [r for r in existing.values() if getattr(r, field) is None]
        for r in stale:
            for name in fields:
                if getattr(r, name) is None:
                    setattr(r, name, now)
        AlarmReceipt.objects.bulk_update(stale, fields)
        changed = [r.alarm_id for r in new] + [r.alarm_id for r in stale]
        if field == "dismissed_at":
            journal.record(changed, kind="dismiss", user_id=user.pk, using=alias)
            for alarm_id in sorted(changed):
                signals.send_on_commit(
                    signals.alarm_dismissed, using=alias, alarm_id=alarm_id, user=user
                )
    return len(changed)

"""A signed-in reader's stored preferences (:class:`alarms.models.Preferences`).

One home for reading and writing them, so the stream, the pages, the broker
and the emails agree on what "not chosen" means, and every change reaches the
user's open streams on every device (a ``prefs`` journal row, see :func:`store`).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from functools import cache
from typing import Any

from django.db import router, transaction

from alarms import journal
from alarms.models import Level, Preferences

__all__ = [
    "FIELDS",
    "LEVEL_ORDER",
    "chosen_language",
    "for_request",
    "for_user",
    "is_muted",
    "muted_levels",
    "store",
    "update",
    "valid_time_zone",
    "zone_names",
]

#: Levels from lowest to highest.
LEVEL_ORDER: tuple[str, ...] = tuple(level.value for level in Level)

#: The fields a user chooses; a change to any of them reaches their open streams.
FIELDS: tuple[str, ...] = ("language", "time_zone", "mute_below", "desktop_from")

# Where a request keeps its user's preferences once read (see for_request).
_REQUEST_ATTR = "_alarms_preferences"


def for_user(user: Any) -> Preferences | None:
    """The user's stored preferences, or None for an anonymous user or one who
    never saved any (the defaults then apply)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return Preferences.objects.filter(user_id=user.pk).first()


def for_request(request: Any) -> Preferences | None:
    """:func:`for_user` of the request's user, read once per request (the
    middleware and the ``{% alarms_toasts %}`` tag share it)."""
    try:
        found: Preferences | None = getattr(request, _REQUEST_ATTR)
    except AttributeError:
        found = for_user(getattr(request, "user", None))
        setattr(request, _REQUEST_ATTR, found)
    return found


def chosen_language(prefs: Preferences | None) -> str | None:
    """The language these preferences chose, as a code of ``LANGUAGES`` (a stored
    one the site no longer speaks falls back as a request's would); None to
    follow the browser. The one rule the centre, the feed and the emails share."""
    from alarms.translation import supported_language

    return supported_language(prefs.language) if prefs is not None and prefs.language else None


def is_muted(level: str, mute_below: str) -> bool:
    """Whether an alarm of ``level`` is muted by a floor of ``mute_below``.

    Critical is never muted; a blank or unknown floor mutes nothing.
    """
    if level == Level.CRITICAL or mute_below not in LEVEL_ORDER:
        return False
    return LEVEL_ORDER.index(level) < LEVEL_ORDER.index(mute_below)


@cache
def muted_levels(mute_below: str) -> frozenset[str]:
    """The levels a floor of ``mute_below`` mutes (:func:`is_muted` as a set,
    which the broker tests per stream without a computation)."""
    return frozenset(level for level in LEVEL_ORDER if is_muted(level, mute_below))


@cache
def zone_names() -> frozenset[str]:
    """The IANA time zones this server knows (``zoneinfo.available_timezones``)."""
    return frozenset(zoneinfo.available_timezones())


def valid_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this server knows."""
    return name in zone_names()


def store(prefs: Preferences, changed: Iterable[str], *, announce: bool = True) -> None:
    """Save ``prefs``; when a field of :data:`FIELDS` is among ``changed``, the
    user's open streams close on every process and device (in the same
    transaction: a ``prefs`` journal row), and reconnect with the new language
    and mute floor; a page in another language or time zone loads again.
    Every write of preferences goes through here.

    ``announce=False`` leaves the streams alone: for a zone the browser
    detected, which the pages open now need not reload for.
    """
    with transaction.atomic(using=router.db_for_write(Preferences)):
        prefs.save()
        if announce and set(changed) & set(FIELDS):
            journal.record_preferences(prefs.user_id)


def update(user: Any, *, announce: bool = True, **values: str) -> Preferences:
    """Set some of the user's preferences (creating their row), through :func:`store`."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"Not a preference: {', '.join(sorted(unknown))}")
    with transaction.atomic(using=router.db_for_write(Preferences)):
        prefs, _created = Preferences.objects.select_for_update().get_or_create(user_id=user.pk)
        changed = [name for name, value in values.items() if getattr(prefs, name) != value]
        for name in changed:
            setattr(prefs, name, values[name])
        if changed:
            store(prefs, changed, announce=announce)
    return prefs

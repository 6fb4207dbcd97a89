"""A signed-in reader's stored preferences (:class:`alarms.models.Preferences`).

One home for reading them, so the stream, the pages, the broker and the emails
agree on what "not chosen" means.
"""

from __future__ import annotations

from typing import Any

from alarms.models import Level, Preferences

__all__ = ["LEVEL_ORDER", "for_user", "is_muted", "stored_language"]

#: Levels from lowest to highest.
LEVEL_ORDER: tuple[str, ...] = tuple(level.value for level in Level)


def for_user(user: Any) -> Preferences | None:
    """The user's stored preferences, or None for an anonymous user or one who
    never saved any (the defaults then apply)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return Preferences.objects.filter(user_id=user.pk).first()


def stored_language(user: Any) -> str | None:
    """The language the user chose, or None to follow the browser."""
    prefs = for_user(user)
    return (prefs.language or None) if prefs is not None else None


def is_muted(level: str, mute_below: str) -> bool:
    """Whether an alarm of ``level`` is muted by a floor of ``mute_below``.

    Critical is never muted; a blank or unknown floor mutes nothing.
    """
    if level == Level.CRITICAL or mute_below not in LEVEL_ORDER:
        return False
    return LEVEL_ORDER.index(level) < LEVEL_ORDER.index(mute_below)

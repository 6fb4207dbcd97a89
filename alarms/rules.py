"""The rules about alarms, each written once, as pure functions over plain values.

Who may read an alarm, whether it is live, what a reader gets, and how large its
parts may be: the models, the admin, the alarm centre, the API and the broker's
in-memory cache all call these, so a change made here reaches all of them.

The database needs the same rules as SQL; ``alarms.querysets`` holds that one SQL
form of each, and ``tests/test_rules.py`` checks it against these over generated
alarms, users and times.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from alarms.translation import choose_language, direction
from alarms.validators import is_safe_link

# -- limits ---------------------------------------------------------------------

MAX_TITLE = 200
MAX_MESSAGE = 10_000
MAX_URL = 2000
MAX_LANGUAGE_CODE = 15
# A sender's key for an alarm (HTTP API idempotency key, Alertmanager fingerprint).
MAX_EXTERNAL_ID = 200
# Alarm ids per request to the receipt and payload endpoints.
MAX_BATCH = 200

# -- audience -------------------------------------------------------------------

EVERYONE = "everyone"
AUTHENTICATED = "authenticated"
STAFF = "staff"
SELECTED = "selected"
AUDIENCES = (EVERYONE, AUTHENTICATED, STAFF, SELECTED)


def can_see(
    audience: str,
    user_ids: Collection[int],
    group_ids: Collection[int],
    *,
    user_id: int | None,
    is_staff: bool,
    viewer_group_ids: Collection[int],
) -> bool:
    """Whether a reader may see an alarm for ``audience`` aimed at ``user_ids`` and
    ``group_ids`` (used by "selected" only). ``user_id`` is None for an anonymous
    visitor. Staff see staff alarms, never other people's selected ones; an audience
    this app does not know (a row written around it) reaches nobody.

    SQL form: ``AlarmQuerySet.visible_to``.
    """
    if audience == EVERYONE:
        return True
    if user_id is None:
        return False
    if audience == AUTHENTICATED:
        return True
    if audience == STAFF:
        return is_staff
    if audience == SELECTED:
        if user_id in user_ids:
            return True
        # The broker calls this for every stream on every change: no new set
        # when it is given one already.
        # (A concrete type check: an ABC's isinstance() costs more than the rule.)
        groups = group_ids if isinstance(group_ids, (frozenset, set)) else frozenset(group_ids)
        return not groups.isdisjoint(viewer_group_ids)
    return False


# -- time window ----------------------------------------------------------------

LIVE = "live"
SCHEDULED = "scheduled"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"


def status(
    publish_at: datetime,
    expires_at: datetime | None,
    now: datetime,
    withdrawn_at: datetime | None = None,
) -> str:
    """One of ``WITHDRAWN``, ``SCHEDULED``, ``EXPIRED``, ``LIVE``, the first that holds:
    a withdrawn alarm is withdrawn whatever its times.

    SQL form: ``AlarmQuerySet.with_status`` and the filters it is built from.
    """
    if withdrawn_at is not None:
        return WITHDRAWN
    if publish_at > now:
        return SCHEDULED
    if expires_at is not None and expires_at <= now:
        return EXPIRED
    return LIVE


def is_live(
    publish_at: datetime,
    expires_at: datetime | None,
    now: datetime,
    withdrawn_at: datetime | None = None,
) -> bool:
    """Shown to readers now: ``status(...) == LIVE``, without the string.

    SQL form: ``AlarmQuerySet.live``.
    """
    return withdrawn_at is None and publish_at <= now and (expires_at is None or expires_at > now)


def is_current(
    publish_at: datetime,
    expires_at: datetime | None,
    now: datetime,
    withdrawn_at: datetime | None = None,
) -> bool:
    """Live or still to come (neither withdrawn nor expired): what the broker keeps
    in memory. ``publish_at`` is not needed (an expiry comes after the publication),
    but taken so that every time rule has the same signature.

    SQL form: ``AlarmQuerySet.current``.
    """
    return withdrawn_at is None and (expires_at is None or expires_at > now)


# -- what a reader gets ---------------------------------------------------------


def reader_payload(
    *,
    id: int,
    level: str,
    url: str,
    publish_at: datetime,
    expires_at: datetime | None,
    translations: Mapping[str, tuple[str, str]],
    language: str,
) -> dict[str, Any]:
    """The alarm as a reader of ``language`` gets it: the stream's event payload,
    the payloads endpoint's entries, the alarm centre's and the admin preview's text.

    ``translations`` maps language codes to ``(title, message)``; the one chosen is
    ``alarms.translation.choose_language``'s.
    """
    code = choose_language(language, translations) or language
    title, message = translations.get(code, ("", ""))
    return {
        "id": id,
        "level": level,
        "title": title,
        "message": message,
        "language": code,
        "dir": direction(code),
        # Checked again here: a row written around the validators (raw SQL, a
        # migration) must not reach a browser as a link.
        "url": url if is_safe_link(url) else "",
        "published_at": publish_at.isoformat(),
        "expires_at": expires_at.isoformat() if expires_at else None,
    }

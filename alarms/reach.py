"""How many readers of an alarm's audience are online now, per language, across every process.

Each process's broker publishes who it has streams open for
(``alarms.broker.presence``: one ``AlarmPresence`` row per process). Here the
admin reads the rows fresher than ``PRESENCE_TTL`` (one query), and counts an
audience against them: everyone and signed-in users from the rows alone, staff
with one query for the staff's ids, selected users and groups with one query for
the groups' members. Whom an alarm reaches is ``alarms.rules.can_see``'s rule,
counted over sets; which translation a reader gets is
``alarms.translation.choose_language``, so "fallback" means exactly what the
stream will send.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from alarms import rules
from alarms.conf import get_config
from alarms.translation import choose_language


@dataclass
class Online:
    """The readers online now, merged over every live process: per language, the
    anonymous streams and the ids of the signed-in users."""

    anonymous: dict[str, int] = field(default_factory=dict)
    users: dict[str, set[int]] = field(default_factory=dict)
    processes: int = 0

    def languages(self) -> list[str]:
        """The site's languages, then any other a stream reads in."""
        site = [code for code, _name in settings.LANGUAGES]
        others = sorted((set(self.anonymous) | set(self.users)) - set(site))
        return site + others


def online(using: str | None = None) -> Online:
    """Read the presence rows of the processes alive now (one query) and merge them."""
    from alarms.models import AlarmPresence

    config = get_config()
    fresh = timezone.now() - timedelta(seconds=float(config["PRESENCE_TTL"]))
    rows = AlarmPresence.objects.using(using or config["DATABASE"]).filter(updated_at__gt=fresh)
    found = Online()
    for text in rows.values_list("data", flat=True):
        merge(found, text)
    return found


def merge(found: Online, text: str) -> None:
    """Add one process's row to ``found``; a row this release cannot read adds nothing."""
    try:
        data = json.loads(text)
        languages = data["languages"] if data.get("v") == 1 else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    if not isinstance(languages, dict):
        return
    found.processes += 1
    for language, entry in languages.items():
        if not isinstance(entry, dict):
            continue
        anonymous = entry.get("anonymous", 0)
        if isinstance(anonymous, int) and anonymous > 0:
            found.anonymous[language] = found.anonymous.get(language, 0) + anonymous
        users = entry.get("users", ())
        if isinstance(users, list) and users:
            # A user with streams on two processes is one reader.
            found.users.setdefault(language, set()).update(u for u in users if isinstance(u, int))


@dataclass(frozen=True)
class Target:
    """An alarm's audience as the form (or the row) says it."""

    audience: str
    user_ids: frozenset[int] = frozenset()
    group_ids: frozenset[int] = frozenset()


class Members:
    """Who is staff, and who is in which group: read once for many targets."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using
        self._staff: frozenset[int] | None = None
        self._groups: dict[int, set[int]] = {}

    def staff(self) -> frozenset[int]:
        if self._staff is None:
            users = get_user_model()._default_manager.db_manager(self.using)
            self._staff = frozenset(users.filter(is_staff=True).values_list("pk", flat=True))
        return self._staff

    def load_groups(self, group_ids: Iterable[int]) -> None:
        """The members of these groups, in one query for them all."""
        wanted = set(group_ids) - set(self._groups)
        if not wanted:
            return
        relation = getattr(get_user_model(), "groups", None)
        for group_id in wanted:
            self._groups[group_id] = set()
        if relation is None:
            return
        through = relation.through
        user_field = relation.field.m2m_field_name()
        group_field = relation.field.m2m_reverse_field_name()
        rows = (
            through._default_manager.db_manager(self.using)
            .filter(**{f"{group_field}__in": wanted})
            .values_list(group_field, user_field)
        )
        for group_id, user_id in rows:
            self._groups[group_id].add(user_id)

    def selected(self, target: Target) -> set[int]:
        self.load_groups(target.group_ids)
        found = set(target.user_ids)
        for group_id in target.group_ids:
            found |= self._groups.get(group_id, set())
        return found


@dataclass
class LanguageReach:
    code: str
    readers: int
    translation: str | None  # the translation they get (None: the alarm has none)

    @property
    def fallback(self) -> bool:
        return self.readers > 0 and self.translation != self.code


@dataclass
class Reach:
    languages: list[LanguageReach]
    processes: int

    @property
    def readers(self) -> int:
        return sum(item.readers for item in self.languages)

    @property
    def fallback(self) -> int:
        return sum(item.readers for item in self.languages if item.fallback)

    def as_json(self) -> dict[str, Any]:
        names = dict(settings.LANGUAGES)
        return {
            "readers": self.readers,
            "fallback": self.fallback,
            "processes": self.processes,
            "languages": [
                {
                    "code": item.code,
                    "name": str(names.get(item.code, item.code)),
                    "readers": item.readers,
                    "translation": item.translation,
                    "fallback": item.fallback,
                }
                for item in self.languages
            ],
        }


def count(found: Online, target: Target, translations: Collection[str], members: Members) -> Reach:
    """Readers of ``target`` online in ``found``, per language, and the translation
    each language gets of an alarm with ``translations`` (language codes)."""
    audience = target.audience
    audience_ids: Collection[int] | None = None  # None: every signed-in user
    if audience == rules.STAFF:
        audience_ids = members.staff()
    elif audience == rules.SELECTED:
        audience_ids = members.selected(target)
    elif audience not in (rules.EVERYONE, rules.AUTHENTICATED):
        audience_ids = ()  # an audience this app does not know reaches nobody
    available = list(translations)
    languages = []
    for code in found.languages():
        users = found.users.get(code, set())
        if audience_ids is None:
            readers = len(users)
        elif len(audience_ids) < len(users):
            readers = sum(1 for u in audience_ids if u in users)
        else:
            readers = sum(1 for u in users if u in audience_ids)
        if audience == rules.EVERYONE:
            readers += found.anonymous.get(code, 0)
        languages.append(LanguageReach(code, readers, choose_language(code, available)))
    return Reach(languages, found.processes)

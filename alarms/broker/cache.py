"""What the broker keeps in memory: current alarms, and who a stream reads as.

The broker holds every current alarm (live or scheduled) as a ``CachedAlarm``
and decides delivery against a stream's ``Viewer`` without a query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alarms.translation import choose_language, direction
from alarms.validators import is_safe_link


@dataclass(frozen=True)
class Viewer:
    """Who a stream belongs to, as far as visibility and language go."""

    user_id: int | None = None
    is_staff: bool = False
    group_ids: frozenset[int] = frozenset()
    language: str = "en"

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None


@dataclass
class CachedAlarm:
    id: int
    level: str
    audience: str
    url: str
    publish_at: datetime
    expires_at: datetime | None
    user_ids: frozenset[int]
    group_ids: frozenset[int]
    translations: dict[str, tuple[str, str]]
    announced: bool = False
    _payloads: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_model(cls, alarm: Any, *, members: bool = True) -> CachedAlarm:
        """From an ``Alarm`` with its translations (and, with ``members``, its
        users and groups) prefetched."""
        return cls(
            id=alarm.pk,
            level=alarm.level,
            audience=alarm.audience,
            url=alarm.url,
            publish_at=alarm.publish_at,
            expires_at=alarm.expires_at,
            user_ids=frozenset(u.pk for u in alarm.users.all()) if members else frozenset(),
            group_ids=frozenset(g.pk for g in alarm.groups.all()) if members else frozenset(),
            translations={t.language_code: (t.title, t.message) for t in alarm.translations.all()},
        )

    @classmethod
    def deleted(cls, alarm_id: int, text: str) -> CachedAlarm | None:
        """A deleted alarm as far as a resume needs it, from its journal row's
        detail (``alarms.journal.deletion_detail``, as JSON); None if unreadable."""
        try:
            detail = json.loads(text)
            return cls(
                id=alarm_id,
                level="",
                audience=str(detail["audience"]),
                url="",
                publish_at=datetime.fromisoformat(detail["publish_at"]),
                expires_at=None,
                user_ids=frozenset(int(u) for u in detail.get("users", ())),
                group_ids=frozenset(int(g) for g in detail.get("groups", ())),
                translations={},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def visible_to(self, viewer: Viewer) -> bool:
        if self.audience == "everyone":
            return True
        if viewer.user_id is None:
            return False
        if self.audience == "authenticated":
            return True
        if self.audience == "staff":
            return viewer.is_staff
        return viewer.user_id in self.user_ids or not self.group_ids.isdisjoint(viewer.group_ids)

    def live(self, now: datetime) -> bool:
        return self.publish_at <= now and (self.expires_at is None or self.expires_at > now)

    def payload(self, language: str) -> dict[str, Any]:
        """The event payload for a reader of ``language``, built once per language."""
        if language not in self._payloads:
            code = choose_language(language, self.translations) or language
            title, message = self.translations.get(code, ("", ""))
            self._payloads[language] = {
                "id": self.id,
                "level": self.level,
                "title": title,
                "message": message,
                "language": code,
                "dir": direction(code),
                # Checked again here: a row written around the validators
                # (raw SQL, a migration) must not reach a browser as a link.
                "url": self.url if is_safe_link(self.url) else "",
                "published_at": self.publish_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            }
        return self._payloads[language]


def in_order(alarms: Any) -> list[CachedAlarm]:
    """Alarms in the order a reader gets them: by publication, then id."""
    return sorted(alarms, key=lambda a: (a.publish_at, a.id))

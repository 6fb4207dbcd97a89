"""What the broker keeps in memory: current alarms, and who a stream reads as.

The broker holds every current alarm (live or scheduled) as a ``CachedAlarm``
and decides delivery against a stream's ``Viewer`` without a query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alarms import rules


# One per stream (anonymous ones too), for its life: slots, no __dict__.
@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a stream belongs to, as far as visibility, language and mute go."""

    user_id: int | None = None
    is_staff: bool = False
    group_ids: frozenset[int] = frozenset()
    language: str = "en"
    #: The levels the user muted (``alarms.preferences.muted_levels``): never
    #: sent to this stream, so never seen nor dismissed by it.
    muted: frozenset[str] = frozenset()

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
        detail (``alarms.journal.deletion_details``, as JSON); None if unreadable."""
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

    def interrupts(self, viewer: Viewer) -> bool:
        """Whether ``viewer`` may read this alarm and has not muted its level."""
        return self.level not in viewer.muted and self.visible_to(viewer)

    def visible_to(self, viewer: Viewer) -> bool:
        return rules.can_see(
            self.audience,
            self.user_ids,
            self.group_ids,
            user_id=viewer.user_id,
            is_staff=viewer.is_staff,
            viewer_group_ids=viewer.group_ids,
        )

    def live(self, now: datetime) -> bool:
        return rules.is_live(self.publish_at, self.expires_at, now)

    def payload(self, language: str) -> dict[str, Any]:
        """The event payload for a reader of ``language``, built once per language."""
        found = self._payloads.get(language)
        if found is None:
            found = self._payloads[language] = rules.reader_payload(
                id=self.id,
                level=self.level,
                url=self.url,
                publish_at=self.publish_at,
                expires_at=self.expires_at,
                translations=self.translations,
                language=language,
            )
        return found


def in_order(alarms: Any) -> list[CachedAlarm]:
    """Alarms in the order a reader gets them: by publication, then id."""
    return sorted(alarms, key=lambda a: (a.publish_at, a.id))

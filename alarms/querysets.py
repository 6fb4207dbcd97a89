from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.functions import Now

if TYPE_CHECKING:
    from alarms.models import Alarm

    _Base = models.QuerySet[Alarm]
else:
    _Base = models.QuerySet


class AlarmQuerySet(_Base):
    # Time windows are compared with the database clock (Now()), never a time
    # frozen in Python, so every process and query agrees on "now".

    def live(self) -> AlarmQuerySet:
        return self.filter(withdrawn_at__isnull=True, publish_at__lte=Now()).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=Now())
        )

    def scheduled(self) -> AlarmQuerySet:
        return self.filter(withdrawn_at__isnull=True, publish_at__gt=Now())

    def expired(self) -> AlarmQuerySet:
        return self.filter(withdrawn_at__isnull=True, expires_at__lte=Now())

    def withdrawn(self) -> AlarmQuerySet:
        return self.filter(withdrawn_at__isnull=False)

    def current(self) -> AlarmQuerySet:
        """Live or still to come: what the broker keeps in memory."""
        return self.filter(withdrawn_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=Now())
        )

    def visible_to(self, user: Any) -> AlarmQuerySet:
        from alarms.models import Audience

        if not getattr(user, "is_authenticated", False):
            return self.filter(audience=Audience.EVERYONE)
        audiences = [Audience.EVERYONE, Audience.AUTHENTICATED]
        if user.is_staff:
            audiences.append(Audience.STAFF)
        selected = models.Q(audience=Audience.SELECTED) & (
            models.Q(users=user) | models.Q(groups__in=user.groups.all())
        )
        ids = self.filter(selected).values("pk")
        return self.filter(models.Q(audience__in=audiences) | models.Q(pk__in=ids))

    def not_dismissed_by(self, user: Any) -> AlarmQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self
        return self.exclude(receipts__user=user, receipts__dismissed_at__isnull=False)

    def for_user(self, user: Any) -> AlarmQuerySet:
        """Live now, visible to ``user``, not dismissed by them."""
        return self.live().visible_to(user).not_dismissed_by(user)

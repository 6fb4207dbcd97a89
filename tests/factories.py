"""Small builders for the tests: alarms with translations, users, groups."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone

from alarms.models import Alarm, AlarmTranslation

TEXT = {
    "en": ("Server restart", "The server restarts at noon."),
    "ko": ("서버 재시작", "서버가 정오에 재시작됩니다."),
    "ja": ("サーバー再起動", "サーバーは正午に再起動します。"),
    "ar": ("إعادة تشغيل الخادم", "سيُعاد تشغيل الخادم عند الظهر."),
}


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def ahead(**delta: float) -> datetime:
    return timezone.now() + timedelta(**delta)


def make_alarm(
    languages: Iterable[str] = ("en",),
    *,
    title: str | None = None,
    users: Iterable[Any] = (),
    groups: Iterable[Group] = (),
    **fields: Any,
) -> Alarm:
    """An alarm written straight to the models, so any window can be built."""
    fields.setdefault("publish_at", ago(minutes=1))
    alarm = Alarm.objects.create(**fields)
    for code in languages:
        default_title, message = TEXT[code]
        AlarmTranslation.objects.create(
            alarm=alarm,
            language_code=code,
            title=title if title and code == "en" else default_title,
            message=message,
        )
    alarm.users.set(users)
    alarm.groups.set(groups)
    return alarm


def make_user(username: str, *, groups: Iterable[Group] = (), **fields: Any) -> User:
    user = User.objects.create_user(username=username, password="pw", **fields)
    user.groups.set(groups)
    return user

from __future__ import annotations

import pytest

from alarms import preferences
from alarms.models import Preferences


@pytest.mark.parametrize(
    ("level", "floor", "muted"),
    [
        ("info", "", False),
        ("info", "warning", True),
        ("success", "warning", True),
        ("warning", "warning", False),
        ("error", "critical", True),
        ("critical", "critical", False),
        ("info", "nonsense", False),
    ],
)
def test_is_muted(level: str, floor: str, muted: bool) -> None:
    assert preferences.is_muted(level, floor) is muted


@pytest.mark.django_db
def test_stored_language_follows_the_browser_until_chosen(django_user_model) -> None:
    from django.contrib.auth.models import AnonymousUser

    user = django_user_model.objects.create_user("reader")
    assert preferences.stored_language(AnonymousUser()) is None
    assert preferences.stored_language(user) is None
    Preferences.objects.create(user=user, language="")
    assert preferences.stored_language(user) is None
    Preferences.objects.filter(user=user).update(language="ko")
    assert preferences.stored_language(user) == "ko"

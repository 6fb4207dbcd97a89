from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from alarms.models import Alarm, AlarmReceipt, Audience
from tests.factories import ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db


def ids(queryset: Any) -> set[int]:
    pks = list(queryset.values_list("pk", flat=True))
    assert len(pks) == len(set(pks)), "an alarm is listed twice"
    return set(pks)


@pytest.fixture
def windows() -> dict[str, Alarm]:
    return {
        "live": make_alarm(publish_at=ago(hours=1)),
        "live_until_later": make_alarm(publish_at=ago(hours=1), expires_at=ahead(hours=1)),
        "scheduled": make_alarm(publish_at=ahead(hours=1)),
        "scheduled_with_expiry": make_alarm(publish_at=ahead(hours=1), expires_at=ahead(hours=2)),
        "expired": make_alarm(publish_at=ago(hours=2), expires_at=ago(hours=1)),
        "withdrawn_live": make_alarm(publish_at=ago(hours=1), withdrawn_at=ago(minutes=1)),
        "withdrawn_scheduled": make_alarm(publish_at=ahead(hours=1), withdrawn_at=ago()),
        "withdrawn_expired": make_alarm(
            publish_at=ago(hours=2), expires_at=ago(hours=1), withdrawn_at=ago(hours=3)
        ),
    }


def named(windows: dict[str, Alarm], *names: str) -> set[int]:
    return {windows[n].pk for n in names}


def test_live(windows: dict[str, Alarm]) -> None:
    assert ids(Alarm.objects.live()) == named(windows, "live", "live_until_later")


def test_scheduled(windows: dict[str, Alarm]) -> None:
    assert ids(Alarm.objects.scheduled()) == named(windows, "scheduled", "scheduled_with_expiry")


def test_expired(windows: dict[str, Alarm]) -> None:
    assert ids(Alarm.objects.expired()) == named(windows, "expired")


def test_withdrawn(windows: dict[str, Alarm]) -> None:
    assert ids(Alarm.objects.withdrawn()) == named(
        windows, "withdrawn_live", "withdrawn_scheduled", "withdrawn_expired"
    )


def test_current_is_live_or_scheduled(windows: dict[str, Alarm]) -> None:
    assert ids(Alarm.objects.current()) == named(
        windows, "live", "live_until_later", "scheduled", "scheduled_with_expiry"
    )


def test_every_alarm_has_exactly_one_status(windows: dict[str, Alarm]) -> None:
    for name, alarm in windows.items():
        matches = [
            status
            for status in ("live", "scheduled", "expired", "withdrawn")
            if getattr(Alarm.objects, status)().filter(pk=alarm.pk).exists()
        ]
        assert matches == [alarm.status], name


def test_windows_move_with_the_clock() -> None:
    # Evaluated against the database's clock at query time, not a frozen value.
    alarm = make_alarm(publish_at=ahead(hours=1))
    assert not Alarm.objects.live().exists()

    Alarm.objects.filter(pk=alarm.pk).update(publish_at=ago(seconds=1))

    assert ids(Alarm.objects.live()) == {alarm.pk}


# -- audience -------------------------------------------------------------------


@pytest.fixture
def people() -> dict[str, Any]:
    night = Group.objects.create(name="Night shift")
    day = Group.objects.create(name="Day shift")
    return {
        "night": night,
        "day": day,
        "anonymous": AnonymousUser(),
        "user": make_user("user"),
        "staff": make_user("staff", is_staff=True),
        "alice": make_user("alice"),
        "bob": make_user("bob", groups=[night]),
        "both": make_user("both", groups=[night, day]),
    }


@pytest.fixture
def audiences(people: dict[str, Any]) -> dict[str, Alarm]:
    return {
        "everyone": make_alarm(audience=Audience.EVERYONE),
        "authenticated": make_alarm(audience=Audience.AUTHENTICATED),
        "staff": make_alarm(audience=Audience.STAFF),
        "alice": make_alarm(audience=Audience.SELECTED, users=[people["alice"]]),
        "night": make_alarm(audience=Audience.SELECTED, groups=[people["night"]]),
        "both_ways": make_alarm(
            audience=Audience.SELECTED,
            users=[people["both"]],
            groups=[people["night"], people["day"]],
        ),
    }


@pytest.mark.parametrize(
    ("who", "sees"),
    (
        ("anonymous", {"everyone"}),
        ("user", {"everyone", "authenticated"}),
        ("staff", {"everyone", "authenticated", "staff"}),
        ("alice", {"everyone", "authenticated", "alice"}),
        ("bob", {"everyone", "authenticated", "night", "both_ways"}),
        ("both", {"everyone", "authenticated", "night", "both_ways"}),
    ),
)
def test_visible_to(
    people: dict[str, Any], audiences: dict[str, Alarm], who: str, sees: set[str]
) -> None:
    user = people[who]

    assert ids(Alarm.objects.visible_to(user)) == {audiences[n].pk for n in sees}
    # The in-memory rule agrees with the query.
    assert {n for n, a in audiences.items() if a.is_visible_to(user)} == sees


def test_staff_does_not_see_other_peoples_selected_alarms(
    people: dict[str, Any], audiences: dict[str, Alarm]
) -> None:
    superuser = make_user("root", is_staff=True, is_superuser=True)

    assert audiences["alice"].pk not in ids(Alarm.objects.visible_to(superuser))


# -- for_user -------------------------------------------------------------------


def test_for_user_is_live_visible_and_not_dismissed(people: dict[str, Any]) -> None:
    alice, bob = people["alice"], people["bob"]
    shown = make_alarm(audience=Audience.AUTHENTICATED)
    seen = make_alarm(audience=Audience.AUTHENTICATED)
    dismissed = make_alarm(audience=Audience.AUTHENTICATED)
    make_alarm(audience=Audience.AUTHENTICATED, publish_at=ahead(hours=1))
    make_alarm(audience=Audience.AUTHENTICATED, withdrawn_at=ago())
    make_alarm(audience=Audience.STAFF)
    AlarmReceipt.objects.create(alarm=seen, user=alice, seen_at=ago())
    AlarmReceipt.objects.create(alarm=dismissed, user=alice, seen_at=ago(), dismissed_at=ago())

    assert ids(Alarm.objects.for_user(alice)) == {shown.pk, seen.pk}
    # Alice's dismissal is hers alone.
    assert ids(Alarm.objects.for_user(bob)) == {shown.pk, seen.pk, dismissed.pk}


def test_for_anonymous_visitors(people: dict[str, Any]) -> None:
    public = make_alarm(audience=Audience.EVERYONE)
    make_alarm(audience=Audience.AUTHENTICATED)
    make_alarm(audience=Audience.EVERYONE, expires_at=ago(), publish_at=ago(hours=1))

    assert ids(Alarm.objects.for_user(people["anonymous"])) == {public.pk}


def test_another_users_dismissal_is_not_the_readers() -> None:
    ann, bob = make_user("ann"), make_user("bob")
    alarm = make_alarm()
    now = ago(seconds=1)
    AlarmReceipt.objects.create(user=ann, alarm=alarm, seen_at=now)
    AlarmReceipt.objects.create(user=bob, alarm=alarm, seen_at=now, dismissed_at=now)

    assert ids(Alarm.objects.for_user(ann)) == {alarm.pk}
    assert ids(Alarm.objects.for_user(bob)) == set()

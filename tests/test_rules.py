"""The rules of ``alarms.rules``, and their SQL form in ``alarms.querysets`` checked
against them over generated alarms, users, groups and times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarms import rules
from alarms.models import Alarm, AlarmReceipt, AlarmTranslation
from tests.factories import TEXT, make_alarm

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# -- the Python form --------------------------------------------------------------


@pytest.mark.parametrize(
    ("audience", "viewer", "sees"),
    (
        (rules.EVERYONE, None, True),
        (rules.AUTHENTICATED, None, False),
        (rules.AUTHENTICATED, 1, True),
        (rules.STAFF, 1, False),
        (rules.STAFF, "staff", True),
        (rules.SELECTED, None, False),
        (rules.SELECTED, 1, True),  # by user
        (rules.SELECTED, 2, True),  # by group
        (rules.SELECTED, 3, False),
        (rules.SELECTED, "staff", False),  # staff see no one else's selection
        ("unknown", 1, False),
    ),
)
def test_can_see(audience: str, viewer: int | str | None, sees: bool) -> None:
    viewers: dict[Any, dict[str, Any]] = {
        None: {"user_id": None, "is_staff": False, "viewer_group_ids": ()},
        1: {"user_id": 1, "is_staff": False, "viewer_group_ids": ()},
        2: {"user_id": 2, "is_staff": False, "viewer_group_ids": {7, 8}},
        3: {"user_id": 3, "is_staff": False, "viewer_group_ids": {9}},
        "staff": {"user_id": 4, "is_staff": True, "viewer_group_ids": ()},
    }
    assert rules.can_see(audience, {1}, {8}, **viewers[viewer]) is sees


@pytest.mark.parametrize(
    ("publish", "expires", "withdrawn", "status"),
    (
        (0, None, None, rules.LIVE),  # published this instant
        (-1, 0, None, rules.EXPIRED),  # expires this instant
        (-1, 1, None, rules.LIVE),
        (1, None, None, rules.SCHEDULED),
        (1, 2, None, rules.SCHEDULED),
        (-2, -1, None, rules.EXPIRED),
        (-1, None, -1, rules.WITHDRAWN),
        (1, None, 0, rules.WITHDRAWN),
        (-2, -1, -3, rules.WITHDRAWN),
    ),
)
def test_status_at_its_edges(
    publish: int, expires: int | None, withdrawn: int | None, status: str
) -> None:
    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else NOW + minutes * MINUTE

    times = (NOW + publish * MINUTE, at(expires), NOW, at(withdrawn))

    assert rules.status(*times) == status
    assert rules.is_live(*times) is (status == rules.LIVE)
    assert rules.is_current(*times) is (status in (rules.LIVE, rules.SCHEDULED))


def test_reader_payload() -> None:
    fields: dict[str, Any] = {
        "id": 7,
        "level": "warning",
        "url": "/status",
        "publish_at": NOW,
        "expires_at": NOW + MINUTE,
        "translations": {"en": ("Title", "Message"), "ar": ("عنوان", "رسالة")},
    }

    assert rules.reader_payload(**fields, language="ar") == {
        "id": 7,
        "level": "warning",
        "title": "عنوان",
        "message": "رسالة",
        "language": "ar",
        "dir": "rtl",
        "url": "/status",
        "published_at": "2030-01-01T12:00:00+00:00",
        "expires_at": "2030-01-01T12:01:00+00:00",
    }
    # Korean readers get the default language.
    korean = rules.reader_payload(**fields, language="ko")
    assert (korean["title"], korean["language"], korean["dir"]) == ("Title", "en", "ltr")
    # A link written around the validators never reaches a reader.
    fields.update(url="javascript:alert(1)", expires_at=None)
    unsafe = rules.reader_payload(**fields, language="en")
    assert (unsafe["url"], unsafe["expires_at"]) == ("", None)


@pytest.mark.django_db
def test_the_model_payload_is_the_rule() -> None:
    alarm = make_alarm(("en", "ar"), url="/status", level="error")

    assert alarm.reader_payload("ar") == rules.reader_payload(
        id=alarm.pk,
        level="error",
        url="/status",
        publish_at=alarm.publish_at,
        expires_at=None,
        translations={"en": TEXT["en"], "ar": TEXT["ar"]},
        language="ar",
    )


def test_the_models_take_their_limits_from_the_rules() -> None:
    sizes = {
        (Alarm, "url"): rules.MAX_URL,
        (AlarmTranslation, "title"): rules.MAX_TITLE,
        (AlarmTranslation, "message"): rules.MAX_MESSAGE,
        (AlarmTranslation, "language_code"): rules.MAX_LANGUAGE_CODE,
    }
    for (model, name), size in sizes.items():
        assert model._meta.get_field(name).max_length == size, name


# -- the SQL form against the Python form -------------------------------------------

# Minutes from now, never near it: the database's clock is not Python's (on
# PostgreSQL, Now() is when the test's transaction began). The edges themselves
# are tested on the Python form above.
OFFSETS = st.sampled_from([-600, -120, -30, 30, 120, 600])
AUDIENCES = st.sampled_from([*rules.AUDIENCES, "unknown"])
GROUPS = 3


@dataclass(frozen=True)
class Person:
    is_staff: bool
    groups: frozenset[int]


@dataclass(frozen=True)
class Spec:
    audience: str
    users: frozenset[int]
    groups: frozenset[int]
    publish: int
    lasts: int | None  # minutes after publication
    withdrawn: int | None
    dismissed_by: frozenset[int]


people = st.lists(
    st.builds(Person, st.booleans(), st.frozensets(st.integers(0, GROUPS - 1))),
    min_size=1,
    max_size=3,
)


def specs(n_people: int) -> st.SearchStrategy[list[Spec]]:
    person = st.integers(0, n_people - 1)
    spec = st.builds(
        Spec,
        audience=AUDIENCES,
        users=st.frozensets(person),
        groups=st.frozensets(st.integers(0, GROUPS - 1)),
        publish=OFFSETS,
        lasts=st.none() | st.sampled_from([60, 240, 1200]),
        withdrawn=st.none() | OFFSETS,
        dismissed_by=st.frozensets(person),
    )
    return st.lists(spec, max_size=6)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Person], list[Spec]]:
    persons = draw(people)
    return persons, draw(specs(len(persons)))


def ids(queryset: Any) -> set[int]:
    pks = list(queryset.values_list("pk", flat=True))
    assert len(pks) == len(set(pks)), "an alarm is listed twice"
    return set(pks)


@pytest.mark.django_db
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(worlds())
def test_the_queries_follow_the_rules(world: tuple[list[Person], list[Spec]]) -> None:
    persons, alarms = world
    now = timezone.now()

    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else now + minutes * MINUTE

    with transaction.atomic():
        groups = [Group.objects.create(name=f"group {i}") for i in range(GROUPS)]
        users = []
        for i, person in enumerate(persons):
            user = User.objects.create(username=f"user{i}", is_staff=person.is_staff)
            user.groups.set(groups[g] for g in person.groups)
            users.append(user)
        made: dict[int, Spec] = {}
        for spec in alarms:
            publish_at = now + spec.publish * MINUTE
            alarm = Alarm.objects.create(
                audience=spec.audience,
                publish_at=publish_at,
                expires_at=publish_at + spec.lasts * MINUTE if spec.lasts else None,
                withdrawn_at=at(spec.withdrawn),
            )
            alarm.users.set(users[u] for u in spec.users)
            alarm.groups.set(groups[g] for g in spec.groups)
            for u in spec.dismissed_by:
                AlarmReceipt.objects.create(alarm=alarm, user=users[u], dismissed_at=now)
            made[alarm.pk] = spec

        def times(spec: Spec) -> tuple[datetime, datetime | None, datetime, datetime | None]:
            publish_at = now + spec.publish * MINUTE
            expires_at = publish_at + spec.lasts * MINUTE if spec.lasts else None
            return publish_at, expires_at, now, at(spec.withdrawn)

        # Time: every status, and the sets built from them.
        assert dict(Alarm.objects.with_status().values_list("pk", "status_code")) == {
            pk: rules.status(*times(spec)) for pk, spec in made.items()
        }
        for name, rule in (
            ("live", lambda s: rules.is_live(*times(s))),
            ("current", lambda s: rules.is_current(*times(s))),
            ("scheduled", lambda s: rules.status(*times(s)) == rules.SCHEDULED),
            ("expired", lambda s: rules.status(*times(s)) == rules.EXPIRED),
            ("withdrawn", lambda s: rules.status(*times(s)) == rules.WITHDRAWN),
            ("published", lambda s: rules.status(*times(s)) in (rules.LIVE, rules.EXPIRED)),
        ):
            expected = {pk for pk, spec in made.items() if rule(spec)}
            assert ids(getattr(Alarm.objects, name)()) == expected, name

        # Audience, for each person and an anonymous visitor.
        viewers: list[tuple[Any, int | None, Person]] = [
            (AnonymousUser(), None, Person(False, frozenset()))
        ]
        viewers += [(user, i, persons[i]) for i, user in enumerate(users)]
        for user, index, person in viewers:

            def sees(spec: Spec, user: Any = user, person: Person = person) -> bool:
                return rules.can_see(
                    spec.audience,
                    {users[u].pk for u in spec.users},
                    {groups[g].pk for g in spec.groups},
                    user_id=user.pk,
                    is_staff=person.is_staff,
                    viewer_group_ids={groups[g].pk for g in person.groups},
                )

            visible = {pk for pk, spec in made.items() if sees(spec)}
            assert ids(Alarm.objects.visible_to(user)) == visible, index
            assert {pk for pk in made if Alarm.objects.get(pk=pk).is_visible_to(user)} == visible
            unread = {
                pk
                for pk, spec in made.items()
                if sees(spec) and rules.is_live(*times(spec)) and index not in spec.dismissed_by
            }
            assert ids(Alarm.objects.for_user(user)) == unread, index
        transaction.set_rollback(True)

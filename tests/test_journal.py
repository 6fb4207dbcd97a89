"""Every write a stream must see leaves its journal row, whichever path it takes.

Each test makes one kind of write and reads back the ``AlarmChange`` rows it
left: a missing row is an alarm that open streams would never hear of.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from alarms import api
from alarms.models import Alarm, AlarmChange, AlarmTranslation, Audience
from tests.factories import ago, make_alarm, make_user
from tests.helpers import ADD_URL, LIST_URL, change_url, form_data

pytestmark = pytest.mark.django_db


def mark() -> int:
    return AlarmChange.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def journaled(since: int) -> set[int]:
    """The alarms with an ``alarm`` row after ``since``."""
    rows = AlarmChange.objects.filter(pk__gt=since, kind=AlarmChange.Kind.ALARM)
    return set(rows.values_list("alarm_id", flat=True))


def deleted(since: int) -> dict[int, dict[str, Any]]:
    rows = AlarmChange.objects.filter(pk__gt=since).exclude(detail="")
    return {r.alarm_id: json.loads(r.detail) for r in rows}


@pytest.fixture
def alarms() -> list[Alarm]:
    return [make_alarm(("en", "ko")) for _ in range(3)]


# -- alarms -------------------------------------------------------------------------


def test_save(alarms: list[Alarm]) -> None:
    before = mark()
    alarm = Alarm.objects.create(publish_at=ago())
    alarms[0].level = "error"
    alarms[0].save(update_fields=["level"])

    assert journaled(before) == {alarm.pk, alarms[0].pk}


def test_queryset_update(alarms: list[Alarm]) -> None:
    before = mark()

    count = Alarm.objects.exclude(pk=alarms[0].pk).update(level="critical")

    assert count == 2
    assert journaled(before) == {alarms[1].pk, alarms[2].pk}


def test_an_update_that_touches_nothing_writes_nothing(alarms: list[Alarm]) -> None:
    before = mark()

    assert Alarm.objects.filter(pk=0).update(level="critical") == 0

    assert mark() == before


def test_bulk_create() -> None:
    before = mark()

    created = Alarm.objects.bulk_create([Alarm(publish_at=ago()), Alarm(publish_at=ago())])

    assert journaled(before) == {a.pk for a in created}


def test_a_bulk_create_that_cannot_name_its_rows_refuses() -> None:
    before = mark()

    with pytest.raises(TypeError, match="could not tell which alarms"):
        Alarm.objects.bulk_create([Alarm(publish_at=ago())], ignore_conflicts=True)

    assert not Alarm.objects.exists()
    assert mark() == before


def test_bulk_update(alarms: list[Alarm]) -> None:
    before = mark()
    for alarm in alarms[:2]:
        alarm.level = "warning"

    Alarm.objects.bulk_update(alarms[:2], ["level"])

    assert journaled(before) == {alarms[0].pk, alarms[1].pk}


def test_queryset_delete_records_whom_each_alarm_was_for() -> None:
    alice = make_user("alice")
    night = Group.objects.create(name="Night shift")
    selected = make_alarm(audience=Audience.SELECTED, users=[alice], groups=[night])
    everyone = make_alarm(audience=Audience.EVERYONE)
    kept = make_alarm()
    before = mark()

    Alarm.objects.exclude(pk=kept.pk).delete()

    details = deleted(before)
    assert set(details) == {selected.pk, everyone.pk}
    assert details[selected.pk]["audience"] == "selected"
    assert (details[selected.pk]["users"], details[selected.pk]["groups"]) == (
        [alice.pk],
        [night.pk],
    )
    assert details[everyone.pk]["publish_at"] == everyone.publish_at.isoformat()
    # One row per alarm: its translations go with it and need none of their own.
    assert AlarmChange.objects.filter(pk__gt=before).count() == 2


def test_instance_delete(alarms: list[Alarm]) -> None:
    pk = alarms[0].pk
    before = mark()

    alarms[0].delete()

    assert set(deleted(before)) == {pk}
    assert journaled(before) == {pk}


# -- audience ----------------------------------------------------------------------


def test_users_and_groups_changed_from_either_side(alarms: list[Alarm]) -> None:
    alice = make_user("alice")
    night = Group.objects.create(name="Night shift")
    first, second, third = alarms

    writes = (
        (lambda: first.users.add(alice), {first.pk}),
        (lambda: first.users.remove(alice), {first.pk}),
        (lambda: alice.targeted_alarms.add(second, third), {second.pk, third.pk}),
        (lambda: alice.targeted_alarms.remove(third), {third.pk}),
        (lambda: first.groups.set([night]), {first.pk}),
        (lambda: night.targeted_alarms.add(second), {second.pk}),
        (lambda: first.groups.clear(), {first.pk}),
    )
    for write, expected in writes:
        before = mark()
        write()
        assert journaled(before) == expected


def test_clear_from_the_user_side() -> None:
    alice = make_user("alice")
    targeted = make_alarm(audience=Audience.SELECTED, users=[alice])
    before = mark()

    alice.targeted_alarms.clear()

    assert targeted.pk in journaled(before)


# -- translations -------------------------------------------------------------------


def test_translation_save_and_delete(alarms: list[Alarm]) -> None:
    first, second, _third = alarms
    translation = first.translations.get(language_code="ko")

    before = mark()
    first.translations.create(language_code="ja", title="T", message="M")
    assert journaled(before) == {first.pk}

    before = mark()
    translation.alarm = second
    translation.language_code = "ja"
    translation.save()
    # Moved: the alarm it left changes too.
    assert journaled(before) == {first.pk, second.pk}

    before = mark()
    translation.delete()
    assert journaled(before) == {second.pk}


def test_translation_bulk_create(alarms: list[Alarm]) -> None:
    before = mark()

    AlarmTranslation.objects.bulk_create(
        [
            AlarmTranslation(alarm=alarms[0], language_code="ja", title="T", message="M"),
            AlarmTranslation(alarm=alarms[1], language_code="ja", title="T", message="M"),
        ]
    )

    assert journaled(before) == {alarms[0].pk, alarms[1].pk}


def test_translation_bulk_update(alarms: list[Alarm]) -> None:
    translations = list(AlarmTranslation.objects.filter(alarm__in=alarms[1:], language_code="ko"))
    for t in translations:
        t.title = "Changed"
    before = mark()

    AlarmTranslation.objects.bulk_update(translations, ["title"])

    assert journaled(before) == {alarms[1].pk, alarms[2].pk}


def test_translation_bulk_update_that_moves_them(alarms: list[Alarm]) -> None:
    translation = alarms[0].translations.get(language_code="ko")
    translation.alarm = make_alarm()
    before = mark()

    AlarmTranslation.objects.bulk_update([translation], ["alarm"])

    assert journaled(before) == {alarms[0].pk, translation.alarm_id}


def test_translation_queryset_update(alarms: list[Alarm]) -> None:
    before = mark()

    AlarmTranslation.objects.filter(alarm=alarms[2], language_code="ko").update(title="New")

    assert journaled(before) == {alarms[2].pk}


def test_translation_queryset_update_that_moves_them(alarms: list[Alarm]) -> None:
    target = make_alarm()
    before = mark()

    AlarmTranslation.objects.filter(alarm=alarms[0], language_code="ko").update(alarm=target)

    assert journaled(before) == {alarms[0].pk, target.pk}


def test_translation_queryset_delete(alarms: list[Alarm]) -> None:
    before = mark()

    alarms[1].translations.filter(language_code="ko").delete()
    AlarmTranslation.objects.filter(alarm=alarms[2]).delete()

    assert journaled(before) == {alarms[1].pk, alarms[2].pk}


# -- the admin, the API and the command: the same path ----------------------------


def test_admin_add_and_change(admin_client: Client) -> None:
    before = mark()
    assert admin_client.post(ADD_URL, form_data()).status_code == 302
    alarm = Alarm.objects.get()
    assert journaled(before) == {alarm.pk}

    # A change of one translation's text alone.
    data = form_data([], alarm=alarm, level=alarm.level, url="")
    data["translations-0-title"] = "Changed"
    before = mark()
    assert admin_client.post(change_url(alarm), data).status_code == 302
    assert journaled(before) == {alarm.pk}


def test_admin_delete_view_and_action(admin_client: Client, alarms: list[Alarm]) -> None:
    first, second, third = alarms
    before = mark()
    url = reverse("admin:alarms_alarm_delete", args=(first.pk,))
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert set(deleted(before)) == {first.pk}

    before = mark()
    response = admin_client.post(
        LIST_URL,
        {"action": "delete_selected", "_selected_action": [second.pk, third.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert set(deleted(before)) == {second.pk, third.pk}


def test_send_alarm_and_withdraw() -> None:
    night = Group.objects.create(name="Night shift")
    before = mark()
    alarm = api.send_alarm({"en": {"title": "T", "message": "M"}}, groups=[night])
    assert journaled(before) == {alarm.pk}

    before = mark()
    api.withdraw([alarm])
    assert journaled(before) == {alarm.pk}


def test_the_send_alarm_command() -> None:
    before = mark()
    out = StringIO()
    call_command("send_alarm", "--translation", "en", "T", "M", stdout=out)

    assert journaled(before) == {int(out.getvalue())}

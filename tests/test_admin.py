from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmTranslation, Audience, Level
from tests.factories import TEXT, ago, ahead, make_alarm, make_user
from tests.helpers import ADD_URL, LIST_URL, change_url, form_data

pytestmark = pytest.mark.django_db

# -- add ----------------------------------------------------------------------


def test_add_form_offers_one_row_per_language(admin_client: Client) -> None:
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert [f.initial.get("language_code") for f in formset.forms] == ["en", "ko", "ja", "ar"]


def test_add_alarm_with_three_translations(admin_client: Client, admin_user: Any) -> None:
    response = admin_client.post(ADD_URL, form_data())

    assert response.status_code == 302
    alarm = Alarm.objects.get()
    assert alarm.level == Level.WARNING
    assert alarm.created_by == admin_user
    assert alarm.status == "scheduled"
    assert dict(alarm.translations.values_list("language_code", "title")) == {
        code: TEXT[code][0] for code in ("en", "ko", "ja")
    }
    assert AlarmChange.objects.filter(alarm_id=alarm.pk).exists()


def test_untouched_prefilled_rows_are_ignored(admin_client: Client) -> None:
    data = form_data([("en", "Hello", "World")])
    # The browser posts the prefilled language of every empty extra row too.
    for i, code in enumerate(("ko", "ja", "ar"), start=1):
        data.update(
            {
                f"translations-{i}-id": "",
                f"translations-{i}-alarm": "",
                f"translations-{i}-language_code": code,
                f"translations-{i}-title": "",
                f"translations-{i}-message": "",
            }
        )
    data["translations-TOTAL_FORMS"] = "4"

    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 302
    assert list(AlarmTranslation.objects.values_list("language_code", flat=True)) == ["en"]


def test_add_for_selected_users_and_groups(admin_client: Client) -> None:
    alice = make_user("alice")
    night = Group.objects.create(name="Night shift")

    response = admin_client.post(
        ADD_URL, form_data(audience=Audience.SELECTED, users=[alice.pk], groups=[night.pk])
    )

    assert response.status_code == 302
    alarm = Alarm.objects.get()
    assert list(alarm.users.all()) == [alice]
    assert list(alarm.groups.all()) == [night]


# -- validation messages --------------------------------------------------------


def assert_rejected(response: Any, message: str) -> None:
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Alarm.objects.exists()


def test_default_language_required(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data([("ko", *TEXT["ko"]), ("ja", *TEXT["ja"])]))

    assert_rejected(response, "A translation in English, the default language of the site")


def test_no_translation_at_all_is_rejected(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data([]))

    assert_rejected(response, "A translation in English, the default language of the site")


def test_duplicate_language_rejected(admin_client: Client) -> None:
    response = admin_client.post(
        ADD_URL, form_data([("en", *TEXT["en"]), ("ko", *TEXT["ko"]), ("ko", "Again", "Twice")])
    )

    assert_rejected(response, "There are two translations in Korean: keep one.")


def test_expiry_must_follow_publication(admin_client: Client) -> None:
    response = admin_client.post(
        ADD_URL, form_data(expires_at_0="2030-01-01", expires_at_1="08:00:00")
    )

    assert_rejected(response, "The expiry must come after the publication time.")


def test_users_only_with_selected_audience(admin_client: Client) -> None:
    alice = make_user("alice")

    response = admin_client.post(
        ADD_URL, form_data(audience=Audience.AUTHENTICATED, users=[alice.pk])
    )

    assert_rejected(response, "Users and groups only apply to the audience")


def test_selected_audience_needs_users_or_groups(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data(audience=Audience.SELECTED))

    assert_rejected(response, "Choose at least one user or group for the audience")


def test_unsafe_link_rejected(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data(url="javascript:alert(1)"))

    assert_rejected(response, "Enter an http:// or https:// address")


def test_empty_message_rejected(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data([("en", "A title", "")]))

    assert_rejected(response, "This field is required.")


# -- change -------------------------------------------------------------------


def test_change_form_offers_the_missing_languages(admin_client: Client) -> None:
    alarm = make_alarm(("en", "ja"))

    response = admin_client.get(change_url(alarm))

    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.initial_form_count() == 2
    assert [f.initial["language_code"] for f in formset.extra_forms] == ["ko", "ar"]


def test_change_edits_and_adds_a_translation(admin_client: Client, admin_user: Any) -> None:
    author = make_user("author")
    alarm = make_alarm(("en",), created_by=author)
    data = form_data([("ar", *TEXT["ar"])], alarm=alarm, level=Level.CRITICAL)
    data["translations-0-title"] = "Changed"

    response = admin_client.post(change_url(alarm), data)

    assert response.status_code == 302
    alarm.refresh_from_db()
    assert alarm.level == Level.CRITICAL
    assert alarm.created_by == author  # the author is kept on change
    assert dict(alarm.translations.values_list("language_code", "title")) == {
        "en": "Changed",
        "ar": TEXT["ar"][0],
    }


def test_change_cannot_delete_the_default_language(admin_client: Client) -> None:
    alarm = make_alarm(("en", "ko"))
    data = form_data([], alarm=alarm)
    data["translations-0-DELETE"] = "on"

    response = admin_client.post(change_url(alarm), data)

    assert response.status_code == 200
    assert "A translation in English" in response.content.decode()
    assert alarm.translations.count() == 2


def test_withdraw_and_republish_from_the_change_form(admin_client: Client) -> None:
    alarm = make_alarm(("en",), publish_at=ago(hours=1))

    admin_client.post(change_url(alarm), form_data([], alarm=alarm, withdrawn="on"))
    alarm.refresh_from_db()
    assert alarm.status == "withdrawn"

    admin_client.post(
        change_url(alarm),
        form_data([], alarm=alarm, publish_at_0="2000-01-01", publish_at_1="00:00:00"),
    )
    alarm.refresh_from_db()
    assert alarm.status == "live"


def test_preview_escapes_alarm_text(admin_client: Client) -> None:
    alarm = make_alarm(("en", "ar"), title='<script>alert("x")</script>')

    body = admin_client.get(change_url(alarm)).content.decode()

    assert '<script>alert("x")</script>' not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert 'lang="ar" dir="rtl"' in body
    # Korean readers fall back to English, and the preview says so.
    assert "No Korean translation: these readers get English." in body


# -- actions ------------------------------------------------------------------


def test_withdraw_action_goes_through_the_journal(admin_client: Client) -> None:
    live = make_alarm(("en",))
    other = make_alarm(("en",))
    before = AlarmChange.objects.count()

    response = admin_client.post(
        LIST_URL, {"action": "withdraw_now", "_selected_action": [live.pk]}, follow=True
    )

    live.refresh_from_db()
    other.refresh_from_db()
    assert live.status == "withdrawn"
    assert other.status == "live"
    assert list(AlarmChange.objects.filter(pk__gt=0).values_list("alarm_id", flat=True))[
        before:
    ] == [live.pk]
    assert "Withdrew 1 alarm" in response.content.decode()


def test_duplicate_action_makes_a_draft_copy(admin_client: Client, admin_user: Any) -> None:
    night = Group.objects.create(name="Night shift")
    alice = make_user("alice")
    original = make_alarm(
        ("en", "ko", "ar"),
        level=Level.ERROR,
        audience=Audience.SELECTED,
        users=[alice],
        groups=[night],
        url="/status/",
        publish_at=ago(hours=2),
        expires_at=ago(hours=1),
    )

    response = admin_client.post(
        LIST_URL, {"action": "duplicate_as_draft", "_selected_action": [original.pk]}, follow=True
    )

    copy = Alarm.objects.exclude(pk=original.pk).get()
    assert copy.status == "withdrawn"
    assert not Alarm.objects.filter(pk=copy.pk).live().exists()
    assert copy.created_by == admin_user
    assert (copy.level, copy.audience, copy.url) == (Level.ERROR, Audience.SELECTED, "/status/")
    assert copy.expires_at - copy.publish_at == original.expires_at - original.publish_at
    assert list(copy.users.all()) == [alice]
    assert list(copy.groups.all()) == [night]
    assert sorted(copy.translations.values_list("language_code", "title", "message")) == sorted(
        original.translations.values_list("language_code", "title", "message")
    )
    original.refresh_from_db()
    assert original.translations.count() == 3
    assert f"withdrawn draft (#{copy.pk})" in response.content.decode()


# -- change list --------------------------------------------------------------


@pytest.fixture
def four_alarms() -> dict[str, Alarm]:
    return {
        "live": make_alarm(("en", "ko"), title="Live one", level=Level.CRITICAL),
        "scheduled": make_alarm(("en",), title="Later one", publish_at=ahead(hours=1)),
        "expired": make_alarm(
            ("en", "ja"), title="Old one", publish_at=ago(hours=2), expires_at=ago(hours=1)
        ),
        "withdrawn": make_alarm(
            ("en", "ko", "ja", "ar"), title="Gone one", withdrawn_at=ago(minutes=1)
        ),
    }


def listed(response: Any) -> set[int]:
    assert response.status_code == 200
    return {a.pk for a in response.context["cl"].result_list}


def test_changelist_columns(admin_client: Client, four_alarms: dict[str, Alarm]) -> None:
    live = four_alarms["live"]
    users = [make_user(f"u{i}") for i in range(3)]
    AlarmReceipt.objects.create(alarm=live, user=users[0], seen_at=ago(seconds=5))
    AlarmReceipt.objects.create(
        alarm=live, user=users[1], seen_at=ago(seconds=5), dismissed_at=ago(seconds=1)
    )

    response = admin_client.get(LIST_URL)

    rows = {a.pk: a for a in response.context["cl"].result_list}
    assert {name: rows[a.pk].status_code for name, a in four_alarms.items()} == {
        name: name for name in four_alarms
    }
    assert (rows[live.pk].seen, rows[live.pk].dismissed) == (2, 1)
    body = response.content.decode()
    for label in ("Live", "Scheduled", "Expired", "Withdrawn", "Live one"):
        assert label in body
    assert '<td class="field-languages_present">en, ko</td>' in body
    assert '<td class="field-languages_missing">ja, ar</td>' in body


def test_changelist_queries_do_not_grow_with_rows(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    make_alarm(("en", "ko"))
    admin_client.get(LIST_URL)  # warm the session and content types
    with CaptureQueriesContext(connection) as one:
        admin_client.get(LIST_URL)
    for _ in range(5):
        alarm = make_alarm(("en", "ja"))
        AlarmReceipt.objects.create(alarm=alarm, user=make_user(f"r{alarm.pk}"), seen_at=ago())
    with django_assert_max_num_queries(len(one)):
        admin_client.get(LIST_URL)


@pytest.mark.parametrize("status", ("live", "scheduled", "expired", "withdrawn"))
def test_status_filter(admin_client: Client, four_alarms: dict[str, Alarm], status: str) -> None:
    assert listed(admin_client.get(LIST_URL, {"status": status})) == {four_alarms[status].pk}


def test_level_audience_and_language_filters(
    admin_client: Client, four_alarms: dict[str, Alarm]
) -> None:
    staff_only = make_alarm(("en",), audience=Audience.STAFF)

    assert listed(admin_client.get(LIST_URL, {"level": "critical"})) == {four_alarms["live"].pk}
    assert listed(admin_client.get(LIST_URL, {"audience": "staff"})) == {staff_only.pk}
    assert listed(admin_client.get(LIST_URL, {"language": "ja"})) == {
        four_alarms["expired"].pk,
        four_alarms["withdrawn"].pk,
    }
    assert listed(admin_client.get(LIST_URL, {"language": "-ko"})) == {
        four_alarms["scheduled"].pk,
        four_alarms["expired"].pk,
        staff_only.pk,
    }


def test_search_across_translations(admin_client: Client, four_alarms: dict[str, Alarm]) -> None:
    AlarmTranslation.objects.filter(alarm=four_alarms["scheduled"]).update(
        message="Coffee machine repaired"
    )

    assert listed(admin_client.get(LIST_URL, {"q": "Old one"})) == {four_alarms["expired"].pk}
    assert listed(admin_client.get(LIST_URL, {"q": "coffee"})) == {four_alarms["scheduled"].pk}
    # Korean text is searched too, and an alarm matching twice is listed once.
    assert listed(admin_client.get(LIST_URL, {"q": "서버"})) == {
        four_alarms["live"].pk,
        four_alarms["withdrawn"].pk,
    }


# -- receipts -----------------------------------------------------------------


def test_receipts_are_read_only(admin_client: Client) -> None:
    alarm = make_alarm(("en",))
    receipt = AlarmReceipt.objects.create(alarm=alarm, user=make_user("x"), seen_at=ago())

    assert admin_client.get(reverse("admin:alarms_alarmreceipt_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:alarms_alarmreceipt_add")).status_code == 403
    change = reverse("admin:alarms_alarmreceipt_change", args=(receipt.pk,))
    assert admin_client.post(change, {"seen_at": ""}).status_code == 403

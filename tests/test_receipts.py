"""``POST /alarms/seen/`` and ``/alarms/dismiss/``: which ids are taken, and what is recorded.

Hostile bodies (huge, nested, not JSON, CSRF) are in tests/test_hostile.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from alarms.models import Alarm, AlarmChange, AlarmReceipt, Audience
from tests.factories import ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db

MAX_ID = 2**63 - 1
RULE = f"An id is a whole number from 1 to {MAX_ID}, written in the digits 0-9."
ACTIONS = ["seen", "dismiss"]


def post_json(client: Client, action: str, ids: Any) -> Any:
    return client.post(
        reverse(f"alarms:{action}"), json.dumps({"ids": ids}), content_type="application/json"
    )


def receipts() -> list[tuple[str, int]]:
    return list(AlarmReceipt.objects.values_list("user__username", "alarm_id"))


def dismissals() -> list[tuple[int, int | None]]:
    return list(AlarmChange.objects.filter(kind="dismiss").values_list("alarm_id", "user_id"))


@pytest.fixture
def reader(client: Client) -> Any:
    user = make_user("reader")
    client.force_login(user)
    return user


# -- ids ----------------------------------------------------------------------------------

# Text that str.isdigit() or int() takes and an id must not be: other scripts'
# digits, superscripts, circled numbers, signs, spaces, decimals, 0 and below,
# past a signed 64-bit integer.
BAD_TEXT = [
    "\u0663",  # ٣, which int() reads as 3
    "\u00b2",  # ², which int() refuses with its own message
    "\u2460",  # ①
    "+1",
    " 1",
    "1 ",
    "1_000",
    "1.0",
    "-1",
    "0",
    "00",
    "",
    str(MAX_ID + 1),
    "9" * 5000,  # past int()'s own digit limit
]
# JSON values that are not an id, whatever Python makes of them.
BAD_JSON = [0, -1, 1.0, 1e400, MAX_ID + 1, True, None, [1], {"id": 1}]


def short(raw: Any) -> str:
    return f"{type(raw).__name__}:{raw!r:.20}"


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("raw", BAD_TEXT + BAD_JSON, ids=short)
def test_a_malformed_json_id_is_a_400_with_our_message(
    client: Client, reader: Any, action: str, raw: Any
) -> None:
    live = make_alarm()

    response = post_json(client, action, [live.pk, raw])

    assert response.status_code == 400
    assert response.json() == {"error": f"ids[1] is not an alarm id. {RULE}"}
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize("raw", BAD_TEXT, ids=short)
def test_a_malformed_form_id_is_a_400_with_our_message(
    client: Client, reader: Any, raw: str
) -> None:
    response = client.post(reverse("alarms:dismiss"), {"ids": [raw]})

    assert response.status_code == 400
    assert response.json() == {"error": f"ids[0] is not an alarm id. {RULE}"}
    assert "invalid literal" not in response.content.decode()
    assert not AlarmReceipt.objects.exists()


def test_ids_may_be_json_numbers_or_strings_up_to_the_largest(client: Client, reader: Any) -> None:
    as_number, as_text = make_alarm(), make_alarm()

    response = post_json(client, "seen", [as_number.pk, str(as_text.pk), MAX_ID, str(MAX_ID)])

    assert (response.status_code, response.json()) == (200, {"updated": 2})
    assert sorted(receipts()) == [("reader", as_number.pk), ("reader", as_text.pk)]


def test_the_centre_parses_its_dismiss_button_the_same_way(client: Client, reader: Any) -> None:
    centre = reverse("alarms:centre")

    assert client.post(centre, {"dismiss": "0"}).status_code == 400
    refused = client.post(centre, {"dismiss": "\u0663"})
    assert refused.status_code == 400
    assert refused.content.decode() == f"Not an alarm id. {RULE}"
    # The largest id is an id (of no alarm): nothing to dismiss, back to the centre.
    assert client.post(centre, {"dismiss": str(MAX_ID)}).status_code == 302
    assert not AlarmReceipt.objects.exists()


# -- what is recorded ---------------------------------------------------------------------


def not_live(kind: str) -> Alarm:
    if kind == "scheduled":
        return make_alarm(publish_at=ahead(hours=1))
    if kind == "expired":
        return make_alarm(publish_at=ago(hours=2), expires_at=ago(hours=1))
    alarm = make_alarm(withdrawn_at=ago(minutes=1))
    assert kind == "withdrawn"
    return alarm


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("kind", ["scheduled", "expired", "withdrawn"])
def test_an_alarm_that_is_not_live_is_ignored(
    client: Client, reader: Any, action: str, kind: str
) -> None:
    alarm = not_live(kind)

    response = post_json(client, action, [alarm.pk])

    assert (response.status_code, response.json()) == (200, {"updated": 0})
    assert not AlarmReceipt.objects.exists()
    assert dismissals() == []


@pytest.mark.parametrize("action", ACTIONS)
def test_only_live_alarms_the_user_may_see_are_recorded(
    client: Client, reader: Any, action: str
) -> None:
    alice = make_user("alice")
    night = Group.objects.create(name="Night")
    deleted = make_alarm()
    deleted_id = deleted.pk
    deleted.delete()
    ignored = [
        not_live("scheduled").pk,
        not_live("expired").pk,
        not_live("withdrawn").pk,
        deleted_id,
        make_alarm(audience=Audience.SELECTED, users=[alice]).pk,
        make_alarm(audience=Audience.SELECTED, groups=[night]).pk,
        make_alarm(audience=Audience.STAFF).pk,
        # Scheduled for the reader: neither rule alone keeps it out.
        make_alarm(audience=Audience.SELECTED, users=[reader], publish_at=ahead(hours=1)).pk,
    ]
    live = make_alarm(audience=Audience.SELECTED, users=[reader])

    response = post_json(client, action, [*ignored, live.pk])

    assert (response.status_code, response.json()) == (200, {"updated": 1})
    assert receipts() == [("reader", live.pk)]
    # Only what was dismissed reaches the reader's other streams.
    assert dismissals() == ([(live.pk, reader.pk)] if action == "dismiss" else [])
    # A second time changes nothing, and journals nothing.
    assert post_json(client, action, [*ignored, live.pk]).json() == {"updated": 0}
    assert len(dismissals()) == (action == "dismiss")


# -- the language a receipt records ---------------------------------------------------


def post_language(
    client: Client, action: str, ids: list[int], language: Any, **headers: str
) -> Any:
    body = {"ids": ids} if language is None else {"ids": ids, "language": language}
    return client.post(
        reverse(f"alarms:{action}"),
        json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def languages() -> dict[int, str]:
    return dict(AlarmReceipt.objects.values_list("alarm_id", "language"))


@pytest.mark.parametrize("action", ACTIONS)
def test_a_receipt_records_the_language_the_toast_was_shown_in(
    client: Client, reader: Any, action: str
) -> None:
    both, english = make_alarm(("en", "ko")), make_alarm(("en",))

    response = post_language(client, action, [both.pk, english.pk], "ko")

    assert response.json() == {"updated": 2}
    # An alarm without Korean was shown to this reader in the default language.
    assert languages() == {both.pk: "ko", english.pk: "en"}


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        (None, "ja"),
        ("xx", "ja"),
        ("", "ja"),
        (7, "ja"),
        (["ko"], "ja"),
        ("KO", "ko"),
        ("ko_KR", "ko"),
    ],
)
def test_without_a_language_the_site_speaks_the_requests_counts(
    client: Client, reader: Any, sent: Any, recorded: str
) -> None:
    alarm = make_alarm(("en", "ko", "ja"))

    post_language(client, "seen", [alarm.pk], sent, **{"Accept-Language": "ja"})

    assert languages() == {alarm.pk: recorded}


def test_a_form_post_may_name_the_language_too(client: Client, reader: Any) -> None:
    alarm = make_alarm(("en", "ar"))

    client.post(reverse("alarms:dismiss"), {"ids": [alarm.pk], "language": "ar"})

    assert languages() == {alarm.pk: "ar"}


def test_the_language_is_the_one_of_the_first_receipt(client: Client, reader: Any) -> None:
    alarm = make_alarm(("en", "ko"))
    post_language(client, "seen", [alarm.pk], "ko")

    post_language(client, "dismiss", [alarm.pk], "en")

    receipt = AlarmReceipt.objects.get()
    assert (receipt.language, receipt.dismissed_at is not None) == ("ko", True)

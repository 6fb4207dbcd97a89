"""The reader's JSON feed: ``GET /alarms/api/v1/me/alarms`` and ``/me/unread-count``.

Through Django's test client; the last test runs against a real daphne with a real
HTTP client, a session cookie and a personal token.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from alarms import api, inbox, tokens
from alarms.models import Alarm, AlarmTranslation, Preferences
from alarms.translation import choose_language
from tests.e2e.conftest import http_request, server, server_factory, session_cookie
from tests.factories import TEXT, ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db

# The end-to-end test's fixtures (tests/e2e/conftest.py), made visible here.
__all__ = ["server", "server_factory", "session_cookie"]

BASE = "/alarms/api/v1/me"
ALARMS = f"{BASE}/alarms"
COUNT = f"{BASE}/unread-count"
ALL = ("en", "ko", "ja", "ar")


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


def signed_in(user: User, **headers: str) -> Client:
    client = Client(headers=headers)
    client.force_login(user)
    return client


def personal_token(user: User | None, *scopes: str) -> str:
    _token, secret = tokens.create_token(
        f"token-{user.pk if user else 'none'}-{'-'.join(scopes)}",
        scopes=scopes or ("me",),
        created_by=user,
    )
    return secret


def bearer(secret: str, **headers: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {secret}", **headers})


# -- visibility --------------------------------------------------------------------------


def test_the_feed_lists_what_the_user_may_see_unread_first_then_newest() -> None:
    ops = Group.objects.create(name="ops")
    ann = make_user("ann", groups=[ops])
    bob = make_user("bob")
    make_user("staffer", is_staff=True)
    everyone = make_alarm(audience="everyone", publish_at=ago(minutes=9))
    signed = make_alarm(audience="authenticated", publish_at=ago(minutes=8))
    for_ops = make_alarm(audience="selected", groups=[ops], publish_at=ago(minutes=7))
    for_ann = make_alarm(audience="selected", users=[ann], publish_at=ago(minutes=6))
    for_bob = make_alarm(audience="selected", users=[bob], publish_at=ago(minutes=5))
    staff = make_alarm(audience="staff", publish_at=ago(minutes=4))
    withdrawn = make_alarm(withdrawn_at=ago(minutes=1), publish_at=ago(minutes=3))
    expired = make_alarm(publish_at=ago(hours=2), expires_at=ago(hours=1))
    scheduled = make_alarm(publish_at=ahead(hours=1))
    dismissed = make_alarm(publish_at=ago(minutes=2))
    api.dismiss(ann, [dismissed.pk])

    listed = ids(signed_in(ann).get(ALARMS))

    # Unread (live, not dismissed) newest first, then the rest newest first.
    assert listed == [for_ann.pk, for_ops.pk, signed.pk, everyone.pk, dismissed.pk, expired.pk]
    assert not {for_bob.pk, staff.pk, withdrawn.pk, scheduled.pk} & set(listed)
    bobs = ids(signed_in(bob).get(ALARMS))
    assert for_bob.pk in bobs and not {for_ann.pk, for_ops.pk} & set(bobs)
    staffer = User.objects.get(username="staffer")
    assert staff.pk in ids(signed_in(staffer).get(ALARMS))


def test_items_carry_text_language_link_times_and_receipts() -> None:
    ann = make_user("ann")
    alarm = api.send_alarm(
        {code: {"title": TEXT[code][0], "message": TEXT[code][1]} for code in ("en", "ar")},
        level="warning",
        url="/runbook/",
    )
    api.mark_seen(ann, [alarm.pk], language="ar")

    body = signed_in(ann).get(ALARMS, {"lang": "ar"}).json()

    assert body["count"] == 1 and body["language"] == "ar"
    [item] = body["items"]
    assert item["id"] == alarm.pk and item["level"] == "warning"
    assert (item["title"], item["message"]) == TEXT["ar"]
    assert (item["language"], item["dir"], item["url"]) == ("ar", "rtl", "/runbook/")
    published = datetime.fromisoformat(item["published_at"])
    assert abs(published - alarm.publish_at) < timedelta(milliseconds=1)
    assert item["unread"] is True and item["dismissed_at"] is None
    assert item["seen_at"] is not None

    api.dismiss(ann, [alarm.pk])
    [item] = signed_in(ann).get(ALARMS).json()["items"]
    assert item["unread"] is False and item["dismissed_at"] is not None


def test_another_users_receipts_are_not_the_readers() -> None:
    ann, bob = make_user("ann"), make_user("bob")
    alarm = make_alarm()
    api.mark_seen(ann, [alarm.pk])
    api.dismiss(bob, [alarm.pk])

    [item] = signed_in(ann).get(ALARMS).json()["items"]
    assert item["unread"] is True and item["dismissed_at"] is None and item["seen_at"]
    assert signed_in(ann).get(COUNT).json() == {"unread": 1, "unseen": 0}
    assert signed_in(bob).get(COUNT).json() == {"unread": 0, "unseen": 0}


# -- the language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "stored", "header", "shown"),
    [
        ("ja", "ko", "ar", "ja"),  # ?lang= first
        ("", "ko", "ar", "ko"),  # then the stored language
        ("fr", "ko", "ar", "ko"),  # a language the site does not speak is passed over
        ("", "", "ar", "ar"),  # then the request's
        ("", "xx", "ja", "ja"),  # a stored language the site no longer speaks
        ("", "", "", "en"),  # then LANGUAGE_CODE
    ],
)
def test_the_language_chain(query: str, stored: str, header: str, shown: str) -> None:
    ann = make_user("ann")
    if stored:
        Preferences.objects.create(user=ann, language=stored)
    make_alarm(ALL)
    headers = {"Accept-Language": header} if header else {}

    body = signed_in(ann, **headers).get(ALARMS, {"lang": query} if query else {}).json()

    assert body["language"] == shown
    assert body["items"][0]["language"] == shown
    assert body["items"][0]["title"] == TEXT[shown][0]


def test_the_language_cookie_is_the_requests_language() -> None:
    ann = make_user("ann")
    make_alarm(ALL)
    client = signed_in(ann)
    client.cookies["django_language"] = "ko"
    assert client.get(ALARMS).json()["items"][0]["language"] == "ko"


def test_a_missing_translation_falls_back_as_everywhere() -> None:
    ann = make_user("ann")
    make_alarm(("en", "ko"))
    [item] = signed_in(ann).get(ALARMS, {"lang": "ja"}).json()["items"]
    assert (item["language"], item["title"]) == ("en", TEXT["en"][0])


def test_the_sql_choice_of_translation_is_choose_language() -> None:
    sets = [("en",), ("ko",), ("en", "ko"), ("ar", "ja"), ("ja", "ko"), ALL]
    alarms = [make_alarm(codes) for codes in sets]
    # An alarm with no default-language text at all (written around the service).
    AlarmTranslation.objects.filter(alarm=alarms[1], language_code="en").delete()
    for wanted in (*ALL, "fr", "pt-br"):
        chosen = dict(
            AlarmTranslation.objects.filter(inbox.shown_translations(wanted)).values_list(
                "alarm_id", "language_code"
            )
        )
        assert len(AlarmTranslation.objects.filter(inbox.shown_translations(wanted))) == len(
            alarms
        ), wanted
        for alarm in alarms:
            codes = list(alarm.translations.values_list("language_code", flat=True))
            assert chosen[alarm.pk] == choose_language(wanted, codes), (wanted, codes)


# -- filters and paging --------------------------------------------------------------------


def test_search_is_in_the_language_shown_and_level_filters() -> None:
    ann = make_user("ann")
    both = make_alarm(("en", "ko"), level="warning")
    english_only = api.send_alarm(
        {"en": {"title": "Disk nearly full", "message": "Free some space."}}, level="error"
    )
    client = signed_in(ann)

    assert ids(client.get(ALARMS, {"q": "restart"})) == [both.pk]
    assert ids(client.get(ALARMS, {"q": "RESTART", "lang": "en"})) == [both.pk]
    # Shown in Korean, the first alarm matches Korean words, not its English text.
    assert ids(client.get(ALARMS, {"q": "재시작", "lang": "ko"})) == [both.pk]
    assert ids(client.get(ALARMS, {"q": "restart", "lang": "ko"})) == []
    # The second is shown in English to a Korean reader: its English text is searched.
    assert ids(client.get(ALARMS, {"q": "disk", "lang": "ko"})) == [english_only.pk]
    assert ids(client.get(ALARMS, {"level": "error"})) == [english_only.pk]
    assert ids(client.get(ALARMS, {"level": "error", "q": "restart"})) == []


def test_pages_by_limit_and_offset_with_next_and_previous() -> None:
    ann = make_user("ann")
    made = [make_alarm(publish_at=ago(minutes=30 - i)) for i in range(5)]
    newest_first = [a.pk for a in reversed(made)]
    client = signed_in(ann)

    first = client.get(ALARMS, {"limit": 2, "level": "info"}).json()
    assert [i["id"] for i in first["items"]] == newest_first[:2]
    assert first["count"] == 5 and first["previous"] is None
    assert parse_qs(urlsplit(first["next"]).query) == {
        "level": ["info"],
        "limit": ["2"],
        "offset": ["2"],
    }
    second = client.get(first["next"]).json()
    assert [i["id"] for i in second["items"]] == newest_first[2:4]
    last = client.get(second["next"]).json()
    assert [i["id"] for i in last["items"]] == newest_first[4:]
    assert last["next"] is None
    assert client.get(last["previous"]).json()["items"] == second["items"]


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("limit=0", ["query", "limit"]),
        ("limit=201", ["query", "limit"]),
        ("offset=-1", ["query", "offset"]),
        ("level=loud", ["query", "level"]),
        ("q=" + "x" * 201, ["query", "q"]),
        ("q=%00", ["query", "q"]),
    ],
)
def test_a_bad_query_is_a_422_naming_it(query: str, loc: list[str]) -> None:
    response = signed_in(make_user("ann")).get(f"{ALARMS}?{query}")
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [loc]


# -- the unread count ------------------------------------------------------------------------


def test_the_unread_count_is_the_badges() -> None:
    ann = make_user("ann")
    seen = make_alarm()
    unseen = make_alarm()
    dismissed = make_alarm()
    make_alarm(publish_at=ago(hours=2), expires_at=ago(hours=1))
    make_alarm(publish_at=ahead(hours=1))
    make_alarm(withdrawn_at=ago(minutes=1))
    make_alarm(audience="staff")
    api.mark_seen(ann, [seen.pk])
    api.dismiss(ann, [dismissed.pk])
    client = signed_in(ann)

    assert client.get(COUNT).json() == {"unread": 2, "unseen": 1}
    # The badge of a page (the centre's own, here): the same alarms.
    centre = client.get("/alarms/")
    page = centre.content.decode()
    assert 'data-count="2"' in page
    badge_ids = page.split('data-ids="')[1].split('"')[0].split(",")
    assert sorted(int(i) for i in badge_ids) == sorted([seen.pk, unseen.pk])
    # And the centre's "Unread" section.
    assert centre.context["unread_count"] == 2
    assert {e.id for e in centre.context["unread"]} == {seen.pk, unseen.pk}


# -- who may read ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ALARMS, COUNT])
def test_anonymous_is_a_401_in_the_apis_error_shape(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    [error] = response.json()["errors"]
    assert error["type"] == "unauthenticated" and "Sign in" in error["msg"]


def test_a_personal_token_reads_its_makers_alarms_only() -> None:
    ann, bob = make_user("ann"), make_user("bob")
    for_ann = make_alarm(audience="selected", users=[ann])
    for_bob = make_alarm(audience="selected", users=[bob])
    bobs_token = personal_token(bob)

    # Bob's token reads Bob's alarms, whatever session comes with it.
    with_session = signed_in(ann, Authorization=f"Bearer {bobs_token}")
    assert ids(with_session.get(ALARMS)) == [for_bob.pk]
    assert ids(bearer(bobs_token).get(ALARMS)) == [for_bob.pk]
    assert for_ann.pk not in ids(bearer(bobs_token).get(ALARMS, {"q": "", "lang": "en"}))
    assert bearer(bobs_token).get(COUNT).json() == {"unread": 1, "unseen": 1}


def test_a_token_without_the_scope_or_a_user_is_refused() -> None:
    ann = make_user("ann")
    make_alarm()
    reader_token = personal_token(ann, "read", "publish")
    orphan = personal_token(None, "me")
    response = bearer(reader_token).get(ALARMS)
    assert response.status_code == 403
    assert response.json()["errors"][0]["type"] == "insufficient_scope"
    assert bearer(orphan).get(COUNT).status_code == 403
    ann.is_active = False
    ann.save()
    assert bearer(personal_token(ann, "me")).get(ALARMS).status_code == 403


def test_a_bad_token_is_a_401_even_with_a_session() -> None:
    ann = make_user("ann")
    client = signed_in(ann, Authorization="Bearer alm_not-a-token")
    response = client.get(ALARMS)
    assert response.status_code == 401
    assert response.json()["errors"][0]["type"] == "invalid_token"


def test_the_answers_are_private() -> None:
    response = signed_in(make_user("ann")).get(COUNT)
    assert response["Cache-Control"] == "private, no-store"
    assert {"Cookie", "Authorization"} <= {v.strip() for v in response["Vary"].split(",")}


def test_the_feed_is_in_the_openapi_document() -> None:
    document = Client().get("/alarms/api/v1/openapi.json").json()
    for path in (ALARMS, COUNT):
        operation = document["paths"][path]["get"]
        assert set(operation["responses"]) >= {"200", "401", "403"}
        schemes = {name for entry in operation["security"] for name in entry}
        assert schemes == {"PersonalToken", "Session"}


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_feed_over_a_real_daphne_by_cookie_and_token(server: Any, session_cookie: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    mine = api.send_alarm(
        {"en": {"title": "Ann's", "message": "m"}, "ko": {"title": "앤", "message": "m"}},
        users=[ann],
    )
    api.send_alarm({"en": {"title": "Bob's", "message": "m"}}, users=[bob])
    name, value = session_cookie(ann)
    _token, secret = tokens.create_token("bob's phone", scopes=["me"], created_by=bob)

    status, headers, body = http_request(
        server.port, "GET", f"{ALARMS}?lang=ko", {"Cookie": f"{name}={value}"}
    )
    assert status == 200, body
    [item] = json.loads(body)["items"]
    assert (item["id"], item["title"], item["language"]) == (mine.pk, "앤", "ko")
    assert headers["Cache-Control"] == "private, no-store"

    status, _, body = http_request(server.port, "GET", COUNT, {"Authorization": f"Bearer {secret}"})
    assert (status, json.loads(body)) == (200, {"unread": 1, "unseen": 1})
    status, _, body = http_request(
        server.port, "GET", ALARMS, {"Authorization": f"Bearer {secret}"}
    )
    assert [i["title"] for i in json.loads(body)["items"]] == ["Bob's"]

    status, headers, body = http_request(server.port, "GET", COUNT, {})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body)["errors"][0]["type"] == "unauthenticated"
    assert Alarm.objects.count() == 2

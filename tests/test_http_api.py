"""The HTTP API, ``/alarms/api/v1/``: every operation, every error status, tokens and keys.

Through Django's test client, so fast; the curl examples of docs/api.md run against
a real daphne in tests/e2e/test_api_docs.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from alarms import api, tokens
from alarms.http_api.errors import MAX_BODY
from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmToken, Audience, Level
from tests.factories import TEXT, ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db

BASE = "/alarms/api/v1"
ALARMS = f"{BASE}/alarms"
ALL_SCOPES = ("publish", "read", "withdraw")
# Every status the API documents for POST /alarms (docs/api.md).
PUBLISH_STATUSES = {200, 201, 400, 409, 413, 422, 429}


def text(*codes: str, title: str | None = None) -> dict[str, dict[str, str]]:
    return {code: {"title": title or TEXT[code][0], "message": TEXT[code][1]} for code in codes}


class Sender:
    """A client of the API holding one token's secret."""

    def __init__(self, client: Client, secret: str | None, token: AlarmToken | None = None):
        self.client = client
        self.secret = secret
        self.token = token

    def headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.secret is not None:
            headers.setdefault("Authorization", f"Bearer {self.secret}")
        return headers

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, **headers: str) -> Any:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return self.client.generic(
            "POST", path, data, content_type="application/json", headers=self.headers(**headers)
        )

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(path, headers=self.headers(**headers))

    def publish(self, body: dict[str, Any], **headers: str) -> Any:
        return self.post(ALARMS, body, **headers)


@pytest.fixture
def make_sender(client: Client) -> Callable[..., Sender]:
    def make(*scopes: str, name: str | None = None, **options: Any) -> Sender:
        token, secret = tokens.create_token(
            name or f"sender-{AlarmToken.objects.count()}", scopes=scopes or ALL_SCOPES, **options
        )
        return Sender(client, secret, token)

    return make


@pytest.fixture
def sender(make_sender: Callable[..., Sender]) -> Sender:
    return make_sender(*ALL_SCOPES, name="ci")


def journal_rows() -> int:
    return AlarmChange.objects.count()


def the_error(response: Any) -> dict[str, Any]:
    """The one error of an error answer, checked for its shape."""
    body = response.json()
    assert list(body) == ["errors"], body
    [error] = body["errors"]
    assert set(error) == {"loc", "msg", "type"}
    assert isinstance(error["msg"], str) and error["msg"]
    return error


# -- publish --------------------------------------------------------------------------


def test_publish_creates_the_alarm_the_sender_describes(sender: Sender) -> None:
    ops = Group.objects.create(name="ops")
    make_user("alice")
    rows = journal_rows()

    response = sender.publish(
        {
            "translations": text("en", "ko"),
            "level": "critical",
            "users": ["alice"],
            "groups": ["ops"],
            "url": "/status/",
            "expires_at": ahead(hours=1).isoformat(),
        }
    )

    assert response.status_code == 201
    alarm = Alarm.objects.get()
    assert response["Location"] == f"{ALARMS}/{alarm.pk}"
    body = response.json()
    assert body["id"] == alarm.pk
    assert (body["created"], body["changed"]) == (True, True)
    assert (body["status"], body["level"], body["audience"]) == ("live", "critical", "selected")
    assert (body["users"], body["groups"], body["url"]) == (["alice"], ["ops"], "/status/")
    assert body["translations"] == text("en", "ko")
    assert body["created_by_token"] == "ci"
    assert alarm.created_by_token == sender.token
    assert list(alarm.groups.all()) == [ops]
    # Through the model layer: open streams hear of it.
    assert journal_rows() > rows


def test_the_admin_shows_which_token_created_an_alarm(sender: Sender, admin_client: Client) -> None:
    alarm_id = sender.publish({"translations": text("en")}).json()["id"]

    page = admin_client.get(f"/admin/alarms/alarm/{alarm_id}/change/")

    assert page.status_code == 200
    assert "ci (alm_" in page.content.decode()


def test_the_same_key_twice_is_one_alarm_and_the_second_send_writes_nothing(
    sender: Sender,
) -> None:
    body = {"translations": text("en"), "level": "warning"}
    first = sender.publish(body, **{"Idempotency-Key": "deploy-42"})
    rows = journal_rows()

    again = sender.publish(body, **{"Idempotency-Key": "deploy-42"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (again.json()["created"], again.json()["changed"]) == (False, False)
    assert Alarm.objects.count() == 1
    assert journal_rows() == rows  # no open page shows it again


def test_a_repeated_key_with_new_content_updates_the_alarm_in_place(sender: Sender) -> None:
    first = sender.publish({"translations": text("en"), "external_id": "disk-full"})

    again = sender.publish(
        {
            "translations": text("en", "ar", title="Worse"),
            "level": "error",
            "external_id": "disk-full",
        }
    )

    assert again.status_code == 200
    assert (again.json()["created"], again.json()["changed"]) == (False, True)
    alarm = Alarm.objects.get()
    assert alarm.pk == first.json()["id"]
    assert alarm.level == Level.ERROR
    assert dict(alarm.translations.values_list("language_code", "title")) == {
        "en": "Worse",
        "ar": "Worse",
    }


def test_the_header_and_the_body_key_must_agree(sender: Sender) -> None:
    same = sender.publish(
        {"translations": text("en"), "external_id": "k"}, **{"Idempotency-Key": "k"}
    )
    differ = sender.publish(
        {"translations": text("en"), "external_id": "k"}, **{"Idempotency-Key": "other"}
    )

    assert same.status_code == 201
    assert Alarm.objects.get().external_id == "k"
    assert differ.status_code == 422
    assert the_error(differ)["loc"] == ["header", "Idempotency-Key"]
    assert Alarm.objects.count() == 1


@pytest.mark.parametrize(
    ("where", "loc"),
    [("header", ["header", "Idempotency-Key"]), ("body", ["body", "external_id"])],
)
def test_the_webhooks_keys_are_not_the_apis(sender: Sender, where: str, loc: list[str]) -> None:
    key = "alertmanager:3f2a:2030-01-01T00:00:00.000000+00:00"
    incident = make_alarm(external_id=key)
    body: dict[str, Any] = {"translations": text("en", title="Hijacked")}
    headers = {}
    if where == "header":
        headers["Idempotency-Key"] = key
    else:
        body["external_id"] = key

    response = sender.publish(body, **headers)

    assert response.status_code == 422
    error = the_error(response)
    assert (error["loc"], error["type"]) == (loc, "reserved_key")
    assert Alarm.objects.get() == incident
    assert incident.translations.get().title != "Hijacked"


@pytest.mark.parametrize(
    ("where", "loc"),
    [("header", ["header", "Idempotency-Key"]), ("body", ["body", "external_id"])],
)
def test_a_key_that_names_a_withdrawn_alarm_is_a_409(
    sender: Sender, where: str, loc: list[str]
) -> None:
    alarm = make_alarm(external_id="k", withdrawn_at=ago(minutes=1))
    body: dict[str, Any] = {"translations": text("en")}
    headers = {}
    if where == "header":
        headers["Idempotency-Key"] = "k"
    else:
        body["external_id"] = "k"

    response = sender.publish(body, **headers)

    assert response.status_code == 409
    error = the_error(response)
    assert error["loc"] == loc
    assert f"#{alarm.pk}" in error["msg"]
    assert Alarm.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_simultaneous_requests_with_one_key_make_one_alarm(
    make_sender: Callable[..., Sender], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests find no alarm for the key before either writes; the second
    insert waits on the first's unique key and becomes an update."""
    secret = make_sender("publish").secret
    barrier = threading.Barrier(2)
    create = api._create

    def both_create(*args: Any, **kwargs: Any) -> Any:
        barrier.wait(timeout=10)
        return create(*args, **kwargs)

    monkeypatch.setattr(api, "_create", both_create)
    statuses: list[Any] = []

    def send() -> None:
        try:
            response = Sender(Client(), secret).publish(
                {"translations": text("en")}, **{"Idempotency-Key": "same"}
            )
            statuses.append(response.status_code)
        except Exception as exc:  # the assertion below shows it
            statuses.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(statuses, key=str) == [200, 201]
    assert Alarm.objects.count() == 1


def test_without_a_key_every_send_is_a_new_alarm(sender: Sender) -> None:
    for _ in range(2):
        assert sender.publish({"translations": text("en")}).status_code == 201
    assert Alarm.objects.count() == 2


def test_storm_control_per_token_is_a_429_with_retry_after(
    make_sender: Callable[..., Sender], settings: Any
) -> None:
    settings.ALARMS = {"STORM_LIMIT": 100, "STORM_WINDOW": 60}
    limited = make_sender("publish", storm_limit=1)
    assert limited.publish({"translations": text("en")}).status_code == 201

    refused = limited.publish({"translations": text("en"), "audience": "staff"})

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    error = the_error(refused)
    assert (error["loc"], error["type"]) == ([], "storm_control")
    assert "Storm control" in error["msg"]
    assert Alarm.objects.count() == 1


def test_a_token_that_may_send_nothing_gets_no_retry_after(
    make_sender: Callable[..., Sender],
) -> None:
    never = make_sender("publish", storm_limit=0)

    refused = never.publish({"translations": text("en")})

    assert refused.status_code == 429
    assert "Retry-After" not in refused


# -- what publish refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (
            {"translations": text("en", "ko") | {"fr": text("en")["en"]}},
            ["translations", "fr"],
            "Unknown language 'fr'",
        ),
        ({"translations": text("ko")}, ["translations"], "default language 'en' is required"),
        (
            {"translations": {"en": {"title": " ", "message": "M"}}},
            ["translations", "en", "title"],
            "needs both a title and a message",
        ),
        (
            {"translations": {"en": {"title": "T" * 201, "message": "M"}}},
            ["translations", "en", "title"],
            "longer than 200",
        ),
        (
            {"translations": {"en": {"title": "T", "message": "M" * 10_001}}},
            ["translations", "en", "message"],
            "longer than 10000",
        ),
        (
            {"translations": {"en": {"title": "T\x00", "message": "M"}}},
            ["translations", "en", "title"],
            "Null characters",
        ),
        ({"translations": text("en"), "url": "javascript:alert(1)"}, ["url"], "Unsafe link"),
        ({"translations": text("en"), "users": ["nobody"]}, ["users", 0], "Unknown user 'nobody'"),
        (
            {"translations": text("en"), "groups": ["ops", "ghosts"]},
            ["groups", 1],
            "Unknown group 'ghosts'",
        ),
        # Refused before a lookup, which PostgreSQL would fail on.
        ({"translations": text("en"), "groups": ["a\x00b"]}, ["groups", 0], "Null characters"),
        ({"translations": text("en"), "users": ["a\x00b"]}, ["users", 0], "Null characters"),
        (
            {"translations": text("en"), "audience": "selected"},
            ["audience"],
            "needs at least one user or group",
        ),
        (
            {"translations": text("en"), "audience": "staff", "groups": ["ops"]},
            ["audience"],
            "only be given with the audience",
        ),
        (
            {
                "translations": text("en"),
                "publish_at": ahead(hours=2).isoformat(),
                "expires_at": ahead(hours=1).isoformat(),
            },
            ["expires_at"],
            "after publish_at",
        ),
        (
            {"translations": text("en"), "publish_at": "2031-01-01T09:00:00"},
            ["publish_at"],
            "timezone-aware",
        ),
        (
            {"translations": text("en"), "expires_at": "9999-12-31T23:59:00-23:00"},
            ["expires_at"],
            "expires_at must be from 1970-01-01",
        ),
        (
            {"translations": text("en"), "external_id": "k" * 201},
            ["external_id"],
            "1 to 200 characters",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_an_invalid_alarm_is_a_422_naming_the_field(
    sender: Sender, body: dict[str, Any], loc: list[Any], message: str
) -> None:
    Group.objects.create(name="ops")

    response = sender.publish(body)

    assert response.status_code == 422
    error = the_error(response)
    assert error["loc"] == ["body", *loc]
    assert message in error["msg"]
    assert not Alarm.objects.exists()


def test_the_service_says_the_same_to_every_sender(sender: Sender) -> None:
    """One service: the message is send_alarm's, word for word."""
    body = {"translations": text("en"), "url": "javascript:alert(1)"}
    with pytest.raises(ValueError) as refused:
        api.send_alarm(body["translations"], url=body["url"])

    assert the_error(sender.publish(body))["msg"] == str(refused.value)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"translations": {"en": {"title": 1, "message": "M"}}}, ["translations", "en", "title"]),
        ({"translations": {"en": {"title": "T"}}}, ["translations", "en", "message"]),
        ({"translations": text("en"), "level": "loud"}, ["level"]),
        ({"translations": text("en"), "colour": "red"}, ["colour"]),
        ({"translations": text("en"), "users": "alice"}, ["users"]),
        ({"translations": text("en"), "publish_at": "tomorrow"}, ["publish_at"]),
        ({}, ["translations"]),
    ],
)
def test_a_body_of_the_wrong_shape_is_a_422_naming_the_field(
    sender: Sender, body: dict[str, Any], loc: list[str]
) -> None:
    response = sender.publish(body)

    assert response.status_code == 422
    assert ["body", *loc] in [e["loc"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"translations": }', b"\xff\xfe\x00", b"[" * 100_00 + b"]" * 100_00, b"1" * 5000],
    ids=["cut", "broken", "not-utf8", "deep", "huge-int"],
)
def test_a_body_that_is_not_json_is_a_400(sender: Sender, raw: bytes) -> None:
    response = sender.post(ALARMS, raw=raw)

    assert response.status_code == 400
    error = the_error(response)
    assert (error["loc"], error["type"]) == (["body"], "json_invalid")
    assert not Alarm.objects.exists()


def test_a_body_over_the_cap_is_a_413_before_it_is_parsed(sender: Sender) -> None:
    padding = "x" * MAX_BODY
    too_big = sender.publish({"translations": text("en"), "pad": padding})
    not_json = sender.post(ALARMS, raw=b"{" * (MAX_BODY + 1))
    unauthenticated = Sender(sender.client, None).post(ALARMS, raw=b"{" * (MAX_BODY + 1))

    for response in (too_big, not_json, unauthenticated):
        assert response.status_code == 413
        assert the_error(response)["loc"] == ["body"]
    assert not Alarm.objects.exists()
    # Up to the cap is parsed as usual.
    fits = sender.post(ALARMS, raw=b" " * (MAX_BODY - 2) + b"{}")
    assert fits.status_code == 422


def test_a_content_length_that_is_no_number_is_a_400(sender: Sender) -> None:
    response = sender.client.generic(
        "POST",
        ALARMS,
        b"{}",
        content_type="application/json",
        headers=sender.headers(),
        CONTENT_LENGTH="2x",
    )

    assert response.status_code == 400
    assert the_error(response)["loc"] == ["header", "Content-Length"]


# -- tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "kind"),
    [
        (None, "unauthenticated"),
        ("Basic dXNlcjpwdw==", "invalid_token"),
        ("Bearer", "invalid_token"),
        ("Bearer alm_" + "x" * 40, "invalid_token"),
        ("Bearer not-a-token", "invalid_token"),
        ("Bearer alm_ two", "invalid_token"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", ALARMS), ("get", ALARMS), ("get", f"{ALARMS}/1"), ("post", f"{ALARMS}/1/withdraw")],
)
def test_without_a_good_token_every_operation_is_a_401(
    client: Client, authorization: str | None, kind: str, method: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    alarm = make_alarm()
    path = path.replace("/1", f"/{alarm.pk}")

    response = getattr(client, method)(path, headers=headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="alarms"')
    error = the_error(response)
    assert (error["loc"], error["type"]) == (["header", "Authorization"], kind)
    assert Alarm.objects.get().withdrawn_at is None


def test_a_revoked_token_is_refused_at_the_next_request(sender: Sender) -> None:
    assert sender.get(ALARMS).status_code == 200

    assert sender.token is not None
    tokens.revoke(sender.token)

    refused = sender.get(ALARMS)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused["WWW-Authenticate"]


def test_an_expired_token_is_refused(sender: Sender) -> None:
    AlarmToken.objects.update(expires_at=ago(seconds=1))

    assert sender.get(ALARMS).status_code == 401
    assert sender.publish({"translations": text("en")}).status_code == 401
    assert not Alarm.objects.exists()


@pytest.mark.parametrize(
    ("scopes", "method", "path", "missing"),
    [
        (("read", "withdraw"), "post", ALARMS, "publish"),
        (("publish",), "get", ALARMS, "read"),
        (("publish",), "get", f"{ALARMS}/ID", "read"),
        (("publish",), "get", f"{ALARMS}/by-external-id/k", "read"),
        (("publish", "read"), "post", f"{ALARMS}/ID/withdraw", "withdraw"),
        (("publish", "read"), "post", f"{ALARMS}/by-external-id/k/withdraw", "withdraw"),
    ],
)
def test_a_token_without_the_scope_is_a_403(
    make_sender: Callable[..., Sender],
    scopes: tuple[str, ...],
    method: str,
    path: str,
    missing: str,
) -> None:
    alarm = make_alarm(external_id="k")
    limited = make_sender(*scopes)
    path = path.replace("ID", str(alarm.pk))

    if method == "post":
        response = limited.post(path, {"translations": text("en")})
    else:
        response = limited.get(path)

    assert response.status_code == 403
    assert f'scope="{missing}"' in response["WWW-Authenticate"]
    error = the_error(response)
    assert (error["loc"], error["type"]) == (["header", "Authorization"], "insufficient_scope")
    assert repr(missing) in error["msg"]
    assert Alarm.objects.get().withdrawn_at is None
    assert Alarm.objects.count() == 1


def test_a_request_records_when_the_token_was_last_used(sender: Sender) -> None:
    assert sender.token is not None and sender.token.last_used_at is None

    sender.get(ALARMS)

    used = AlarmToken.objects.get().last_used_at
    assert used is not None and timezone.now() - used < timedelta(minutes=1)


def test_a_signed_in_session_is_no_token_and_no_csrf_token_is_needed(
    admin_user: Any, make_sender: Callable[..., Sender]
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)

    assert browser.get(ALARMS).status_code == 401
    secret = make_sender("publish").secret
    with_token = Sender(browser, secret).publish({"translations": text("en")})
    assert with_token.status_code == 201  # a bearer request needs no CSRF token
    assert Alarm.objects.get().created_by is None


# -- read -----------------------------------------------------------------------------


def test_read_an_alarm_with_its_counts_per_language(sender: Sender) -> None:
    alarm = sender.publish(
        {"translations": text("en", "ko"), "external_id": "k", "audience": "everyone"}
    ).json()
    readers = [make_user(name) for name in ("a", "b", "c", "d")]
    api.mark_seen(readers[0], [alarm["id"]], language="ko")
    api.mark_seen(readers[1], [alarm["id"]], language="ko")
    api.dismiss(readers[1], [alarm["id"]], language="ko")
    # A reader of Japanese is shown the default language.
    api.dismiss(readers[2], [alarm["id"]], language="ja")
    # A receipt from before languages were recorded.
    AlarmReceipt.objects.create(alarm_id=alarm["id"], user=readers[3], seen_at=timezone.now())

    response = sender.get(f"{ALARMS}/{alarm['id']}")

    assert response.status_code == 200
    body = response.json()
    assert body["receipts"] == {
        "seen": 4,
        "dismissed": 2,
        "languages": {
            "ko": {"seen": 2, "dismissed": 1},
            "en": {"seen": 1, "dismissed": 1},
            "unknown": {"seen": 1, "dismissed": 0},
        },
    }
    assert (body["status"], body["external_id"], body["audience"]) == ("live", "k", "everyone")
    assert body["translations"] == text("en", "ko")
    assert sender.get(f"{ALARMS}/by-external-id/k").json() == body


def test_read_gives_the_status_of_the_rules(sender: Sender) -> None:
    cases = {
        "scheduled": make_alarm(publish_at=ahead(hours=1)),
        "expired": make_alarm(publish_at=ago(hours=2), expires_at=ago(hours=1)),
        "withdrawn": make_alarm(withdrawn_at=ago(minutes=1)),
        "live": make_alarm(),
    }
    for status, alarm in cases.items():
        assert sender.get(f"{ALARMS}/{alarm.pk}").json()["status"] == status == alarm.status


@pytest.mark.parametrize(
    "path",
    [
        f"{ALARMS}/999999",
        f"{ALARMS}/0",
        f"{ALARMS}/{2**63}",
        f"{ALARMS}/{'9' * 40}",
        f"{ALARMS}/by-external-id/nothing",
        f"{ALARMS}/by-external-id/nul%00",
        f"{ALARMS}/by-external-id/{'k' * 300}",
    ],
)
def test_reading_what_is_not_there_is_a_404(sender: Sender, path: str) -> None:
    response = sender.get(path)

    assert response.status_code == 404
    assert the_error(response)["type"] == "not_found"


# -- withdraw -------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "external_id"])
def test_withdraw_now_and_again(sender: Sender, by: str) -> None:
    alarm = make_alarm(external_id="k")
    path = f"{ALARMS}/{alarm.pk}/withdraw" if by == "id" else f"{ALARMS}/by-external-id/k/withdraw"
    rows = journal_rows()

    first = sender.post(path)
    after_first = journal_rows()
    again = sender.post(path)

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == "withdrawn"
    assert first.json()["withdrawn_at"] is not None
    assert again.json() == first.json()
    assert after_first > rows  # open pages retract it
    assert journal_rows() == after_first  # the second withdrawal writes nothing
    alarm.refresh_from_db()
    assert alarm.status == "withdrawn"


def test_withdrawing_what_is_not_there_is_a_404(sender: Sender) -> None:
    assert sender.post(f"{ALARMS}/12345/withdraw").status_code == 404
    assert sender.post(f"{ALARMS}/by-external-id/nothing/withdraw").status_code == 404


# -- list -----------------------------------------------------------------------------


def test_list_pages_newest_first_with_next_and_previous(sender: Sender) -> None:
    alarms = [make_alarm(publish_at=ago(minutes=10 - i)) for i in range(5)]
    newest_first = [a.pk for a in reversed(alarms)]

    first = sender.get(f"{ALARMS}?limit=2").json()
    second = sender.get(first["next"]).json()
    last = sender.get(second["next"]).json()

    assert first["count"] == second["count"] == last["count"] == 5
    assert [a["id"] for a in first["items"] + second["items"] + last["items"]] == newest_first
    assert first["previous"] is None
    assert first["next"] == f"{ALARMS}?limit=2&offset=2"
    assert second["previous"] == f"{ALARMS}?limit=2&offset=0"
    assert last["next"] is None


def test_list_filters(make_sender: Callable[..., Sender]) -> None:
    mine = make_sender("publish", "read")
    other = make_sender("publish")
    made = mine.publish({"translations": text("en"), "level": "error", "external_id": "m"})
    other.publish({"translations": text("en"), "audience": "staff"})
    scheduled = make_alarm(publish_at=ahead(hours=1), level=Level.WARNING)
    withdrawn = make_alarm(withdrawn_at=ago(minutes=1), audience=Audience.EVERYONE)

    def ids(query: str) -> list[int]:
        response = mine.get(f"{ALARMS}?{query}")
        assert response.status_code == 200, response.json()
        return sorted(a["id"] for a in response.json()["items"])

    made_id = made.json()["id"]
    assert ids("mine=true") == [made_id]
    assert ids("external_id=m") == [made_id]
    assert ids("level=error") == [made_id]
    assert ids("status=scheduled") == [scheduled.pk]
    assert ids("status=withdrawn&audience=everyone") == [withdrawn.pk]
    assert ids("audience=staff&status=live") == [Alarm.objects.get(audience="staff").pk]
    after = (timezone.now() + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    assert ids(f"published_after={after}") == [scheduled.pk]
    assert len(ids(f"published_before={after}")) == 3


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("limit=0", ["query", "limit"]),
        ("limit=201", ["query", "limit"]),
        ("offset=-1", ["query", "offset"]),
        ("status=gone", ["query", "status"]),
        ("published_after=2031-01-01T00:00:00", ["query", "published_after"]),
        ("published_after=0001-01-01T00:00:00%2B01:00", ["query", "published_after"]),
        ("external_id=a%00b", ["query", "external_id"]),
        ("mine=perhaps", ["query", "mine"]),
    ],
)
def test_a_bad_filter_is_a_422_naming_it(sender: Sender, query: str, loc: list[str]) -> None:
    response = sender.get(f"{ALARMS}?{query}")

    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["errors"]]


def test_the_list_counts_receipts_for_every_alarm_on_the_page(sender: Sender) -> None:
    reader = make_user("reader")
    first, second = make_alarm(), make_alarm(("en", "ko"))
    api.mark_seen(reader, [first.pk, second.pk], language="ko")

    items = {a["id"]: a["receipts"] for a in sender.get(ALARMS).json()["items"]}

    assert items[first.pk]["languages"] == {"en": {"seen": 1, "dismissed": 0}}
    assert items[second.pk]["languages"] == {"ko": {"seen": 1, "dismissed": 0}}


# -- the OpenAPI document -------------------------------------------------------------


def test_the_openapi_document_is_valid_and_describes_every_operation(client: Client) -> None:
    response = client.get(f"{BASE}/openapi.json")

    assert response.status_code == 200
    document = response.json()
    validate(document)  # an independent validator: raises on an invalid document
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post"}
    }
    assert operations == {
        ("POST", f"{ALARMS}"),
        ("GET", f"{ALARMS}"),
        ("GET", f"{ALARMS}/{{alarm_id}}"),
        ("GET", f"{ALARMS}/by-external-id/{{key}}"),
        ("POST", f"{ALARMS}/{{alarm_id}}/withdraw"),
        ("POST", f"{ALARMS}/by-external-id/{{key}}/withdraw"),
        ("GET", f"{BASE}/me/alarms"),
        ("GET", f"{BASE}/me/unread-count"),
    }
    publish = document["paths"][ALARMS]["post"]
    assert set(publish["responses"]) == {str(s) for s in PUBLISH_STATUSES | {401, 403}}
    assert publish["security"] == [{"BearerToken": []}]
    assert document["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"


def test_there_is_no_interactive_docs_page(client: Client) -> None:
    assert client.get(f"{BASE}/docs").status_code == 404


# -- no input is a 500 ----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
LANGUAGE = st.sampled_from(["en", "ko", "EN", "fr", "", "pt_BR", "\x00"])
TEXT_VALUE = st.one_of(
    st.text(max_size=30), st.sampled_from(["", " ", "T" * 201, "\x00", "\ud800"])
)
TIME = st.one_of(
    st.none(),
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "now", ""]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
TRANSLATION = st.fixed_dictionaries(
    {"title": st.text(min_size=1, max_size=30), "message": st.text(min_size=1, max_size=60)}
)
SANE_TIME = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()
).map(lambda t: t.isoformat())
# Bodies that are mostly valid, so that they get past the first check.
VALID = st.fixed_dictionaries(
    {
        "translations": st.builds(
            lambda en, more: {"en": en, **more},
            TRANSLATION,
            st.dictionaries(st.sampled_from(["ko", "ja", "ar"]), TRANSLATION, max_size=2),
        )
    },
    optional={
        "level": st.sampled_from(Level.values),
        "audience": st.sampled_from(["everyone", "authenticated", "staff"]),
        "url": st.sampled_from(["", "/ok", "https://x.test/"]),
        "publish_at": SANE_TIME,
        "expires_at": SANE_TIME,
        "external_id": st.text(min_size=1, max_size=10),
    },
) | st.fixed_dictionaries(
    {
        "translations": st.just(text("en")),
        "users": st.sampled_from([["reader"], []]),
        "groups": st.sampled_from([["ops"], []]),
    },
    optional={"audience": st.just("selected")},
)
FIELDS = st.sampled_from(
    [
        "translations",
        "level",
        "audience",
        "users",
        "groups",
        "url",
        "publish_at",
        "expires_at",
        "external_id",
        "extra",
    ]
)
BAD_VALUE = st.one_of(JSON, TEXT_VALUE, TIME, st.dictionaries(LANGUAGE, JSON, max_size=2))
NEAR_VALID = st.one_of(
    VALID,
    st.builds(lambda body, field, value: {**body, field: value}, VALID, FIELDS, BAD_VALUE),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(JSON, NEAR_VALID), key=st.one_of(st.none(), st.text(max_size=10)))
# Times at the edge of what a datetime holds, with an offset past it.
@example(body={"translations": text("en"), "expires_at": "9999-12-31T23:59:59-23:59"}, key=None)
@example(body={"translations": text("en"), "publish_at": "0001-01-01T00:00:00+23:59"}, key=None)
def test_no_body_makes_a_500(sender: Sender, body: Any, key: str | None) -> None:
    # Hypothesis runs every example in one test transaction.
    User.objects.get_or_create(username="reader")
    Group.objects.get_or_create(name="ops")
    headers = {}
    if key is not None and key.isprintable() and key.isascii():
        headers["Idempotency-Key"] = key

    response = sender.publish(body, **headers)

    assert response.status_code in PUBLISH_STATUSES, response.content
    if response.status_code >= 400:
        assert response.json()["errors"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=200))
def test_no_bytes_make_a_500(sender: Sender, raw: bytes) -> None:
    response = sender.post(ALARMS, raw=raw)

    assert response.status_code in PUBLISH_STATUSES, response.content


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=st.dictionaries(
        st.sampled_from(
            [
                "status",
                "level",
                "audience",
                "external_id",
                "mine",
                "limit",
                "offset",
                "published_after",
                "published_before",
            ]
        ),
        st.text(max_size=30),
        max_size=4,
    ),
    key=st.text(min_size=1, max_size=30).filter(lambda k: "/" not in k),
)
def test_no_query_or_key_makes_a_500(sender: Sender, query: dict[str, str], key: str) -> None:
    listed = sender.client.get(ALARMS, query, headers=sender.headers())
    read = sender.get(f"{ALARMS}/by-external-id/{quote(key, safe='')}")

    assert listed.status_code in {200, 422}, listed.content
    assert read.status_code in {200, 404}, read.content

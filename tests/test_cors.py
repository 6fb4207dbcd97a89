"""CORS for the stream and the receipts: headers, preflights, refusals, CSRF, the check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.core.checks import run_checks
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings
from django.urls import resolve

from alarms import api
from alarms.checks import check_settings, cors_origin_errors
from alarms.cors import ALLOWED_HEADERS, MAX_AGE, cors, normalise_origin
from alarms.models import Alarm, AlarmReceipt

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
OWN = "http://testserver"  # the test client's own origin

allow_app = override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": [APP]})


# -- origins ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("https://app.example.com:8443", "https://app.example.com:8443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_normalise_origin(value: str, expected: str) -> None:
    assert normalise_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "null",
        "",
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://app.example.com#top",
        "https://user@app.example.com",
        "https://*.example.com",
        "https://app.example.com:99999",
        "ftp://app.example.com",
        "file:///etc",
        " https://app.example.com",
    ],
)
def test_normalise_origin_refuses_what_is_not_an_origin(value: str) -> None:
    assert normalise_origin(value) is None


# -- the check ------------------------------------------------------------------


def test_valid_origins_pass_the_check() -> None:
    origins = [APP, "http://localhost:3000", "HTTPS://Admin.Example.com:443", "http://[::1]:8000"]
    assert cors_origin_errors(origins) == []
    with override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": origins}):
        assert check_settings() == []


def test_e006_rejects_the_wildcard() -> None:
    with override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": [APP, "*"]}):
        messages = check_settings()
    assert [m.id for m in messages] == ["alarms.E006"]
    assert "wildcards: '*'" in messages[0].msg
    assert "credentials" in messages[0].hint


@pytest.mark.parametrize(
    "entry",
    [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/api",
        "https://*.example.com",
        "null",
        "",
        42,
        None,
    ],
)
def test_e006_rejects_entries_that_are_not_origins(entry: Any) -> None:
    messages = cors_origin_errors([APP, entry])
    assert [m.id for m in messages] == ["alarms.E006"]
    assert repr(entry) in messages[0].msg


def test_e006_needs_a_list() -> None:
    messages = cors_origin_errors(APP)
    assert [m.id for m in messages] == ["alarms.E006"]
    assert "must be a list" in messages[0].msg


@override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": ["*"]})
def test_e006_is_registered() -> None:
    assert "alarms.E006" in [m.id for m in run_checks()]


# -- the receipts: CSRF and CORS --------------------------------------------------


@pytest.fixture
def reader(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("reader")


@pytest.fixture
def alarm() -> Alarm:
    return api.send_alarm({"en": {"title": "Fire drill", "message": "Leave now."}})


@pytest.fixture
def client(reader: Any) -> Client:
    # Django's test client skips CSRF checks unless told otherwise.
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    return client


def post_json(client: Client, path: str, ids: list[int], **headers: str) -> HttpResponse:
    return client.post(
        path, json.dumps({"ids": ids}), content_type="application/json", headers=headers
    )


def dismissed(reader: Any, alarm: Alarm) -> bool:
    return AlarmReceipt.objects.filter(
        user=reader, alarm=alarm, dismissed_at__isnull=False
    ).exists()


def assert_cors(response: HttpResponse, origin: str) -> None:
    assert response["Access-Control-Allow-Origin"] == origin
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response["Vary"]


def assert_no_cors(response: HttpResponse) -> None:
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Credentials" not in response


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize("origin", [None, OWN])
def test_same_origin_post_without_token_is_refused_by_csrf(client, reader, alarm, origin) -> None:
    headers = {"Origin": origin} if origin else {}
    response = post_json(client, "/alarms/dismiss/", [alarm.pk], **headers)
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert_no_cors(response)
    assert not dismissed(reader, alarm)


@allow_app
@pytest.mark.django_db
def test_same_origin_post_with_token_passes_untouched(client, reader, alarm) -> None:
    request = RequestFactory().get("/")
    token = get_token(request)
    client.cookies["csrftoken"] = request.META["CSRF_COOKIE"]
    response = post_json(client, "/alarms/dismiss/", [alarm.pk], Origin=OWN, X_CSRFToken=token)
    assert response.status_code == 200
    assert response.json() == {"updated": 1}
    assert_no_cors(response)
    assert "Vary" not in response or "Origin" not in response["Vary"]
    assert dismissed(reader, alarm)


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/alarms/seen/", "/alarms/dismiss/"])
def test_allowed_origin_json_post_needs_no_token(client, reader, alarm, path) -> None:
    response = post_json(client, path, [alarm.pk], Origin=APP)
    assert response.status_code == 200
    assert response.json() == {"updated": 1}
    assert_cors(response, APP)
    receipt = AlarmReceipt.objects.get(user=reader, alarm=alarm)
    assert (receipt.dismissed_at is not None) == (path == "/alarms/dismiss/")


@override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": ["HTTPS://App.Example.com:443"]})
@pytest.mark.django_db
def test_origins_are_compared_after_normalising(client, alarm) -> None:
    response = post_json(client, "/alarms/dismiss/", [alarm.pk], Origin=APP)
    assert response.status_code == 200
    # The browser's own spelling goes back, which is what it compares.
    assert_cors(response, APP)


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
)
def test_allowed_origin_without_json_still_needs_the_token(
    client, reader, alarm, content_type
) -> None:
    # What a form (or a "simple" fetch, sent without a preflight) can send.
    bodies = {
        "application/x-www-form-urlencoded": f"ids={alarm.pk}",
        "multipart/form-data": {"ids": [alarm.pk]},
        "text/plain": json.dumps({"ids": [alarm.pk]}),
    }
    options = {} if content_type == "multipart/form-data" else {"content_type": content_type}
    response = client.post(
        "/alarms/dismiss/", bodies[content_type], headers={"Origin": APP}, **options
    )
    assert response.status_code == 403
    assert b"CSRF" in response.content
    # Readable by the page, so that its script can tell this from a network error.
    assert_cors(response, APP)
    assert not dismissed(reader, alarm)


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize(
    "origin", [OTHER, "null", "https://app.example.com.evil.net", "http://app.example.com"]
)
def test_other_origins_are_refused_and_change_nothing(client, reader, alarm, origin) -> None:
    response = post_json(client, "/alarms/dismiss/", [alarm.pk], Origin=origin)
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert "ALARMS['CORS_ALLOWED_ORIGINS']" in response.content.decode()
    assert_no_cors(response)
    assert not dismissed(reader, alarm)


@pytest.mark.django_db
def test_nothing_is_allowed_by_default(client, reader, alarm) -> None:
    response = post_json(client, "/alarms/dismiss/", [alarm.pk], Origin=APP)
    assert response.status_code == 403
    assert not dismissed(reader, alarm)


@allow_app
@pytest.mark.django_db
def test_allowed_origin_anonymous_gets_a_readable_403() -> None:
    response = post_json(Client(enforce_csrf_checks=True), "/alarms/seen/", [1], Origin=APP)
    assert response.status_code == 403
    assert "Sign in" in response.json()["error"]
    assert_cors(response, APP)


@allow_app
@pytest.mark.django_db
def test_allowed_origin_wrong_method_keeps_the_views_answer(client) -> None:
    response = client.get("/alarms/dismiss/", headers={"Origin": APP})
    assert response.status_code == 405
    assert_cors(response, APP)


# -- preflights -------------------------------------------------------------------


def preflight(path: str, origin: str, method: str, headers: str = "content-type") -> HttpResponse:
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/alarms/seen/", "POST", "content-type"),
        ("/alarms/dismiss/", "POST", "content-type,x-csrftoken"),
        ("/alarms/stream/", "GET", "last-event-id"),
    ],
)
def test_preflight_for_an_allowed_origin(path: str, method: str, headers: str) -> None:
    response = preflight(path, APP, method, headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_cors(response, APP)
    assert response["Access-Control-Allow-Methods"] == method
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert set(headers.split(",")) <= allowed
    assert allowed == {h.lower() for h in ALLOWED_HEADERS}
    assert response["Access-Control-Max-Age"] == str(MAX_AGE)


@allow_app
@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/alarms/seen/", "/alarms/dismiss/", "/alarms/stream/"])
def test_preflight_for_another_origin_is_refused(path: str) -> None:
    response = preflight(path, OTHER, "POST")
    assert response.status_code == 403
    assert "CORS_ALLOWED_ORIGINS" in response.content.decode()
    assert_no_cors(response)
    assert "Access-Control-Allow-Methods" not in response


@allow_app
@pytest.mark.django_db
def test_options_without_a_preflight_header_reaches_the_view() -> None:
    response = Client().options("/alarms/dismiss/", headers={"Origin": APP})
    assert response.status_code == 405
    assert_cors(response, APP)


# -- the stream -------------------------------------------------------------------


def test_the_stream_route_stays_async() -> None:
    # Django runs an async view on the event loop only if it can tell.
    assert iscoroutinefunction(resolve("/alarms/stream/").func)
    assert not iscoroutinefunction(resolve("/alarms/seen/").func)
    # The stream takes no unsafe method: the middleware's CSRF handling is untouched.
    assert not getattr(resolve("/alarms/stream/").func, "csrf_exempt", False)
    assert resolve("/alarms/dismiss/").func.csrf_exempt is True


@allow_app
@pytest.mark.django_db
def test_stream_refuses_another_origin_before_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_broker() -> None:
        raise AssertionError("the view ran")

    monkeypatch.setattr("alarms.views.stream.get_broker", no_broker)
    response = Client().get("/alarms/stream/", headers={"Origin": OTHER})
    assert response.status_code == 403
    assert not response.streaming
    assert "ALARMS['CORS_ALLOWED_ORIGINS']" in response.content.decode()
    assert_no_cors(response)


def event_stream(request: HttpRequest) -> StreamingHttpResponse:
    response = StreamingHttpResponse(iter([b": alarms\n\n"]), content_type="text/event-stream")
    response["Vary"] = "Cookie, Accept-Language"
    return response


@cors("GET")
async def async_view(request: HttpRequest) -> StreamingHttpResponse:
    return event_stream(request)


@allow_app
def test_async_view_gets_cors_headers_and_keeps_its_vary(rf: RequestFactory) -> None:
    response = async_to_sync(async_view)(rf.get("/", headers={"Origin": APP}))
    assert response.status_code == 200
    assert_cors(response, APP)
    assert response["Vary"] == "Cookie, Accept-Language, Origin"


@allow_app
@pytest.mark.parametrize(("origin", "status"), [(None, 200), (OWN, 200), (OTHER, 403)])
def test_async_view_same_origin_untouched_others_refused(
    rf: RequestFactory, origin: str | None, status: int
) -> None:
    headers = {"Origin": origin} if origin else {}
    response = async_to_sync(async_view)(rf.get("/", headers=headers))
    assert response.status_code == status
    assert_no_cors(response)
    if status == 200:
        assert response["Vary"] == "Cookie, Accept-Language"


@allow_app
def test_async_view_preflight(rf: RequestFactory) -> None:
    request = rf.options("/", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
    response = async_to_sync(async_view)(request)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Methods"] == "GET"


def test_settings_changes_are_seen(rf: RequestFactory) -> None:
    request = rf.get("/", headers={"Origin": APP})
    with override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": [APP]}):
        assert async_to_sync(async_view)(request).status_code == 200
    with override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": ["https://other.example.com"]}):
        assert async_to_sync(async_view)(request).status_code == 403


@override_settings(ALARMS={"CORS_ALLOWED_ORIGINS": ["*", "https://app.example.com/", 7, APP]})
def test_malformed_entries_allow_nothing_and_break_nothing(rf: RequestFactory) -> None:
    for origin in (OTHER, "*", "https://app.example.com/"):
        response = async_to_sync(async_view)(rf.get("/", headers={"Origin": origin}))
        assert response.status_code == 403
    assert async_to_sync(async_view)(rf.get("/", headers={"Origin": APP})).status_code == 200


# -- the template tag ------------------------------------------------------------


def render(template: str) -> str:
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    return Template("{% load alarms %}" + template).render(Context({"request": request}))


def test_toasts_tag_points_at_another_origin() -> None:
    html = render('{% alarms_toasts origin="https://alarms.example.com" %}')
    assert 'data-stream-url="https://alarms.example.com/alarms/stream/"' in html
    assert 'data-seen-url="https://alarms.example.com/alarms/seen/"' in html
    assert 'data-dismiss-url="https://alarms.example.com/alarms/dismiss/"' in html
    # No token for the other origin (and no CSRF cookie set here for its sake).
    assert 'data-csrf-token=""' in html
    assert 'data-csrf-cookie=""' in html
    assert 'src="/static/alarms/alarms.js"' in html


def test_toasts_tag_same_origin_is_unchanged() -> None:
    html = render("{% alarms_toasts %}")
    assert 'data-stream-url="/alarms/stream/"' in html
    assert 'data-csrf-cookie="csrftoken"' in html
    assert 'data-csrf-token=""' not in html


@pytest.mark.parametrize("origin", ["alarms.example.com", "https://alarms.example.com/api"])
def test_toasts_tag_refuses_what_is_not_an_origin(origin: str) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        render(f'{{% alarms_toasts origin="{origin}" %}}')

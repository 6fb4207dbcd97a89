"""``alarms.asgi.direct_streams``: the stream served without Django's middleware chain.

Each test runs a real daphne process with a middleware that marks what went
through the chain (``tests.e2e.chain_settings``), once with the direct path
(told it may skip that middleware) and once without the wrapper (Django's
path): the stream must be the same either way, and only the direct one skips
the chain. A middleware the path does not know keeps streams on Django's path.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from alarms import api
from alarms.models import AlarmReceipt
from tests.e2e.conftest import Server, ServerFactory, http_request
from tests.sse import Stream

pytestmark = pytest.mark.e2e

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ko": {"title": "소방 훈련", "message": "동쪽 계단으로 나가십시오."},
}
APPS = {"direct": "tests.e2e.asgi:direct", "django": "tests.e2e.asgi:django"}


@pytest.fixture
def chain_server(server_factory: ServerFactory) -> Callable[..., Server]:
    """A server on ``tests.e2e.chain_settings``, serving the application ``path``
    (a key of APPS, or a dotted path) with ``extra_middleware`` (comma-separated)."""

    def make(path: str, extra_middleware: str = "", **alarms: Any) -> Server:
        return server_factory(
            settings="tests.e2e.chain_settings",
            application=APPS.get(path, path),
            env={"EXTRA_MIDDLEWARE": extra_middleware},
            **alarms,
        )

    return make


@pytest.mark.parametrize("path", APPS)
def test_the_stream_is_the_same_on_either_path(
    chain_server, path, make_user, session_cookie
) -> None:
    server = chain_server(path)
    reader = make_user("dana")
    mine = api.send_alarm(TEXTS, users=[reader])
    name, value = session_cookie(reader)
    headers = {"Accept-Language": "fr, ko_KR;q=0.8"}
    with Stream(f"{server.url}/alarms/stream/", cookies={name: value}, headers=headers) as stream:
        assert stream.status == 200
        event = stream.next_event(15)
        assert (event.event, event.json()["id"], event.json()["title"]) == (
            "alarm",
            mine.pk,
            "소방 훈련",
        )
        # What Django's middleware adds to every response, both paths send.
        assert stream.headers["Content-Language"] == "ko"
        assert stream.headers["X-Content-Type-Options"] == "nosniff"
        assert stream.headers["Cache-Control"].startswith("no-cache")
        # The project's own middleware runs on Django's path only.
        assert ("X-Chain" in stream.headers) == (path == "django")
        resume_from = stream.last_event_id

    later = api.send_alarm(TEXTS, users=[reader], level="error")
    headers = {**headers, "Last-Event-ID": resume_from}
    with Stream(f"{server.url}/alarms/stream/", cookies={name: value}, headers=headers) as stream:
        assert stream.next_event(15).json()["id"] == later.pk

    # Pages go through the chain either way.
    status, page_headers, _ = http_request(server.port, "GET", "/", {})
    assert (status, page_headers["X-Chain"]) == (200, "1")


@pytest.mark.parametrize("path", APPS)
def test_refusals_are_the_same_on_either_path(chain_server, path) -> None:
    server = chain_server(path, CORS_ALLOWED_ORIGINS=["https://listed.example"])
    stream = "/alarms/stream/"
    # A Host outside ALLOWED_HOSTS: Django's 400.
    status, headers, _ = http_request(server.port, "GET", stream, {"Host": "evil.example"})
    assert (status, headers["X-Content-Type-Options"]) == (400, "nosniff")
    # A session cookie naming no session: Django deletes it, on either path.
    with Stream(f"{server.url}{stream}", cookies={"sessionid": "gone"}) as anonymous:
        assert anonymous.status == 200
        cookies = anonymous.headers.get_all("Set-Cookie") or []
    assert any(c.startswith('sessionid=""') for c in cookies), cookies
    # An origin not listed: the CORS decorator's 403.
    status, _, body = http_request(server.port, "GET", stream, {"Origin": "https://evil.example"})
    assert status == 403
    assert b"may not use the alarm endpoints" in body
    # Another method falls through to Django, and the view's decorator refuses it.
    status, _, _ = http_request(server.port, "HEAD", stream, {})
    assert status == 405
    log = server.output()
    assert "Invalid HTTP_HOST header: 'evil.example'" in log
    assert "Forbidden: /alarms/stream/" in log  # the 403, logged as Django logs it


def test_a_middleware_it_does_not_know_keeps_streams_on_djangos_path(chain_server) -> None:
    # The demo's application, which names no middleware to skip.
    server = chain_server("config.asgi:application")
    with Stream(f"{server.url}/alarms/stream/") as stream:
        assert stream.status == 200
        assert stream.headers["X-Chain"] == "1"
    assert "direct_streams: tests.e2e.chain_settings.MarkChain may do" in server.output()


@pytest.mark.parametrize("path", APPS)
def test_login_required_middleware_still_guards_the_stream(
    chain_server, path, make_user, session_cookie
) -> None:
    server = chain_server(
        path, extra_middleware="django.contrib.auth.middleware.LoginRequiredMiddleware"
    )
    api.send_alarm(TEXTS, audience="everyone")
    # Anonymous: Django's redirect to the login page, never an alarm meant for everyone.
    status, headers, _ = http_request(server.port, "GET", "/alarms/stream/", {})
    assert status == 302
    assert headers["Location"].startswith("/accounts/login/")
    name, value = session_cookie(make_user("erin"))
    with Stream(f"{server.url}/alarms/stream/", cookies={name: value}) as stream:
        assert stream.status == 200
        assert stream.next_event(15).json()["title"] == "Fire drill"


@pytest.mark.parametrize("path", APPS)
def test_receipts_are_the_same_on_either_path(
    chain_server, path, make_user, session_cookie
) -> None:
    """The receipts' POSTs run Django's whole chain either way; on the direct path
    in one of its worker threads, not hop by hop on Django's."""
    server = chain_server(path)
    reader = make_user("rhea")
    alarm = api.send_alarm(TEXTS, users=[reader])
    name, value = session_cookie(reader)
    token = secrets.token_hex(16)  # a CSRF secret of our own: cookie and header agree

    def post(url: str, body: bytes, **headers: str) -> tuple[int, Any, bytes]:
        return http_request(server.port, "POST", url, headers, body)

    signed_in = {"Cookie": f"{name}={value}; csrftoken={token}", "Content-Type": "application/json"}
    ids = json.dumps({"ids": [alarm.pk], "language": "ko"}).encode()
    # Without the CSRF header: the view's own check refuses it.
    status, headers, _ = post("/alarms/dismiss/", ids, **signed_in)
    assert (status, headers["X-Chain"]) == (403, "1")
    # Anonymous, and a body that is not JSON: the view's answers.
    anonymous = {"Cookie": f"csrftoken={token}", "X-CSRFToken": token}
    status, _, body = post(
        "/alarms/seen/", ids, **anonymous, **{"Content-Type": "application/json"}
    )
    assert status == 403
    assert b"Sign in to record alarms" in body
    status, _, body = post("/alarms/seen/", b"{", **signed_in, **{"X-CSRFToken": token})
    assert (status, json.loads(body)) == (400, {"error": "The body is not valid JSON."})
    # A Host outside ALLOWED_HOSTS: Django's 400.
    status, _, _ = post("/alarms/seen/", ids, **signed_in, Host="evil.example")
    assert status == 400
    assert not AlarmReceipt.objects.exists()
    # Seen, then dismissed: each recorded once, in the language the toast was shown in.
    for url in ("/alarms/seen/", "/alarms/dismiss/"):
        status, headers, body = post(url, ids, **signed_in, **{"X-CSRFToken": token})
        assert (status, json.loads(body)) == (200, {"updated": 1})
        assert headers["X-Content-Type-Options"] == "nosniff"
        direct = headers["X-Chain-Thread"].startswith("alarms-receipts")
        assert direct == (path == "direct"), headers["X-Chain-Thread"]
    receipt = AlarmReceipt.objects.get(user=reader, alarm=alarm)
    assert (receipt.language, bool(receipt.seen_at), bool(receipt.dismissed_at)) == (
        "ko",
        True,
        True,
    )
    log = server.output()
    assert "Invalid HTTP_HOST header: 'evil.example'" in log
    assert "Forbidden (CSRF cookie not set.)" in log or "Forbidden (CSRF token" in log

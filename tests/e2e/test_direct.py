"""``alarms.asgi.direct_streams``: the stream served without Django's middleware chain.

Each test runs a real daphne process with a middleware that marks what went
through the chain (``tests.e2e.chain_settings``), once with the direct path
(told it may skip that middleware) and once without the wrapper (Django's
path): the stream must be the same either way, and only the direct one skips
the chain. A middleware the path does not know keeps streams on Django's path.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alarms import api
from tests.e2e.conftest import Server, http_request
from tests.sse import Stream

pytestmark = pytest.mark.e2e

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ko": {"title": "소방 훈련", "message": "동쪽 계단으로 나가십시오."},
}
APPS = {"direct": "tests.e2e.asgi:direct", "django": "tests.e2e.asgi:django"}


class ChainServer(Server):
    def __init__(self, application: str, extra_middleware: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.extra_middleware = extra_middleware

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "DJANGO_SETTINGS_MODULE": "tests.e2e.chain_settings",
            "EXTRA_MIDDLEWARE": self.extra_middleware,
        }

    def command(self) -> list[str]:
        return [*super().command()[:-1], self.application]


@pytest.fixture
def chain_server(transactional_db: None) -> Iterator[Callable[..., ChainServer]]:
    started: list[ChainServer] = []

    def make(path: str, extra_middleware: str = "", **alarms: Any) -> ChainServer:
        server = ChainServer(APPS.get(path, path), extra_middleware, alarms=alarms).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(signal.SIGKILL)


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
    log = server.log.read_text()
    assert "Invalid HTTP_HOST header: 'evil.example'" in log
    assert "Forbidden: /alarms/stream/" in log  # the 403, logged as Django logs it


def test_a_middleware_it_does_not_know_keeps_streams_on_djangos_path(chain_server) -> None:
    # The demo's application, which names no middleware to skip.
    server = chain_server("config.asgi:application")
    with Stream(f"{server.url}/alarms/stream/") as stream:
        assert stream.status == 200
        assert stream.headers["X-Chain"] == "1"
    assert "direct_streams: tests.e2e.chain_settings.MarkChain may do" in server.log.read_text()


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

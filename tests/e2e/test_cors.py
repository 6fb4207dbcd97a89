"""Cross-origin pages in a real Chromium: a front end on one port, the alarms on another.

The daphne server runs on 127.0.0.1 and a tiny static server on another port
of 127.0.0.1 serves the front end's page, which loads alarms.js from daphne and
points its data-* URLs there. Another port of the same host is another origin
but the same site, so the session cookie (SameSite=Lax, set for 127.0.0.1)
goes along with credentialed requests: that is the case these tests cover. The
last test puts the page on ``localhost``, another site, where it does not.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from alarms import api
from tests.e2e import browser as fixtures
from tests.e2e.browser import toast, wait_ready
from tests.e2e.conftest import metric
from tests.helpers import receipt, wait_for

# The first two tests write receipts and resume across origins, and run on both
# databases. The two marked one_database check what the browser and the CORS
# middleware refuse, before any of it reaches the database.
pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.one_django]

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

TEXTS = {"en": {"title": "Fire drill at 3 pm", "message": "Leave by the east stairs."}}
METRICS_TOKEN = "e2e-cors-metrics"


class FrontEnd:
    """A page on its own origin that uses the alarms of ``alarms_url`` (set once known)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.alarms_url = ""
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = front.page().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def page(self) -> str:
        # What a front end on another origin writes: the script from the alarm
        # server, configured with absolute URLs; the user is signed in there.
        base = escape(self.alarms_url)
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>Front end</title>"
            f'<link rel="stylesheet" href="{base}/static/alarms/alarms.css"></head>'
            "<body><h1>Another origin</h1>"
            f'<script src="{base}/static/alarms/alarms.js" defer'
            f' data-stream-url="{base}/alarms/stream/" data-seen-url="{base}/alarms/seen/"'
            f' data-dismiss-url="{base}/alarms/dismiss/" data-language="en"'
            ' data-authenticated="true" data-scope="front-end"></script>'
            "</body></html>"
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def front_end() -> Iterator[Callable[..., FrontEnd]]:
    made: list[FrontEnd] = []

    def make(host: str = "127.0.0.1") -> FrontEnd:
        front = FrontEnd(host)
        made.append(front)
        return front

    yield make
    for front in made:
        front.close()


def serve(server_factory: Any, *fronts: FrontEnd, allow: list[str], **alarms: Any) -> Any:
    """Start daphne allowing the origins ``allow``, and point the front ends at it."""
    server = server_factory(CORS_ALLOWED_ORIGINS=allow, **alarms)
    for front in fronts:
        front.alarms_url = server.url
    return server


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_alarm_reaches_a_page_on_an_allowed_origin_and_dismiss_posts_back(
    server_factory, front_end, contexts, session_cookie, make_user
):
    front = front_end()
    server = serve(server_factory, front, allow=[front.url])
    reader = make_user("ines")
    user = contexts(server, cookie=session_cookie(reader))
    page = user.context.new_page()
    page.goto(front.url)
    assert origin_of(page.url) != server.url
    wait_ready(page, leader=True)
    opened = user.streams.started[0]
    assert opened.url.startswith(server.url + "/alarms/stream/")
    assert opened.header_value("origin") == front.url

    alarm = api.send_alarm(TEXTS, level="warning", url="/alarms/")
    item = toast(page, alarm.pk)
    item.wait_for()
    assert item.locator(".alarms-title").text_content() == TEXTS["en"]["title"]
    assert item.locator(".alarms-message").text_content() == TEXTS["en"]["message"]
    # A path in an alarm is a page of the alarm server's site, not of this one.
    assert item.locator("a.alarms-link").get_attribute("href") == server.url + "/alarms/"
    # A members-only alarm: the stream knew who was signed in.
    assert alarm.audience != "everyone"
    wait_for(lambda: (r := receipt(reader, alarm)) and r.seen_at, page=page)

    item.locator(".alarms-close").click()
    item.wait_for(state="detached")
    wait_for(lambda: (r := receipt(reader, alarm)) and r.dismissed_at, page=page)
    (post,) = user.posts("/alarms/dismiss/")
    assert post.url == server.url + "/alarms/dismiss/"
    assert post.header_value("origin") == front.url
    assert post.header_value("x-csrftoken") is None
    assert post.response().status == 200
    # JSON across origins: the browser asked first.
    assert '"OPTIONS /alarms/dismiss/" 204' in server.output()


def test_a_stream_the_server_ends_resumes_across_origins(
    server_factory, front_end, contexts, session_cookie, make_user
):
    front = front_end()
    # Streams end after about a second: EventSource reconnects by itself and
    # sends Last-Event-ID (Chromium without a preflight; one would be answered).
    server = serve(server_factory, front, allow=[front.url], MAX_LIFETIME=1, RETRY_MS=100)
    user = contexts(server, cookie=session_cookie(make_user("rui")))
    page = user.context.new_page()
    page.goto(front.url)
    wait_ready(page, leader=True)
    first = api.send_alarm(TEXTS, level="warning")
    toast(page, first.pk).wait_for()
    last_id = page.evaluate("window.alarms.state().lastEventId")
    assert last_id

    resumed = wait_for(
        lambda: [r for r in user.streams.started if r.header_value("last-event-id")], page=page
    )
    assert resumed[0].header_value("last-event-id") == last_id
    assert resumed[0].header_value("origin") == front.url
    wait_for(lambda: resumed[0].response() and resumed[0].response().status == 200, page=page)

    second = api.send_alarm(TEXTS, level="error")
    toast(page, second.pk).wait_for()
    assert toast(page, first.pk).count() == 1


@pytest.mark.one_database  # refused by the CORS checks; nothing is written
def test_a_page_on_an_origin_not_listed_gets_no_stream_and_cannot_post(
    server_factory, front_end, contexts, session_cookie, make_user
):
    listed, stranger = front_end(), front_end()
    server = serve(
        server_factory, listed, stranger, allow=[listed.url], METRICS_TOKEN=METRICS_TOKEN
    )
    reader = make_user("noor")
    user = contexts(server, cookie=session_cookie(reader))
    good = user.context.new_page()
    good.goto(listed.url)
    wait_ready(good, leader=True)
    bad = user.context.new_page()
    bad.goto(stranger.url)
    wait_ready(bad)  # the script runs; its stream never opens

    # The server answers 403 each time the page tries; the browser reports an error.
    refused = re.compile(r'"GET /alarms/stream/\?[^"]*" 403')
    wait_for(lambda: len(refused.findall(server.output())) >= 2, page=bad)
    assert "refused a cross-origin GET to /alarms/stream/" in server.output()

    # The browser's request events reach this process after the server's log lines.
    def tries() -> list[Any]:
        return [r for r in user.streams.started if r.frame.page == bad]

    wait_for(lambda: len(tries()) >= 2, page=bad)
    assert all(r.failure for r in tries() if r in user.streams.ended)
    assert bad.evaluate("window.alarms.state().leader")
    assert not bad.evaluate("window.alarms.state().streaming")
    # Only the listed page's stream is open on the server.
    assert metric(server, "alarms_streams_open", METRICS_TOKEN) == 1

    alarm = api.send_alarm(TEXTS, level="warning")
    toast(good, alarm.pk).wait_for()
    assert toast(bad, alarm.pk).count() == 0
    assert bad.locator(".alarms-toast").count() == 0

    dismiss = server.url + "/alarms/dismiss/"
    # JSON with credentials needs a preflight, which is refused: fetch fails.
    outcome = bad.evaluate(
        """([url, id]) => fetch(url, {
            method: "POST", mode: "cors", credentials: "include",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({ids: [id]})
        }).then(r => "status " + r.status, e => e.name)""",
        [dismiss, alarm.pk],
    )
    assert outcome == "TypeError"
    # A form-like POST needs no preflight and reaches the server: refused there.
    bad.evaluate(
        """([url, id]) => fetch(url, {
            method: "POST", mode: "no-cors", credentials: "include",
            body: new URLSearchParams({ids: String(id)})
        })""",
        [dismiss, alarm.pk],
    )
    wait_for(lambda: '"POST /alarms/dismiss/" 403' in server.output(), page=bad)
    assert "refused a cross-origin POST to /alarms/dismiss/" in server.output()
    assert "refused a cross-origin OPTIONS to /alarms/dismiss/" in server.output()
    stored = receipt(reader, alarm)
    assert stored is None or stored.dismissed_at is None


@pytest.mark.one_database  # the browser's cookie rules; the seen POST is refused unwritten
def test_a_cross_site_page_streams_without_the_lax_session_cookie(
    server_factory, front_end, contexts, session_cookie, make_user
):
    # localhost and 127.0.0.1 are different sites: a SameSite=Lax cookie of
    # 127.0.0.1 is not sent from a localhost page, even with credentials.
    front = front_end("localhost")
    server = serve(server_factory, front, allow=[front.url])
    user = contexts(server, cookie=session_cookie(make_user("yara")))
    page = user.context.new_page()
    page.goto(front.url)
    wait_ready(page, leader=True)
    members = api.send_alarm(TEXTS, level="warning")
    public = api.send_alarm(TEXTS, level="warning", audience="everyone")
    # The stream delivers in order: once the later, public alarm is here, the
    # members-only one would have been too, had the session come along.
    toast(page, public.pk).wait_for()
    assert toast(page, members.pk).count() == 0
    # The page says it is signed in and reports "seen": the server, seeing no
    # session, answers 403 (with CORS headers, so the script can read it).
    seen = wait_for(lambda: user.posts("/alarms/seen/"), page=page)[0]
    wait_for(lambda: seen.response(), page=page)
    assert seen.response().status == 403
    assert seen.response().header_value("access-control-allow-origin") == front.url

"""The alarm centre over a real daphne process in a project without a base.html."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from alarms import api
from tests.e2e import browser as fixtures
from tests.e2e.browser import toast, wait_ready
from tests.e2e.conftest import ServerFactory

pytestmark = pytest.mark.e2e

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ar": {"title": "تدريب على الحريق", "message": "غادروا عبر الدرج الشرقي."},
}
# A project whose templates are the apps' only.
BARE = "tests.e2e.bare_settings"


def get(url: str, cookies: dict[str, str]) -> tuple[int, str]:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    request = urllib.request.Request(url, headers={"Cookie": header})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_the_centre_answers_without_a_base_html(
    server_factory: ServerFactory, session_cookie: Any, make_user: Any
) -> None:
    server = server_factory(settings=BARE)
    reader = make_user("bare")
    alarm = api.send_alarm(TEXTS, level="warning")
    name, value = session_cookie(reader)

    status, html = get(f"{server.url}/alarms/", {name: value, "django_language": "ar"})

    assert status == 200, html[-2000:]
    assert '<html lang="ar" dir="rtl">' in html
    assert f'data-alarms-item="{alarm.pk}"' in html
    assert TEXTS["ar"]["title"] in html
    assert 'data-stream-url="/alarms/stream/"' in html
    # This project really has no base.html: naming it fails (alarms.E007 says so at start-up).
    broken = server_factory(settings=BARE, BASE_TEMPLATE="base.html")
    status, _html = get(f"{broken.url}/alarms/", {name: value})
    assert status == 500


@pytest.mark.browser
def test_toasts_arrive_on_the_standalone_page(
    server_factory: ServerFactory, contexts: Any, session_cookie: Any, make_user: Any
) -> None:
    server = server_factory(settings=BARE)
    reader = make_user("bare-browser")
    page = contexts(server, cookie=session_cookie(reader)).page("/alarms/")
    wait_ready(page, leader=True)

    alarm = api.send_alarm(TEXTS, level="error")

    toast(page, alarm.pk).wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-alarms-badge]').dataset.count === '1'"
    )

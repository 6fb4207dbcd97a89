"""The client's languages in Chromium: a switch redraws every toast; plurals follow Django."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import translation
from django.utils.translation import ngettext

from alarms import api
from alarms.models import Alarm
from tests.e2e import browser as fixtures
from tests.e2e.browser import leader_of, signed_in, toast, wait_ready
from tests.helpers import receipt, wait_for

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

TEXTS = {
    "en": {"title": "Scheduled maintenance", "message": "The API is read-only at 22:00."},
    "ko": {"title": "정기 점검", "message": "22:00에 API는 읽기 전용입니다."},
    "ar": {"title": "صيانة مجدولة", "message": "الواجهة للقراءة فقط عند 22:00."},
}
CRITICAL = {
    "en": {"title": "Payments are failing", "message": "Card payments fail."},
    "ko": {"title": "결제 장애", "message": "카드 결제가 실패합니다."},
    "ar": {"title": "فشل في الدفع", "message": "تفشل مدفوعات البطاقات."},
}
# Loaded machines: generous waits, always for a condition.
WAIT = 15_000


def shows(page: Any, alarm: Alarm, texts: dict[str, dict[str, str]], language: str) -> None:
    """Wait until ``page`` shows ``alarm`` in ``language``."""
    item = toast(page, alarm.pk)
    item.wait_for(timeout=WAIT)
    title = texts[language]["title"]
    page.wait_for_function(
        """([id, title, lang]) => {
            const node = document.querySelector(`.alarms-toast[data-alarm-id="${id}"]`);
            return node && node.lang === lang
                && node.querySelector('.alarms-title').textContent === title;
        }""",
        arg=[alarm.pk, title, language],
        timeout=WAIT,
    )
    assert item.locator(".alarms-message").text_content() == texts[language]["message"]
    assert item.get_attribute("dir") == ("rtl" if language == "ar" else "ltr")


# -- a language switch -----------------------------------------------------------


@pytest.mark.client
@pytest.mark.e2e
@pytest.mark.browser
@pytest.mark.parametrize("switcher", ["leader", "follower"])
def test_language_switch_redraws_every_toast_in_every_tab(
    server, contexts, session_cookie, make_user, switcher
):
    reader = make_user(f"noor-{switcher}")
    user = signed_in(contexts, server, session_cookie, reader, language="ko")
    first, second = user.page("/"), user.page("/")
    for page in (first, second):
        wait_ready(page, timeout=WAIT)
    leader = leader_of([first, second], timeout=WAIT / 1000)
    follower = second if leader is first else first

    warning = api.send_alarm(TEXTS, level="warning")
    for page in (first, second):
        shows(page, warning, TEXTS, "ko")
    # Seen: the server's snapshot of a fresh stream leaves it out from now on.
    wait_for(
        lambda: (r := receipt(reader, warning)) and r.seen_at, what="the receipt seen", page=first
    )
    critical = api.send_alarm(CRITICAL, level="critical")
    for page in (first, second):
        shows(page, critical, CRITICAL, "ko")

    switching = leader if switcher == "leader" else follower
    other = follower if switcher == "leader" else leader
    switching.select_option("#language-select", "ar")
    switching.wait_for_function("() => document.documentElement.lang === 'ar'", timeout=WAIT)
    wait_ready(switching, timeout=WAIT)

    # Both tabs show both alarms, in Arabic: the tab that switched (a new page)
    # and the one that did not. A signed-in user's choice is stored and follows
    # them (docs/preferences.md): that tab loads again in Arabic too.
    other.wait_for_function("() => document.documentElement.lang === 'ar'", timeout=WAIT)
    for page in (switching, other):
        shows(page, warning, TEXTS, "ar")
        shows(page, critical, CRITICAL, "ar")
    for page in (switching, other):
        assert page.locator(".alarms-toast").count() == 2
    # Still one stream, now in Arabic.
    current = leader_of([switching, other], timeout=WAIT / 1000)
    assert current.evaluate("window.alarms.state().language") == "ar"


@pytest.mark.client
@pytest.mark.e2e
@pytest.mark.browser
def test_a_reload_in_the_same_language_does_not_bring_seen_toasts_back(
    server, contexts, session_cookie, make_user
):
    # The restore is for a language switch only: seen toasts still do not return.
    reader = make_user("idris")
    page = signed_in(contexts, server, session_cookie, reader, language="ko").page("/")
    wait_ready(page, leader=True, timeout=WAIT)
    warning = api.send_alarm(TEXTS, level="warning")
    shows(page, warning, TEXTS, "ko")
    wait_for(
        lambda: (r := receipt(reader, warning)) and r.seen_at, what="the receipt seen", page=page
    )
    page.reload()
    wait_ready(page, leader=True, timeout=WAIT)
    page.wait_for_timeout(800)
    assert toast(page, warning.pk).count() == 0


# -- plural forms ------------------------------------------------------------------


@pytest.mark.client
@pytest.mark.e2e
@pytest.mark.browser
def test_more_button_follows_arabic_plural_rules(
    server, contexts, session_cookie, make_user, settings
):
    # Django's rule and catalogue pick the form for any count: Arabic has six.
    settings.ALARMS = {**settings.ALARMS, "STORM_LIMIT": None}
    reader = make_user("layla")
    user = signed_in(
        contexts, server, session_cookie, reader, language="ar", reduced_motion="reduce"
    )
    page = user.page("/")
    wait_ready(page, leader=True, timeout=WAIT)
    assert page.locator("html").get_attribute("lang") == "ar"
    more = page.locator(".alarms-more")
    sent = 0
    # Three toasts are visible; these many more are hidden behind the button.
    for hidden, literal in [
        (1, "+تنبيه واحد آخر"),
        (2, "+تنبيهان آخران"),
        (3, "+3 تنبيهات أخرى"),
        (11, "+11 تنبيهًا آخر"),
        (100, "+100 تنبيه آخر"),
    ]:
        while sent < hidden + 3:
            sent += 1
            api.send_alarm({"en": {"title": f"Alarm {sent}", "message": "m"}}, level="warning")
        page.wait_for_function(
            "n => document.querySelectorAll('.alarms-toast').length === n",
            arg=sent,
            timeout=WAIT * 3,
        )
        with translation.override("ar"):
            expected = ngettext("+%(count)s more", "+%(count)s more", hidden) % {"count": hidden}
        assert expected == literal
        page.wait_for_function(
            "text => document.querySelector('.alarms-more').textContent === text",
            arg=expected,
            timeout=WAIT,
        )
        assert more.is_visible()


# -- GET /alarms/payloads/ ---------------------------------------------------------


def payloads(client: Client, query: str) -> Any:
    response = client.get(f"/alarms/payloads/?{query}")
    return response.status_code, json.loads(response.content)


@pytest.mark.django_db
def test_payloads_are_the_streams_for_the_readers_language(django_user_model):
    reader = django_user_model.objects.create_user("payload-reader")
    client = Client()
    client.force_login(reader)
    warning = api.send_alarm(TEXTS, level="warning", url="https://example.com/status")
    staff_only = api.send_alarm(TEXTS, level="warning", audience="staff")
    dismissed = api.send_alarm(TEXTS, level="info")
    withdrawn = api.send_alarm(TEXTS, level="info")
    api.dismiss(reader, [dismissed.pk])
    api.withdraw([withdrawn])
    ids = ",".join(str(a.pk) for a in (warning, staff_only, dismissed, withdrawn))

    status, body = payloads(client, f"ids={ids}&lang=ar")
    assert status == 200
    assert body["language"] == "ar"
    # Only what the stream would send this reader: live, visible, not dismissed.
    assert [p["id"] for p in body["alarms"]] == [warning.pk]
    payload = body["alarms"][0]
    assert payload["title"] == TEXTS["ar"]["title"]
    assert payload["message"] == TEXTS["ar"]["message"]
    assert payload["language"] == "ar"
    assert payload["dir"] == "rtl"
    assert payload["level"] == "warning"
    assert payload["url"] == "https://example.com/status"
    assert set(payload) == {
        "id",
        "level",
        "title",
        "message",
        "language",
        "dir",
        "url",
        "published_at",
        "expires_at",
    }

    # No Japanese text: the fallback rule (LANGUAGE_CODE, English) applies.
    status, body = payloads(client, f"ids={warning.pk}&lang=ja")
    assert body["alarms"][0]["language"] == "en"
    assert body["alarms"][0]["dir"] == "ltr"

    # A visitor sees only what is meant for everyone.
    public = api.send_alarm(TEXTS, level="critical", audience="everyone")
    status, body = payloads(Client(), f"ids={warning.pk},{public.pk}&lang=ko")
    assert [p["id"] for p in body["alarms"]] == [public.pk]
    assert body["alarms"][0]["title"] == TEXTS["ko"]["title"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["", "ids=", "ids=1,x", "ids=-1", "ids=\u0661", "ids=1,,2"])
def test_payloads_refuse_what_is_not_a_list_of_ids(query):
    status, body = payloads(Client(), query)
    assert status == 400
    assert "error" in body
    assert "\u0661" not in body["error"]


@pytest.mark.django_db
def test_payloads_take_at_most_a_batch():
    status, _ = payloads(Client(), "ids=" + ",".join(str(n) for n in range(1, 202)))
    assert status == 400
    status, body = payloads(Client(), "ids=" + ",".join(str(n) for n in range(1, 201)))
    assert (status, body["alarms"]) == (200, [])

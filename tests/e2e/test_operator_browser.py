"""The operator's tools in a real browser: live preview, live reach, "Send a test to me"."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.test import override_settings

from alarms.models import Alarm, AlarmChange
from alarms.translation import choose_language, default_language
from tests.e2e import browser as fixtures
from tests.e2e.browser import signed_in, wait_ready
from tests.e2e.conftest import send_marker
from tests.helpers import ADD_URL

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

WAIT = 20_000
TEST_TOAST = '.alarms-toast[data-alarm-id^="test-"]'


@pytest.fixture
def server(server_factory: Any) -> Any:
    # Presence is written within a tenth of a second of a stream's connect.
    return server_factory(PRESENCE_INTERVAL=0.1)


def test_the_operator_previews_counts_and_tests_an_unsaved_alarm(
    server, contexts, session_cookie, make_user
):
    operator = make_user("op", is_staff=True, is_superuser=True)
    other = make_user("bystander")
    kim = make_user("kim")

    # A Korean reader, and another user, each with a page open.
    korean = signed_in(contexts, server, session_cookie, kim, language="ko").page("/")
    bystander = signed_in(contexts, server, session_cookie, other).page("/")
    for page in (korean, bystander):
        wait_ready(page, leader=True)

    me = signed_in(contexts, server, session_cookie, operator)
    site = me.page("/")  # the operator's other open page
    wait_ready(site, leader=True)
    form = me.page(ADD_URL)
    form.locator("#alarms-operator").wait_for(timeout=WAIT)

    # The preview follows the typing, and says who gets a fallback.
    form.select_option("#id_level", "warning")
    form.fill("input[name='translations-0-title']", "Fire drill at noon")
    preview = form.locator('[data-preview-language="en"] .alarms-title')
    preview.wait_for(timeout=WAIT)
    assert preview.text_content() == "Fire drill at noon"
    korean_preview = form.locator('[data-preview-language="ko"]')
    assert korean_preview.get_attribute("data-preview-chosen") == "en"
    assert "Korean" in korean_preview.locator(".alarms-preview__fallback").text_content()
    form.fill("input[name='translations-0-title']", "Fire drill at one")
    assert preview.text_content() == "Fire drill at one"

    # The reach: the Korean reader is online and would get English.
    ko_row = form.locator('[data-reach-table] tr[data-language="ko"]')
    form.wait_for_function(
        """() => {
            const row = document.querySelector('[data-reach-table] tr[data-language="ko"]');
            return row && Number(row.dataset.readers) >= 1 && row.dataset.fallback === "true"
                && row.dataset.translation === "en";
        }""",
        timeout=WAIT,
    )
    assert "English" in ko_row.text_content()
    # Given a Korean translation, nobody falls back any more.
    form.fill("input[name='translations-1-title']", "화재 훈련")
    form.fill("textarea[name='translations-1-message']", "정오에")
    form.fill("textarea[name='translations-0-message']", "Leave by the east stairs.")
    form.wait_for_function(
        """() => {
            const row = document.querySelector('[data-reach-table] tr[data-language="ko"]');
            return row && Number(row.dataset.readers) >= 1 && row.dataset.fallback === "false"
                && row.dataset.translation === "ko";
        }""",
        timeout=WAIT,
    )

    # "Send a test to me", every language: one toast per translation on my other page.
    form.click("[data-test-send]")
    form.locator('[data-test-result][data-outcome="sent"]').wait_for(timeout=WAIT)
    site.locator(TEST_TOAST).nth(1).wait_for(timeout=WAIT)
    toasts = site.locator(TEST_TOAST)
    assert toasts.count() == 2
    by_language = {toasts.nth(i).get_attribute("lang"): toasts.nth(i) for i in range(2)}
    assert set(by_language) == {"en", "ko"}
    korean_toast = by_language["ko"]
    assert korean_toast.locator(".alarms-test-mark").text_content() == "Test"
    assert "화재 훈련" in korean_toast.locator(".alarms-title").text_content()
    assert "alarms-toast--test" in (korean_toast.get_attribute("class") or "")
    # Nothing was published.
    assert not Alarm.objects.exists()
    assert AlarmChange.objects.filter(kind="test").count() == 1

    # Nobody else got it: the marker was written after it, so it would be there first.
    marker = send_marker()
    for page in (bystander, korean):
        page.locator(f'.alarms-toast[data-alarm-id="{marker.pk}"]').wait_for(timeout=WAIT)
        assert page.locator(TEST_TOAST).count() == 0
    # And no receipt is posted for a test.
    site.locator(f'.alarms-toast[data-alarm-id="{marker.pk}"]').wait_for(timeout=WAIT)
    korean_toast.locator(".alarms-close").click()
    assert all("test-" not in (r.post_data or "") for r in me.streams.posts)

    # A form that would not save sends nothing, and says why.
    form.fill("input[name='translations-0-title']", "")
    form.fill("textarea[name='translations-0-message']", "")
    form.click("[data-test-send]")
    form.locator('[data-test-result][data-outcome="refused"]').wait_for(timeout=WAIT)
    assert "English" in form.locator("[data-test-result]").text_content()
    assert AlarmChange.objects.filter(kind="test").count() == 1


# -- the preview's fallback rule is alarms.translation's -----------------------------------

WANTED = ["en", "ko", "ar", "pt-br", "pt_BR", "PT", "zh-hant", "zh", "iw", "he", "nb", "no"]
WANTED += ["", "../x", "x" * 16, "é", "en-"]
POOL = ["en", "ko", "pt", "pt-br", "he", "nb", "zh-hans", "ar"]


def cases() -> list[dict[str, Any]]:
    found = []
    for size in (0, 1, 2, 3):
        for available in itertools.combinations(POOL, size):
            for wanted in WANTED:
                found.append({"wanted": wanted, "available": list(available)})
    return found


def test_the_preview_and_the_stream_choose_the_same_translation(
    server, contexts, session_cookie, make_user
):
    operator = make_user("rule-op", is_staff=True, is_superuser=True)
    page = signed_in(contexts, server, session_cookie, operator).page(ADD_URL)
    page.locator("#alarms-operator").wait_for(timeout=WAIT)
    table = cases()
    # A default with a region, whose generic language is the step before "any".
    site = [("en", "English"), ("ko", "Korean"), ("pt-br", "Brazilian Portuguese")]
    for site_default in ("en", "ko", "pt-br"):
        with override_settings(LANGUAGE_CODE=site_default, LANGUAGES=site):
            default = default_language()
            expected = [choose_language(c["wanted"], c["available"]) for c in table]
        got = page.evaluate(
            """async ([cases, fallback]) => {
                const rule = await import("/static/alarms/client/language.js");
                return cases.map((c) => rule.chooseLanguage(c.wanted, c.available, fallback));
            }""",
            [table, default],
        )
        mismatches = [(c, e, g) for c, e, g in zip(table, expected, got, strict=True) if e != g]
        assert not mismatches, mismatches[:5]
    assert len(table) > 1000

"""The alarm admin in a real browser: what an operator sees while typing."""

from __future__ import annotations

import pytest

from tests.e2e import browser as fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

WAIT = 15_000


def test_arabic_typed_into_a_translation_reads_right_to_left(
    server, contexts, session_cookie, make_user
):
    operator = make_user("dir-admin", is_staff=True, is_superuser=True)
    page = contexts(server, cookie=session_cookie(operator)).page("/admin/alarms/alarm/add/")
    title = page.locator("input[name='translations-0-title']")
    message = page.locator("textarea[name='translations-0-message']")
    title.wait_for(timeout=WAIT)
    title.fill("إنذار حريق")
    message.fill("غادروا من الدرج الشرقي")
    direction = "e => getComputedStyle(e).direction"
    assert title.evaluate(direction) == "rtl"
    assert message.evaluate(direction) == "rtl"
    # The same fields with Latin text stay left to right: the text decides.
    title.fill("Fire alarm")
    assert title.evaluate(direction) == "ltr"

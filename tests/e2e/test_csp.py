"""The demo under a strict Content-Security-Policy, in a real Chromium: nothing is blocked."""

from __future__ import annotations

import re
from typing import Any

import pytest

from alarms import api
from tests.e2e import browser as fixtures
from tests.e2e.browser import CSPWatch, toast, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

TEXTS = {"en": {"title": "Fire drill at 3 pm", "message": "Leave by the east stairs."}}
WAIT = 15_000


def wait_for(page: Any, predicate: str, arg: Any = None) -> None:
    page.wait_for_function(predicate, arg=arg, timeout=WAIT)


def directives(header: str) -> dict[str, list[str]]:
    found = {}
    for part in header.split(";"):
        name, *values = part.split()
        found[name.lower()] = values
    return found


def assert_strict(header: str | None) -> str | None:
    """The policy is there and strict; returns its nonce (only a page that used one has it)."""
    assert header, "no Content-Security-Policy header"
    policy = directives(header)
    for name in ("script-src", "style-src"):
        values = policy.get(name) or policy["default-src"]
        assert "'unsafe-inline'" not in values, name
        assert "'unsafe-eval'" not in values, name
        assert "'unsafe-hashes'" not in values, name
        assert "*" not in values and "data:" not in values, name
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    nonces = {v for v in policy["script-src"] + policy["style-src"] if v.startswith("'nonce-")}
    assert len(nonces) <= 1, nonces
    return nonces.pop()[len("'nonce-") : -1] if nonces else None


def policy_of(responses: list[Any], path: str) -> str | None:
    response = next(r for r in reversed(responses) if r.url.split("?")[0].endswith(path))
    return assert_strict(response.headers.get("content-security-policy"))


def test_toasts_badge_and_centre_work_under_a_strict_policy(
    server, contexts, session_cookie, make_user
):
    operator = make_user("csp-operator", is_staff=True, is_superuser=True)
    warning = api.send_alarm(TEXTS, level="warning")
    user = contexts(server, cookie=session_cookie(operator), reduced_motion="no-preference")
    watch = CSPWatch()
    watch.attach(user.context)
    documents: list[Any] = []
    user.context.on(
        "response", lambda r: r.request.resource_type == "document" and documents.append(r)
    )

    # -- a demo page with the toasts and the badge -----------------------------------
    page = user.page("/")
    wait_ready(page, leader=True)
    nonce = policy_of(documents, "/")
    assert nonce
    # The tags carry the host's nonce (Chromium hides it from getAttribute).
    tags = page.evaluate(
        """() => [...document.querySelectorAll(
            'script[src*="alarms/alarms.js"], link[href*="alarms/alarms.css"]'
        )].map(node => node.nonce)"""
    )
    assert tags == [nonce, nonce]

    # The policy is enforced and its violations are seen: inline script and style are blocked.
    page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.inlineRan = true';
            document.body.appendChild(script);
            document.body.setAttribute('style', 'outline: 1px solid red');
        }"""
    )
    wait_for(page, "() => window.__cspViolations.length >= 2")
    assert page.evaluate("window.inlineRan") is None
    watch.clear(page)

    item = toast(page, warning.pk)
    item.wait_for(timeout=WAIT)
    region = page.locator("#alarms-region")
    assert region.evaluate("node => getComputedStyle(node).position") == "fixed"
    badge = page.locator("[data-alarms-badge]")
    assert badge.get_attribute("data-count") == "1"
    # An info toast hides itself: its progress bar is animated through the CSSOM.
    info = api.send_alarm(TEXTS, level="info")
    toast(page, info.pk).wait_for(timeout=WAIT)
    page.wait_for_function(
        """id => {
            const bar = document.querySelector(
                `.alarms-toast[data-alarm-id="${id}"] .alarms-progress`);
            return bar && bar.style.transform === 'scaleX(0)';
        }""",
        arg=info.pk,
        timeout=WAIT,
    )
    wait_for(page, "n => document.querySelector('[data-alarms-badge]').dataset.count === n", "2")
    item.locator(".alarms-close").click()
    item.wait_for(state="detached", timeout=WAIT)
    wait_for(page, "n => document.querySelector('[data-alarms-badge]').dataset.count === n", "1")
    assert watch.violations(page) == []

    # -- the alarm centre ---------------------------------------------------------------
    page.goto("/alarms/")
    wait_ready(page)
    policy_of(documents, "/alarms/")
    entry = page.locator(f'[data-alarms-item="{info.pk}"]')
    entry.locator("button[name=dismiss]").click()
    # The message after the redirect (the centre's page: the site's or the app's own).
    page.locator("main [role=status] li").wait_for(timeout=WAIT)
    assert "alarms-entry--dismissed" in (
        page.locator(f'[data-alarms-item="{info.pk}"]').get_attribute("class") or ""
    )
    assert watch.violations(page) == []

    # -- the language form (the demo's own script), then the page in Arabic ------------
    page.goto("/")
    wait_ready(page)
    page.select_option("#language-select", "ar")
    wait_for(page, "() => document.documentElement.lang === 'ar'")
    wait_ready(page)
    assert re.fullmatch(r"[A-Za-z0-9+/=_-]{16,}", policy_of(documents, "/") or "")
    assert watch.violations(page) == []


def test_admin_change_page_works_under_a_strict_policy(server, contexts, session_cookie, make_user):
    operator = make_user("csp-admin", is_staff=True, is_superuser=True)
    alarm = api.send_alarm(TEXTS, level="warning")
    user = contexts(server, cookie=session_cookie(operator))
    watch = CSPWatch()
    watch.attach(user.context)
    documents: list[Any] = []
    user.context.on(
        "response", lambda r: r.request.resource_type == "document" and documents.append(r)
    )
    page = user.page(f"/admin/alarms/alarm/{alarm.pk}/change/")
    page.locator("#alarm_form").wait_for(timeout=WAIT)
    policy_of(documents, f"/admin/alarms/alarm/{alarm.pk}/change/")
    # Its scripts ran: the catalogue (jsi18n), jQuery, and the inline formsets' "add" link.
    wait_for(
        page,
        "() => typeof window.gettext === 'function' && typeof django.jQuery === 'function'",
    )
    page.locator(".inline-group .add-row a").wait_for(state="attached", timeout=WAIT)
    assert watch.violations(page) == []

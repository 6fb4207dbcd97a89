"""Desktop notifications in a real Chromium against a real daphne server.

Hidden tabs. Playwright keeps every page it drives "visible": it turns on the
DevTools focus emulation for each page it attaches to, and with it on a
background tab stays "visible" (over raw DevTools, the same tab turns hidden
once another is in front, and visible again with the emulation). So these tests
start Chromium themselves and attach with ``connect_over_cdp(no_defaults=True)``,
which leaves the pages of the browser's default context alone. There, pages
are ordinary tabs of one window: opening a tab, or bringing one to the front,
hides the others, and ``document.visibilityState`` and the ``visibilitychange``
events are the browser's own. The tests check the real property each time.

Notifications. Headless Chromium shows them in no screen a test can read or
click. What a page asks the browser to show is what it passes to
``new Notification(...)``: an init script wraps ``window.Notification``,
records each construction (its options, whether the browser fired "show")
and each ``close()``, and still calls the real constructor, so the browser's
permission applies for real. A click is the click event dispatched on that
real Notification object. ``Notification.requestPermission`` is wrapped the
same way, to count prompts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from alarms import api, preferences
from alarms.models import Preferences
from tests.e2e.browser import CHROMIUM, LEADING, require_chromium
from tests.e2e.conftest import ROOT, free_port, wait_listening
from tests.helpers import receipt, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.client]

SCREENSHOTS = ROOT / "docs" / "screenshots"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"

# A bound against a hang (s), not a speed claim.
LIVE = 20.0

TEXTS = {
    "en": {"title": "Payments are failing", "message": "Card payments fail for some customers."},
    "ar": {"title": "فشل في عمليات الدفع", "message": "تفشل مدفوعات البطاقات لبعض العملاء."},
}

OBSERVE = """
(() => {
  window.__notifications = [];
  window.__notificationObjects = [];
  window.__permissionRequests = 0;
  window.__focusCalls = 0;
  window.__received = [];
  window.__clicked = [];
  document.addEventListener("alarms:received", (e) => window.__received.push(e.detail.alarm.id));
  document.addEventListener("alarms:notification-clicked", (e) => window.__clicked.push(e.detail));
  // window.focus() is what raises a tab; Chromium honours it from a background
  // tab only inside a click the browser itself delivered, which a test cannot
  // make: the call is recorded, and still made.
  const focus = window.focus;
  window.focus = function () {
    window.__focusCalls += 1;
    return focus.call(window);
  };
  const Real = window.Notification;
  if (typeof Real !== "function") {
    return;
  }
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      const o = options || {};
      const entry = {
        title: title, body: o.body, tag: o.tag, lang: o.lang, dir: o.dir,
        requireInteraction: !!o.requireInteraction, shown: false, closed: false,
        visibility: document.visibilityState
      };
      this.__entry = entry;
      this.addEventListener("show", () => { entry.shown = true; });
      window.__notifications.push(entry);
      window.__notificationObjects.push(this);
    }
    close() {
      this.__entry.closed = true;
      super.close();
    }
  }
  Recorded.requestPermission = function () {
    window.__permissionRequests += 1;
    return Real.requestPermission.apply(Real, arguments);
  };
  Object.defineProperty(window, "Notification", {
    value: Recorded, writable: true, configurable: true
  });
})();
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Chromium started here and attached to without Playwright's page defaults.

    One process for the module; each test gets its default context cleared.
    """
    require_chromium()
    from playwright.sync_api import sync_playwright

    port = free_port()
    profile = tempfile.mkdtemp(prefix="alarms-notify-")
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # as in tests/e2e/browser.py
    try:
        wait_listening(process, port, 20, "chromium", lambda: "")
        with sync_playwright() as playwright:
            browser = playwright.chromium.connect_over_cdp(
                f"http://127.0.0.1:{port}", no_defaults=True
            )
            context = browser.contexts[0]
            context.add_init_script(OBSERVE)
            context.set_default_timeout(LIVE * 1000)
            yield browser
            browser.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class Desktop:
    """One person's browser: tabs of one window, signed in to ``server``."""

    browser: Any
    context: Any
    server: Any

    @property
    def origin(self) -> str:
        return self.server.url

    def tab(self, path: str = "/") -> Any:
        """A new tab of the site, in front (the others are hidden by it)."""
        page = self.context.new_page()
        page.goto(self.server.url + path)
        wait_for(
            lambda: page.evaluate("window.alarms !== undefined"), LIVE, "the client", page=page
        )
        return page

    def away(self) -> Any:
        """A tab of another site in front: every tab of this one is hidden."""
        page = self.context.new_page()
        page.goto("about:blank")
        self.check_hidden()
        return page

    def front(self, page: Any) -> None:
        page.bring_to_front()
        assert visibility(page) == "visible"

    def site_tabs(self) -> list[Any]:
        return [p for p in self.context.pages if p.url.startswith(self.server.url)]

    def check_hidden(self) -> None:
        for page in self.site_tabs():
            assert visibility(page) == "hidden", page.url

    def grant(self) -> None:
        self.context.grant_permissions(["notifications"], origin=self.origin)

    def notifications(self, alarm_id: int | None = None) -> list[dict[str, Any]]:
        """What every tab of the site asked the browser to show (of one alarm)."""
        found = [n for page in self.site_tabs() for n in page.evaluate("window.__notifications")]
        return [n for n in found if alarm_id is None or n["tag"] == str(alarm_id)]

    def leader(self) -> Any:
        def find() -> Any:
            return next((p for p in self.site_tabs() if p.evaluate(f"!!({LEADING})")), None)

        return wait_for(find, LIVE, "a tab holding the stream", page=self.context.pages[0])

    def received(self, page: Any, alarm_id: int) -> None:
        """Wait until ``page`` has handled the alarm (and so decided on its notification)."""
        wait_for(
            lambda: alarm_id in page.evaluate("window.__received"),
            LIVE,
            f"alarm {alarm_id} in {page.url}",
            page=page,
        )

    def notified(self, alarm_id: int) -> dict[str, Any]:
        [note] = wait_for(
            lambda: self.notifications(alarm_id),
            LIVE,
            f"a notification of alarm {alarm_id}",
            page=self.context.pages[0],
        )
        return note


def visibility(page: Any) -> str:
    return str(page.evaluate("document.visibilityState"))


@pytest.fixture
def desktop(chromium: Any, server: Any, session_cookie: Any, make_user: Any) -> Iterator[Any]:
    """``desktop(user)``: the module's browser, emptied, signed in as ``user``."""
    context = chromium.contexts[0]

    def make(user: Any, language: str | None = None) -> Desktop:
        context.clear_cookies()
        context.clear_permissions()
        # What a test before left in this origin's storage (a port may come again).
        page = context.new_page()
        page.goto(server.url + "/static/alarms/alarms.css")
        page.evaluate("localStorage.clear()")
        page.close()
        host = urlsplit(server.url).hostname
        name, value = session_cookie(user)
        cookies = [{"name": name, "value": value, "domain": host, "path": "/"}]
        if language:
            cookies.append(
                {"name": "django_language", "value": language, "domain": host, "path": "/"}
            )
        context.add_cookies(cookies)
        return Desktop(browser=chromium, context=context, server=server)

    yield make
    for page in list(context.pages):
        page.close()


def critical(title: str = "Payments are failing", **options: Any) -> Any:
    texts = {"en": {"title": title, "message": TEXTS["en"]["message"]}}
    return api.send_alarm(texts, level=options.pop("level", "critical"), **options)


# -- one notification, only when no tab is visible ------------------------------------


def test_one_notification_per_alarm_with_two_hidden_tabs(desktop, make_user):
    me = desktop(make_user("hana"))
    me.grant()
    tabs = [me.tab(), me.tab()]
    leader = me.leader()
    me.away()
    first = critical()
    second = critical("Second")
    for tab in tabs:
        me.received(tab, second.pk)  # the stream is in order: the first came before
    note = me.notified(first.pk)
    assert note == {
        "title": "Payments are failing",
        "body": TEXTS["en"]["message"],
        "tag": str(first.pk),
        "lang": "en",
        "dir": "ltr",
        "requireInteraction": True,
        "shown": note["shown"],
        "closed": False,
        "visibility": "hidden",
    }
    # The browser showed it: the permission was real.
    wait_for(lambda: me.notifications(first.pk)[0]["shown"], LIVE, "shown", page=tabs[0])
    assert len(me.notifications(second.pk)) == 1
    assert leader.evaluate("window.__notifications.length") == 2

    # The leader goes: the other tab leads, its stream sends the critical
    # alarms again, and it raises none of them a second time.
    leader.close()
    [other] = me.site_tabs()
    me.leader()
    me.check_hidden()
    third = critical("Third")
    me.received(other, third.pk)
    me.notified(third.pk)
    assert [n["tag"] for n in other.evaluate("window.__notifications")] == [str(third.pk)]

    # Reloaded, the only tab opens a fresh stream, whose snapshot has the
    # three critical alarms again: they are known, none is raised again.
    other.reload()
    me.leader()
    me.check_hidden()
    for alarm in (first, second, third):
        me.received(other, alarm.pk)
    fourth = critical("Fourth")
    me.notified(fourth.pk)
    assert [n["tag"] for n in other.evaluate("window.__notifications")] == [str(fourth.pk)]


def test_none_while_a_tab_is_visible(desktop, make_user):
    me = desktop(make_user("ivan"))
    me.grant()
    tabs = [me.tab(), me.tab()]
    leader = me.leader()
    [seen] = [t for t in tabs if t is not leader]
    away = me.away()
    me.front(seen)  # the tab that does not lead is the one in view
    assert visibility(leader) == "hidden"
    shown = critical("On screen")
    me.received(leader, shown.pk)
    me.received(seen, shown.pk)
    assert me.notifications() == []

    # That tab goes away while visible (pagehide): the leader is alone, hidden.
    seen.close()
    away.bring_to_front()
    me.check_hidden()
    alone = critical("Alone")
    me.notified(alone.pk)
    assert me.notifications(shown.pk) == []


def test_a_visible_tab_that_vanished_stops_counting(desktop, make_user):
    """A tab that died visible, with no pagehide, counts until its report is stale."""
    me = desktop(make_user("jun"))
    me.grant()
    tab = me.tab()
    me.leader()
    scope = tab.get_attribute("script[data-stream-url]", "data-scope")
    me.away()

    def tab_visible() -> bool:
        return bool(tab.evaluate("window.alarms.state().notify.tabVisible"))

    assert not tab_visible()
    # What a visible tab says, from a tab that then disappears without a word.
    helper = me.context.new_page()
    helper.goto(me.server.url + "/accounts/login/")
    helper.evaluate(
        "name => new BroadcastChannel(name).postMessage("
        "{type: 'visibility', tab: 'ghost', visible: true})",
        f"alarms:{scope}:channel",
    )
    helper.close()
    me.check_hidden()
    wait_for(tab_visible, LIVE, "the ghost tab counted as visible", page=tab)
    wait_for(lambda: not tab_visible(), LIVE, "the ghost's report gone stale", page=tab)
    alarm = critical()
    me.notified(alarm.pk)


# -- the level floor ---------------------------------------------------------------------


def test_level_floor_critical_by_default_then_lowered(desktop, make_user):
    reader = make_user("kim")
    me = desktop(reader)
    me.grant()
    tab = me.tab()
    me.leader()
    me.away()
    warning = critical("Disk nearly full", level="warning")
    error = critical("Backups failed", level="error")
    top = critical("Site down")
    me.received(tab, top.pk)
    me.notified(top.pk)
    assert me.notifications(warning.pk) == [] and me.notifications(error.pk) == []

    # The page stored the browser's time zone already: the row exists.
    Preferences.objects.update_or_create(user=reader, defaults={"desktop_from": "warning"})
    tab.reload()
    wait_for(lambda: tab.evaluate("window.alarms !== undefined"), LIVE, "client", page=tab)
    me.leader()
    assert tab.get_attribute("script[data-stream-url]", "data-desktop-from") == "warning"
    me.check_hidden()
    info = critical("Report ready", level="info")
    lowered = critical("Certificate expires soon", level="warning")
    me.received(tab, lowered.pk)
    note = me.notified(lowered.pk)
    assert note["title"] == "Certificate expires soon"
    assert note["requireInteraction"] is False
    assert me.notifications(info.pk) == []

    # Raised on another device: the open page takes the new floor from the
    # "prefs" event, with no reload (its language and zone are unchanged).
    preferences.update(reader, desktop_from="error")
    quiet = critical("Queue growing", level="warning")
    loud = critical("Queue stalled", level="error")
    me.received(tab, loud.pk)
    me.notified(loud.pk)
    assert me.notifications(quiet.pk) == []
    assert tab.get_attribute("script[data-stream-url]", "data-desktop-from") == "warning"


# -- the reader's language ---------------------------------------------------------------


def test_arabic_notification_reads_right_to_left(desktop, make_user):
    me = desktop(make_user("layla"), language="ar")
    me.grant()
    tab = me.tab()
    assert tab.get_attribute("html", "dir") == "rtl"
    me.leader()
    me.away()
    alarm = api.send_alarm(TEXTS, level="critical")
    note = me.notified(alarm.pk)
    assert note["title"] == TEXTS["ar"]["title"]
    assert note["body"] == TEXTS["ar"]["message"]
    assert note["lang"] == "ar"
    assert note["dir"] == "rtl"


# -- clicks and dismissals -----------------------------------------------------------------


def click(page: Any, alarm_id: int) -> None:
    """The click event on the page's real Notification object of that alarm."""
    page.evaluate(
        "id => window.__notificationObjects.find(n => n.tag === String(id))"
        ".dispatchEvent(new Event('click', {cancelable: true}))",
        alarm_id,
    )


def test_a_click_focuses_a_tab_or_opens_the_link(desktop, make_user):
    me = desktop(make_user("mina"))
    me.grant()
    me.tab()
    leader = me.leader()
    me.away()
    plain = critical("No link")
    linked = critical("Status page", url="/alarms/")
    me.notified(plain.pk)
    me.notified(linked.pk)

    click(leader, plain.pk)
    assert leader.evaluate("window.__focusCalls") == 1
    assert me.notifications(plain.pk)[0]["closed"] is True
    assert leader.evaluate("window.__clicked") == [{"id": plain.pk, "url": ""}]

    with me.context.expect_page() as opened:
        click(leader, linked.pk)
    page = opened.value
    page.wait_for_url(f"{me.server.url}/alarms/")
    assert visibility(page) == "visible"
    assert page.evaluate("window.opener") is None
    assert leader.evaluate("window.__focusCalls") == 1  # the new tab is in front instead
    assert me.notifications(linked.pk)[0]["closed"] is True


def test_dismissing_anywhere_closes_the_notification(desktop, make_user):
    reader = make_user("nils")
    me = desktop(reader)
    me.grant()
    tabs = [me.tab(), me.tab()]
    leader = me.leader()
    [other] = [t for t in tabs if t is not leader]
    me.away()
    here, there, gone = critical("In a tab"), critical("On a phone"), critical("Withdrawn")
    for alarm in (here, there, gone):
        me.notified(alarm.pk)

    def closed(alarm: Any) -> bool:
        return bool(me.notifications(alarm.pk)[0]["closed"])

    # The tabs' "seen" receipts written first: SQLite lets one writer at a time.
    wait_for(
        lambda: all((r := receipt(reader, a)) and r.seen_at for a in (here, there, gone)),
        LIVE,
        "the seen receipts",
        page=leader,
    )
    # Withdrawn by the operators.
    api.withdraw([gone])
    wait_for(lambda: closed(gone), LIVE, "closed after a withdrawal", page=leader)
    # In the other tab, brought to the front, with the toast's close button.
    me.front(other)
    other.locator(f'.alarms-toast[data-alarm-id="{here.pk}"] .alarms-close').click()
    wait_for(lambda: closed(here), LIVE, "closed after a dismissal in a tab", page=leader)
    assert not closed(there)
    wait_for(
        lambda: (r := receipt(reader, here)) and r.dismissed_at,
        LIVE,
        "the tab's dismissal stored",
        page=leader,
    )
    # On another device: the dismissal comes over the stream.
    api.dismiss(reader, [there.pk])
    wait_for(lambda: closed(there), LIVE, "closed after a dismissal elsewhere", page=leader)


# -- permission: asked on a click only ---------------------------------------------------


def button_state(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => {
              const block = document.querySelector("[data-alarms-notify]");
              const button = block.querySelector("button");
              const shown = (sel) => Array.from(block.querySelectorAll(sel))
                .filter((n) => !n.hidden).map((n) => n.textContent.trim());
              return {
                hidden: block.hidden,
                state: block.dataset.state,
                button: shown("button [data-when]"),
                status: shown("[role=status] [data-when]"),
                disabled: button.getAttribute("aria-disabled"),
              };
            }"""
        )
    )


def test_permission_denied_no_prompt_on_load_and_no_notification(desktop, make_user):
    me = desktop(make_user("omar"))
    centre = me.tab("/alarms/")
    home = me.tab("/")
    for page in (centre, home):
        assert page.evaluate("window.__permissionRequests") == 0
        # A prompt would have been answered by now: headless Chromium denies it.
        assert page.evaluate("Notification.permission") == "default"
    me.front(centre)
    before = button_state(centre)
    assert before == {
        "hidden": False,
        "state": "default",
        "button": ["Turn on desktop notifications"],
        "status": ["Off. Your browser will ask you to allow them."],
        "disabled": "false",
    }

    centre.get_by_role("button", name="Turn on desktop notifications").click()
    wait_for(lambda: button_state(centre)["state"] == "denied", LIVE, "denied", page=centre)
    assert centre.evaluate("window.__permissionRequests") == 1
    after = button_state(centre)
    assert after["button"] == ["Desktop notifications are blocked"]
    assert after["status"] == [
        "Your browser blocks notifications from this site. "
        "Allow them in the browser's site settings, then reload this page."
    ]
    assert after["disabled"] == "true"
    # Disabled for assistive technology too (Playwright waits for enabled
    # buttons; force clicks it anyway): it asks no more.
    centre.get_by_role("button").filter(has_text="blocked").click(force=True)
    assert centre.evaluate("window.__permissionRequests") == 1

    leader = me.leader()
    me.away()
    alarm = critical()
    me.received(leader, alarm.pk)
    assert me.notifications() == []


def test_request_flow_screenshot(desktop, make_user):
    """docs/screenshots/desktop-notifications.png: the opt-in before, and after granting.

    The browser's own prompt is not in the picture: headless Chromium has none to
    capture. The permission is granted as the user's answer would grant it.
    """
    me = desktop(make_user("pia"))
    centre = me.tab("/alarms/")
    centre.set_viewport_size({"width": 640, "height": 900})
    block = centre.locator("[data-alarms-notify]")
    assert button_state(centre)["state"] == "default"
    centre.evaluate("document.fonts.ready")
    before = top_of(centre, block)

    # The user's answer to the prompt, given as the browser would record it:
    # the button follows the permission by itself.
    me.grant()
    wait_for(lambda: button_state(centre)["state"] == "granted", LIVE, "granted", page=centre)
    assert centre.evaluate("window.__permissionRequests") == 0
    assert button_state(centre)["button"] == ["Desktop notifications are on"]
    after = top_of(centre, block)

    # Both panels side by side, drawn by the browser itself.
    board = me.context.new_page()
    board.set_viewport_size({"width": 1200, "height": 400})
    board.set_content(PANELS)
    for index, shot in enumerate((before, after)):
        board.evaluate(
            "([i, data]) => { document.images[i].src = 'data:image/png;base64,' + data; }",
            [index, base64.b64encode(shot).decode()],
        )
    board.evaluate("Promise.all(Array.from(document.images, (img) => img.decode()))")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "desktop-notifications.png"
    board.locator("main").screenshot(path=str(path))
    if os.environ.get("ALARMS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / Path(path).name)


def top_of(page: Any, block: Any) -> bytes:
    """The top of the page down to the opt-in block."""
    box = block.bounding_box()
    view = page.viewport_size
    assert box is not None and view is not None
    clip = {"x": 0, "y": 0, "width": view["width"], "height": box["y"] + box["height"] + 16}
    return bytes(page.screenshot(clip=clip, animations="disabled"))


PANELS = """<!doctype html>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; background: #f3f4f6; }
  main { display: inline-flex; gap: 16px; padding: 16px; align-items: flex-start; }
  figure { margin: 0; padding: 8px; background: #fff;
           border: 1px solid #d1d5db; border-radius: 8px; }
  figcaption { color: #374151; margin: 0 0 6px; font-weight: 600; }
  img { display: block; width: 560px; }
</style>
<main>
  <figure><figcaption>1. Not asked yet</figcaption><img alt=""></figure>
  <figure><figcaption>2. After allowing in the browser's prompt</figcaption><img alt=""></figure>
</main>
"""

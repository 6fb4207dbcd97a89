"""Toasts in a real Chromium against a real daphne server."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from alarms import api
from alarms.models import Alarm, AlarmReceipt, AlarmTranslation
from tests.e2e import browser as fixtures
from tests.e2e.browser import leader_of, signed_in, toast, wait_ready
from tests.e2e.conftest import metric
from tests.helpers import receipt, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.one_django]

# The Playwright fixtures, made visible to the tests of this module.
browser = fixtures.browser
contexts = fixtures.contexts

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"

TEXTS = {
    "en": {"title": "Fire drill at 3 pm", "message": "Leave by the east stairs."},
    "ko": {"title": "오후 3시 소방 훈련", "message": "동쪽 계단으로 나가십시오."},
    "ja": {"title": "午後3時に避難訓練", "message": "東階段から退出してください。"},
    "ar": {"title": "تدريب على الحريق", "message": "غادروا عبر الدرج الشرقي."},
}


METRICS_TOKEN = "e2e-browser-metrics"


@pytest.fixture
def metered(server_factory: Any) -> Any:
    """A server whose /alarms/metrics/ this test may read: it counts the open streams."""
    return server_factory(METRICS_TOKEN=METRICS_TOKEN)


# How long a test waits for what should come live (ms): a bound against a hang,
# not a speed claim (the machines are shared and busy; latency is measured in
# bench/, never asserted here).
LIVE = 15_000


def with_auto_hide(page: Any, milliseconds: int) -> None:
    """Serve this page's HTML with a shorter auto-hide delay in the script's data-*."""

    def handle(route: Any) -> None:
        if route.request.resource_type != "document":
            route.continue_()
            return
        response = route.fetch()
        body = re.sub(r'data-auto-hide="\d+"', f'data-auto-hide="{milliseconds}"', response.text())
        route.fulfill(response=response, body=body)

    page.route("**/*", handle)


# -- delivery -----------------------------------------------------------------


def test_admin_alarm_reaches_three_users_in_their_languages(
    server, contexts, session_cookie, make_user
):
    operator = make_user("operator", is_staff=True, is_superuser=True)
    readers = {
        # Three ways a language is chosen: the set_language cookie, the
        # browser's Accept-Language, and the site default.
        "ko": signed_in(contexts, server, session_cookie, make_user("minji"), language="ko"),
        "ja": signed_in(contexts, server, session_cookie, make_user("haruto"), locale="ja-JP"),
        "en": signed_in(contexts, server, session_cookie, make_user("emma")),
    }
    pages = {lang: user.page("/") for lang, user in readers.items()}
    for page in pages.values():
        wait_ready(page, leader=True)
    assert pages["ko"].locator("html").get_attribute("lang") == "ko"
    assert pages["ja"].locator("html").get_attribute("lang") == "ja"

    admin = signed_in(contexts, server, session_cookie, operator).page("/admin/alarms/alarm/add/")
    admin.select_option("#id_level", "warning")
    admin.select_option("#id_audience", "authenticated")
    for index, lang in enumerate(("en", "ko", "ja")):
        assert admin.input_value(f"#id_translations-{index}-language_code") == lang
        admin.fill(f"#id_translations-{index}-title", TEXTS[lang]["title"])
        admin.fill(f"#id_translations-{index}-message", TEXTS[lang]["message"])
    admin.click('input[name="_save"]')
    admin.wait_for_url("**/admin/alarms/alarm/")
    alarm = Alarm.objects.get()
    assert alarm.created_by == operator

    for lang, page in pages.items():
        item = toast(page, alarm.pk)
        item.wait_for(timeout=LIVE)
        assert item.locator(".alarms-title").text_content() == TEXTS[lang]["title"]
        assert item.locator(".alarms-message").text_content() == TEXTS[lang]["message"]
        assert item.get_attribute("lang") == lang
        assert item.get_attribute("dir") == "ltr"
        assert item.get_attribute("role") == "status"
        assert item.get_attribute("aria-live") == "polite"


@pytest.mark.client
def test_alarm_text_is_never_markup(server, contexts):
    dialogs: list[str] = []
    user = contexts(server)
    page = user.page("/")
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    wait_ready(page, leader=True)
    evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    alarm = api.send_alarm(
        {"en": {"title": "<b>Bold</b> & co", "message": evil}},
        level="error",
        audience="everyone",
    )
    # Links the validators would refuse, written past them: the client refuses them too.
    bad = Alarm.objects.create(level="warning", audience="everyone", url="javascript:alert(3)")
    AlarmTranslation.objects.create(alarm=bad, language_code="en", title="Bad link", message="x")
    bad.save()
    good = api.send_alarm(
        {"en": {"title": "Status page", "message": "Details"}},
        audience="everyone",
        level="warning",
        url="https://status.example.com/incidents/42",
    )
    item = toast(page, alarm.pk)
    item.wait_for()
    assert item.locator(".alarms-title").text_content() == "<b>Bold</b> & co"
    assert item.locator(".alarms-message").text_content() == evil
    assert item.locator("img, script, b").count() == 0
    toast(page, bad.pk).wait_for()
    assert toast(page, bad.pk).locator("a[href]").count() == 0
    toast(page, good.pk).wait_for()
    link = toast(page, good.pk).locator("a.alarms-link")
    assert link.get_attribute("href") == "https://status.example.com/incidents/42"
    page.wait_for_timeout(300)
    assert dialogs == []


@pytest.mark.client
def test_arabic_toast_reads_right_to_left(server, contexts, session_cookie, make_user):
    user = signed_in(contexts, server, session_cookie, make_user("layla"), language="ar")
    page = user.page("/")
    wait_ready(page, leader=True)
    assert page.locator("html").get_attribute("dir") == "rtl"
    alarm = api.send_alarm({k: TEXTS[k] for k in ("en", "ar")}, level="warning")
    item = toast(page, alarm.pk)
    item.wait_for()
    assert item.get_attribute("dir") == "rtl"
    assert item.get_attribute("lang") == "ar"
    assert item.locator(".alarms-title").text_content() == TEXTS["ar"]["title"]
    # The region sits at the inline end: the left edge in a right-to-left page.
    box = page.locator("#alarms-region").bounding_box()
    assert box is not None and box["x"] < 100


def test_anonymous_visitor_sees_only_public_alarms(server, contexts):
    visitor = contexts(server)
    page = visitor.page("/")
    wait_ready(page, leader=True)
    members = api.send_alarm({"en": {"title": "Members", "message": "m"}}, level="warning")
    staff = api.send_alarm(
        {"en": {"title": "Staff", "message": "s"}}, level="warning", audience="staff"
    )
    public = api.send_alarm(
        {"en": {"title": "Everyone", "message": "e"}}, level="warning", audience="everyone"
    )
    # The stream delivers in the order of the journal: once the last alarm is
    # here, the two before it would have been.
    toast(page, public.pk).wait_for()
    assert toast(page, members.pk).count() == 0
    assert toast(page, staff.pk).count() == 0
    assert page.locator(".alarms-toast").count() == 1
    # Anonymous: no badge, and receipts stay in the browser.
    assert page.locator("[data-alarms-badge]").count() == 0


# -- one stream per browser ---------------------------------------------------


@pytest.mark.client
def test_eight_tabs_share_one_stream(metered, contexts, session_cookie, make_user):
    server = metered
    user = signed_in(contexts, server, session_cookie, make_user("tabby"))
    pages = [user.page("/") for _ in range(8)]
    for page in pages:
        wait_ready(page)
    leader = leader_of(pages)
    # Through Playwright, not time.sleep: its event handlers (user.streams) run
    # only while the page is being waited on.
    leader.wait_for_timeout(500)
    assert len(user.streams.started) == 1
    assert user.streams.open == 1
    assert metric(server, "alarms_streams_open", METRICS_TOKEN) == 1
    assert sum(page.evaluate("window.alarms.state().leader") for page in pages) == 1

    alarm = api.send_alarm(TEXTS, level="error")
    for page in pages:
        toast(page, alarm.pk).wait_for(timeout=LIVE)
        assert toast(page, alarm.pk).get_attribute("role") == "alert"
        assert toast(page, alarm.pk).get_attribute("aria-live") == "assertive"
    # Seen once, by one request, not eight.
    wait_for(
        lambda: (r := receipt(user_model("tabby"), alarm)) and r.seen_at,
        what="the receipt seen",
        page=pages[0],
    )
    pages[0].wait_for_timeout(1000)  # more would come with the next batch
    assert len(user.posts("/alarms/seen/")) == 1

    # The leader goes away: another tab takes over, resuming
    # after the last event it relayed, still with one stream open.
    pages.remove(leader)
    leader.close()
    successor = leader_of(pages, timeout=LIVE / 1000)
    assert "last_event_id=" in user.streams.started[-1].url
    assert len(user.streams.started) == 2
    wait_for(
        lambda: metric(server, "alarms_streams_open", METRICS_TOKEN) == 1,
        what="one stream open",
        page=successor,
    )
    assert successor.evaluate("window.alarms.state().lastEventId")

    second = api.send_alarm(TEXTS, level="warning")
    for page in pages:
        toast(page, second.pk).wait_for(timeout=LIVE)
        assert toast(page, alarm.pk).count() == 1
    assert len(user.streams.started) == 2
    assert metric(server, "alarms_streams_open", METRICS_TOKEN) == 1


def user_model(username: str) -> Any:
    return get_user_model().objects.get(username=username)


@pytest.mark.client
def test_lease_fallback_without_web_locks(metered, contexts, session_cookie, make_user):
    server = metered
    # Browsers without the Web Locks API elect a leader through localStorage.
    no_locks = "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined});"
    user = signed_in(contexts, server, session_cookie, make_user("lease"), init_script=no_locks)
    pages = [user.page("/") for _ in range(3)]
    for page in pages:
        wait_ready(page)
    assert pages[0].evaluate("navigator.locks") is None
    leader = leader_of(pages)
    leader.wait_for_timeout(1000)  # Playwright's wait: user.streams' handlers run meanwhile
    assert len(user.streams.started) == 1
    assert metric(server, "alarms_streams_open", METRICS_TOKEN) == 1
    pages.remove(leader)
    leader.close()
    leader_of(pages, timeout=LIVE / 1000)
    wait_for(
        lambda: metric(server, "alarms_streams_open", METRICS_TOKEN) == 1,
        what="one stream open",
        page=pages[0],
    )
    alarm = api.send_alarm(TEXTS, level="warning")
    for page in pages:
        toast(page, alarm.pk).wait_for(timeout=LIVE)


# -- seen and dismissed ---------------------------------------------------------


def test_dismiss_closes_everywhere_and_stays_dismissed(server, contexts, session_cookie, make_user):
    reader = make_user("dana")
    laptop = signed_in(contexts, server, session_cookie, reader)
    phone = signed_in(contexts, server, session_cookie, reader)
    tab1, tab2 = laptop.page("/"), laptop.page("/")
    other = phone.page("/")
    for page in (tab1, tab2, other):
        wait_ready(page)
    leader_of([tab1, tab2])
    wait_ready(other, leader=True)
    alarm = api.send_alarm(TEXTS, level="warning")
    for page in (tab1, tab2, other):
        toast(page, alarm.pk).wait_for()
    dismissed: list[Any] = []
    tab2.expose_function("recordDismissal", lambda detail: dismissed.append(detail))
    tab2.evaluate(
        "document.addEventListener('alarms:dismissed', e => window.recordDismissal(e.detail))"
    )

    toast(tab1, alarm.pk).locator(".alarms-close").click()
    toast(tab1, alarm.pk).wait_for(state="detached", timeout=LIVE)
    # Another tab: over BroadcastChannel, at once.
    toast(tab2, alarm.pk).wait_for(state="detached", timeout=LIVE)
    # Another device: through the stream's dismiss event.
    toast(other, alarm.pk).wait_for(state="detached", timeout=LIVE)
    wait_for(
        lambda: (r := receipt(reader, alarm)) and r.dismissed_at,
        what="the receipt dismissed",
        page=tab1,
    )
    assert dismissed and dismissed[0]["id"] == alarm.pk

    for page in (tab2, other):
        page.reload()
        wait_ready(page)
    leader_of([tab1, tab2])
    page = laptop.page("/alarms/")
    assert page.locator(f'[data-alarms-item="{alarm.pk}"]').count() == 1
    assert "alarms-entry--dismissed" in (
        page.locator(f'[data-alarms-item="{alarm.pk}"]').get_attribute("class") or ""
    )
    tab1.wait_for_timeout(700)
    for page in (tab1, tab2, other):
        assert toast(page, alarm.pk).count() == 0


@pytest.mark.client
def test_escape_dismisses_the_focused_toast(server, contexts, session_cookie, make_user):
    reader = make_user("kbd")
    page = signed_in(contexts, server, session_cookie, reader).page("/")
    wait_ready(page, leader=True)
    first = api.send_alarm(TEXTS, level="error")
    second = api.send_alarm(TEXTS, level="warning")
    toast(page, first.pk).wait_for()
    toast(page, second.pk).wait_for()
    # Newest on top.
    ids = page.eval_on_selector_all(".alarms-toast", "els => els.map(e => e.dataset.alarmId)")
    assert ids == [str(second.pk), str(first.pk)]
    toast(page, second.pk).focus()
    page.keyboard.press("Escape")
    toast(page, second.pk).wait_for(state="detached")
    wait_for(
        lambda: (r := receipt(reader, second)) and r.dismissed_at,
        what="the receipt dismissed",
        page=page,
    )
    # The close button is a real, focusable button; focus moved into the stack.
    close = toast(page, first.pk).locator("button.alarms-close")
    assert close.get_attribute("aria-label") == "Dismiss"
    close.focus()
    page.keyboard.press("Enter")
    toast(page, first.pk).wait_for(state="detached")
    wait_for(
        lambda: (r := receipt(reader, first)) and r.dismissed_at,
        what="the receipt dismissed",
        page=page,
    )


def test_seen_toasts_do_not_return_but_critical_ones_do(
    server, contexts, session_cookie, make_user
):
    reader = make_user("sam")
    user = signed_in(contexts, server, session_cookie, reader)
    page = user.page("/")
    wait_ready(page, leader=True)
    warning = api.send_alarm(TEXTS, level="warning")
    critical = api.send_alarm(TEXTS, level="critical")
    toast(page, warning.pk).wait_for()
    toast(page, critical.pk).wait_for()
    wait_for(
        lambda: (r := receipt(reader, warning)) and r.seen_at, what="the receipt seen", page=page
    )
    # Next page, and another device: the warning was seen, the critical alarm comes back.
    for context in (user, signed_in(contexts, server, session_cookie, reader)):
        page = context.page("/")
        toast(page, critical.pk).wait_for()
        page.wait_for_timeout(500)
        assert toast(page, warning.pk).count() == 0


RECORD_RECEIVED = """
window.received = [];
document.addEventListener("alarms:received", (e) => window.received.push(e.detail.alarm.id));
"""


@pytest.mark.client
def test_anonymous_receipts_live_in_local_storage(server, contexts):
    visitor = contexts(server, init_script=RECORD_RECEIVED)
    page = visitor.page("/")
    wait_ready(page, leader=True)
    notice = api.send_alarm(TEXTS, level="warning", audience="everyone")
    critical = api.send_alarm(TEXTS, level="critical", audience="everyone")
    toast(page, notice.pk).wait_for()
    toast(page, critical.pk).wait_for()
    page.reload()
    toast(page, critical.pk).wait_for()
    # The server sends both again (it keeps no receipts for visitors); the
    # client decides on each as it receives it.
    page.wait_for_function("id => window.received.includes(id)", arg=notice.pk)
    assert toast(page, notice.pk).count() == 0
    toast(page, critical.pk).locator(".alarms-close").click()
    page.reload()
    wait_ready(page, leader=True)
    page.wait_for_timeout(700)
    assert page.locator(".alarms-toast").count() == 0
    assert AlarmReceipt.objects.count() == 0


def test_retract_removes_the_toast(server, contexts, session_cookie, make_user):
    page = signed_in(contexts, server, session_cookie, make_user("ria")).page("/")
    wait_ready(page, leader=True)
    alarm = api.send_alarm(TEXTS, level="critical")
    toast(page, alarm.pk).wait_for()
    api.withdraw([alarm])
    toast(page, alarm.pk).wait_for(state="detached", timeout=LIVE)


# -- toast behaviour ------------------------------------------------------------


HIDE_MS = 4000


@pytest.mark.client
def test_info_hides_itself_unless_hovered(server, contexts, session_cookie, make_user):
    page = signed_in(contexts, server, session_cookie, make_user("ines")).context.new_page()
    # Long enough that the pointer reaches the toast before it hides, even on a
    # busy machine where a browser round trip takes a second.
    with_auto_hide(page, HIDE_MS)
    page.goto("/")
    wait_ready(page, leader=True)
    alarm = api.send_alarm(TEXTS, level="info")
    item = toast(page, alarm.pk)
    item.wait_for()
    item.hover()
    # Hovered, its timer stops (and its progress bar with it).
    page.wait_for_function(
        "id => document.querySelector(`.alarms-toast[data-alarm-id='${id}']`)"
        ".classList.contains('alarms-toast--paused')",
        arg=alarm.pk,
    )
    page.mouse.move(5, 700)
    item.wait_for(state="detached", timeout=LIVE)
    warning = api.send_alarm(TEXTS, level="warning")
    toast(page, warning.pk).wait_for()
    # Warnings stay: they get no timer at all.
    assert "alarms-toast--auto" not in (toast(page, warning.pk).get_attribute("class") or "")


@pytest.mark.client
def test_at_most_three_visible_with_more_button(server, contexts, session_cookie, make_user):
    page = signed_in(contexts, server, session_cookie, make_user("max")).page("/")
    wait_ready(page, leader=True)
    alarms = [
        api.send_alarm({"en": {"title": f"Alarm {n}", "message": "m"}}, level="warning")
        for n in range(4)
    ]
    for alarm in alarms:
        toast(page, alarm.pk).wait_for(state="attached")
    # A host script rebuilds the region around the same children (as page-swapping
    # libraries do): the client finds it again, with the same "more" button,
    # which must still toggle once per click.
    page.evaluate(
        """() => {
            const old = document.getElementById("alarms-region");
            const copy = document.createElement("div");
            copy.id = old.id;
            copy.className = old.className;
            copy.append(...old.childNodes);
            old.replaceWith(copy);
        }"""
    )
    alarms.append(api.send_alarm({"en": {"title": "Alarm 4", "message": "m"}}, level="warning"))
    toast(page, alarms[-1].pk).wait_for(state="attached")
    visible = page.locator(".alarms-toast:visible")
    assert visible.count() == 3
    assert [visible.nth(i).get_attribute("data-alarm-id") for i in range(3)] == [
        str(a.pk) for a in reversed(alarms[2:])
    ]
    more = page.locator(".alarms-more")
    assert more.text_content() == "+2 more"
    more.click()
    assert page.locator(".alarms-toast:visible").count() == 5
    assert more.get_attribute("aria-expanded") == "true"


def test_badge_counts_unread_live(server, contexts, session_cookie, make_user):
    reader = make_user("bea")
    page = signed_in(contexts, server, session_cookie, reader).page("/")
    wait_ready(page, leader=True)
    badge = page.locator("[data-alarms-badge]")
    assert badge.get_attribute("data-count") == "0"
    alarm = api.send_alarm(TEXTS, level="warning")
    toast(page, alarm.pk).wait_for()
    assert badge.get_attribute("data-count") == "1"
    assert badge.locator(".alarms-badge-count").text_content() == "1"
    toast(page, alarm.pk).locator(".alarms-close").click()
    page.wait_for_function(
        "() => document.querySelector('[data-alarms-badge]').dataset.count === '0'"
    )


@pytest.mark.client
def test_received_event_can_be_cancelled(server, contexts):
    page = contexts(server).page("/")
    wait_ready(page, leader=True)
    page.evaluate(
        """document.addEventListener('alarms:received', e => {
            window.received = (window.received || []).concat([e.detail.alarm.id]);
            if (e.detail.alarm.level === 'info') e.preventDefault();
        })"""
    )
    quiet = api.send_alarm(TEXTS, level="info", audience="everyone")
    loud = api.send_alarm(TEXTS, level="warning", audience="everyone")
    toast(page, loud.pk).wait_for()
    assert page.evaluate("window.received") == [quiet.pk, loud.pk]
    assert toast(page, quiet.pk).count() == 0


# -- resilience -----------------------------------------------------------------


@pytest.mark.client
def test_receipts_the_server_keeps_failing_are_warned_once_then_given_up(
    server, contexts, session_cookie, make_user
):
    page = signed_in(contexts, server, session_cookie, make_user("wes")).context.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    page.route("**/alarms/seen/", lambda route: route.fulfill(status=503, body="down"))
    # The page's timers on a clock of the test's: eight backoffs take minutes.
    page.clock.install()
    page.goto("/")
    wait_ready(page, leader=True)
    alarm = api.send_alarm(TEXTS, level="warning")
    toast(page, alarm.pk).wait_for()

    def gave_up() -> bool:
        page.clock.run_for(30_000)
        return any("gave up" in text for text in warnings)

    wait_for(gave_up, timeout=LIVE / 1000, page=page)
    retried = [text for text in warnings if "answered 503" in text]
    assert len(retried) == 1, warnings  # nine failures, one warning
    assert len([text for text in warnings if "gave up" in text]) == 1
    assert receipt(user_model("wes"), alarm) is None


def test_server_restart_loses_no_alarm(server, contexts, session_cookie, make_user):
    page = signed_in(contexts, server, session_cookie, make_user("rex")).page("/")
    wait_ready(page, leader=True)
    before = api.send_alarm(TEXTS, level="warning")
    toast(page, before.pk).wait_for()
    server.stop(signal.SIGKILL)
    page.wait_for_function("() => !window.alarms.state().streaming")
    during = api.send_alarm(TEXTS, level="error")
    time.sleep(1.5)  # the client retries against a dead port meanwhile
    server.start()
    toast(page, during.pk).wait_for(timeout=15_000)
    assert toast(page, before.pk).count() == 1
    assert page.locator(".alarms-toast").count() == 2


@pytest.mark.client
def test_reconnects_after_bad_gateway_with_backoff(server, contexts, session_cookie, make_user):
    page = signed_in(contexts, server, session_cookie, make_user("gale")).context.new_page()
    attempts: list[float] = []

    def gateway(route: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            # A proxy during a deploy: EventSource gives up on any non-200.
            route.fulfill(status=502, body="Bad Gateway", content_type="text/plain")
        else:
            route.continue_()

    page.route("**/alarms/stream/**", gateway)
    page.goto("/")
    wait_ready(page, leader=True, timeout=20_000)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.4 and gaps[2] >= 1.5  # 0.5-1 s, 1-2 s, 2-4 s
    alarm = api.send_alarm(TEXTS, level="warning")
    toast(page, alarm.pk).wait_for()


# -- deployed -------------------------------------------------------------------

PRODUCTION_SETTINGS = """\
from tests.e2e.server_settings import *  # noqa: F403

STATIC_ROOT = {root!r}
"""
HASHED = re.compile(r"\.[0-9a-f]{12}\.js$")


# one_database: collectstatic's hashed names and WhiteNoise serving them; the alarm at
# the end only shows the page works, as every other test here does on both databases.
@pytest.mark.one_database
def test_the_modules_load_by_their_hashed_names_after_collectstatic(
    server_factory, contexts, tmp_path
):
    # As deployed: DEBUG off, collectstatic with the project's storage, and
    # WhiteNoise serving what it wrote. Every module of the client must come by
    # its hashed name, so that none is cached across a deployment.
    (tmp_path / "production_settings.py").write_text(
        PRODUCTION_SETTINGS.format(root=str(tmp_path / "static"))
    )
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "e2e-production-" + "k" * 40,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "production_settings", **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = server_factory(settings="production_settings", env=env)
    visitor = contexts(server)
    scripts: list[str] = []
    visitor.context.on(
        "request",
        lambda r: (
            r.resource_type == "script" and "/static/alarms/" in r.url and scripts.append(r.url)
        ),
    )
    page = visitor.page("/")
    wait_ready(page, leader=True)
    names = {url.rsplit("/", 1)[-1].split(".")[0] for url in scripts}
    assert {"alarms", "client", "stream", "toasts", "tabs", "outbox"} <= names, scripts
    assert [url for url in scripts if not HASHED.search(url)] == []
    alarm = api.send_alarm(TEXTS, level="warning", audience="everyone")
    toast(page, alarm.pk).wait_for(timeout=LIVE)


# -- language -----------------------------------------------------------------


@pytest.mark.client
def test_language_switch_reopens_the_one_stream(metered, contexts, session_cookie, make_user):
    server = metered
    user = signed_in(contexts, server, session_cookie, make_user("lin"))
    other, page = user.page("/"), user.page("/")
    wait_ready(other)
    wait_ready(page)
    leader_of([other, page])
    page.select_option("#language-select", "ko")
    page.wait_for_load_state()
    # The other tab loads again in Korean on the preferences event: an alarm
    # shown before it said hello would stay with the tab that had it (a new
    # page is synced only the critical ones), so the alarm waits for both.
    for tab in (page, other):
        tab.wait_for_function("() => document.documentElement.lang === 'ko'")
        wait_ready(tab)
    wait_for(
        lambda: "lang=ko" in user.streams.started[-1].url, what="a stream in Korean", page=page
    )
    current = leader_of([other, page])
    assert current.evaluate("window.alarms.state().language") == "ko"
    wait_for(
        lambda: metric(server, "alarms_streams_open", METRICS_TOKEN) == 1,
        what="one stream open",
        page=page,
    )

    alarm = api.send_alarm(TEXTS, level="warning")
    for tab in (other, page):
        item = toast(tab, alarm.pk)
        item.wait_for(timeout=LIVE)
        assert item.locator(".alarms-title").text_content() == TEXTS["ko"]["title"]
        assert item.get_attribute("lang") == "ko"
    assert metric(server, "alarms_streams_open", METRICS_TOKEN) == 1


# -- screenshots --------------------------------------------------------------


@pytest.mark.client
@pytest.mark.parametrize(
    ("name", "language", "scheme"),
    [
        ("light", "en", "light"),
        ("dark", "en", "dark"),
        ("korean", "ko", "light"),
        ("arabic", "ar", "dark"),
    ],
)
def test_screenshot(server, contexts, session_cookie, make_user, name, language, scheme):
    reader = make_user(f"shot-{name}")
    user = signed_in(
        contexts,
        server,
        session_cookie,
        reader,
        language=language,
        color_scheme=scheme,
        reduced_motion="reduce",
    )
    page = user.page("/")
    wait_ready(page, leader=True)
    samples = [
        (
            "info",
            {
                "title": "Weekly report ready",
                "message": "Your usage report for week 47 is ready.",
                "ko": ("주간 보고서 준비 완료", "47주차 사용량 보고서가 준비되었습니다."),
                "ar": ("التقرير الأسبوعي جاهز", "تقرير الاستخدام للأسبوع 47 جاهز."),
            },
        ),
        (
            "warning",
            {
                "title": "Scheduled maintenance tonight",
                "message": "The API is read-only from 22:00 to 22:30 UTC.",
                "ko": ("오늘 밤 정기 점검", "22:00부터 22:30(UTC)까지 API는 읽기 전용입니다."),
                "ar": (
                    "صيانة مجدولة الليلة",
                    "ستكون الواجهة للقراءة فقط من 22:00 إلى 22:30 بالتوقيت العالمي.",
                ),
            },
        ),
        (
            "critical",
            {
                "title": "Payments are failing",
                "message": "Card payments fail for some customers. We are on it.",
                "ko": ("결제 장애", "일부 고객의 카드 결제가 실패하고 있습니다. 조치 중입니다."),
                "ar": (
                    "فشل في عمليات الدفع",
                    "تفشل مدفوعات البطاقات لبعض العملاء. نحن نعمل على الحل.",
                ),
            },
        ),
    ]
    sent = []
    for level, text in samples:
        translations = {"en": {"title": text["title"], "message": text["message"]}}
        for lang in ("ko", "ar"):
            title, message = text[lang]
            translations[lang] = {"title": title, "message": message}
        sent.append(api.send_alarm(translations, level=level, url="/alarms/"))
    for alarm in sent:
        toast(page, alarm.pk).wait_for()
    # What the picture shows: the three toasts, newest on top, whole in the
    # viewport, in the reader's language and direction, in the colour scheme's colours.
    ids = page.eval_on_selector_all(
        ".alarms-toast", "els => els.map(e => Number(e.dataset.alarmId))"
    )
    assert ids == [alarm.pk for alarm in reversed(sent)]
    for (_level, text), alarm in zip(samples, sent, strict=True):
        item = toast(page, alarm.pk)
        title = text["title"] if language == "en" else text[language][0]
        assert item.locator(".alarms-title").text_content() == title
        assert item.get_attribute("lang") == language
        assert item.get_attribute("dir") == ("rtl" if language == "ar" else "ltr")
        box, view = item.bounding_box(), page.viewport_size
        assert box is not None and view is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"]
        assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"]
    background = toast(page, sent[1].pk).evaluate(
        "node => getComputedStyle(node).backgroundColor.match(/[\\d.]+/g).slice(0, 3).map(Number)"
    )
    luminance = (0.2126 * background[0] + 0.7152 * background[1] + 0.0722 * background[2]) / 255
    assert luminance < 0.35 if scheme == "dark" else luminance > 0.8, background
    # Fonts loaded and a frame painted with them.
    page.evaluate(
        "() => document.fonts.ready.then(() => new Promise("
        "r => requestAnimationFrame(() => requestAnimationFrame(r))))"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"toasts-{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("ALARMS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)

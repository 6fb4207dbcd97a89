"""Playwright fixtures: Debian's Chromium, one browser per test module, contexts per user."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STREAM_PATH = "/alarms/stream/"
LEADING = "window.alarms && window.alarms.state().leader && window.alarms.state().streaming"


def require_chromium() -> None:
    """Skip without Chromium, unless the run demands a browser (CI), where it fails."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    if os.environ.get("ALARMS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ALARMS_REQUIRE_BROWSER=1 but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a test requirement
        if os.environ.get("ALARMS_REQUIRE_BROWSER") == "1":
            raise
        pytest.skip("playwright is not installed")
    # Playwright's sync API runs its own event loop in this thread; Django's
    # async-unsafe guard would then refuse the ORM calls the tests make.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield instance
            finally:
                instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class StreamLog:
    """The /alarms/stream/ requests one browser context made, and which have ended."""

    started: list[Any] = field(default_factory=list)
    ended: list[Any] = field(default_factory=list)
    posts: list[Any] = field(default_factory=list)

    def attach(self, context: Any) -> None:
        def is_stream(request: Any) -> bool:
            return urlsplit(request.url).path == STREAM_PATH

        context.on("request", lambda r: is_stream(r) and self.started.append(r))
        context.on("request", lambda r: r.method == "POST" and self.posts.append(r))
        context.on("requestfinished", lambda r: is_stream(r) and self.ended.append(r))
        context.on("requestfailed", lambda r: is_stream(r) and self.ended.append(r))

    @property
    def open(self) -> int:
        """Streams of live pages not ended yet (a closed page's requests never end here)."""
        return len(self.started) - len(self.ended)


@dataclass
class User:
    """A browser context (one "browser" of one person) with its stream log."""

    context: Any
    streams: StreamLog
    base_url: str

    def posts(self, path: str) -> list[Any]:
        return [r for r in self.streams.posts if urlsplit(r.url).path == path]

    def page(self, path: str = "/") -> Any:
        page = self.context.new_page()
        page.goto(self.base_url + path)
        return page


@pytest.fixture
def contexts(browser: Any) -> Iterator[Callable[..., User]]:
    """Make browser contexts against a server; all closed at the end of the test."""
    made: list[Any] = []

    def make(
        server: Any,
        *,
        cookie: tuple[str, str] | None = None,
        language: str | None = None,
        locale: str | None = None,
        color_scheme: str = "light",
        reduced_motion: str = "no-preference",
        init_script: str | None = None,
        **options: Any,
    ) -> User:
        context = browser.new_context(
            base_url=server.url,
            locale=locale or "en-US",
            color_scheme=color_scheme,
            reduced_motion=reduced_motion,
            viewport=options.pop("viewport", {"width": 1180, "height": 720}),
            **options,
        )
        host = urlsplit(server.url).hostname
        cookies = []
        if cookie:
            cookies.append({"name": cookie[0], "value": cookie[1], "domain": host, "path": "/"})
        if language:
            cookies.append(
                {"name": "django_language", "value": language, "domain": host, "path": "/"}
            )
        if cookies:
            context.add_cookies(cookies)
        if init_script:
            context.add_init_script(init_script)
        context.set_default_timeout(20_000)  # a bound against a hang on a busy machine
        log = StreamLog()
        log.attach(context)
        made.append(context)
        return User(context=context, streams=log, base_url=server.url)

    yield make
    for context in made:
        context.close()


def signed_in(make: Any, server: Any, session_cookie: Any, user: Any, **options: Any) -> User:
    """A browser context of ``make`` (the ``contexts`` fixture) signed in as ``user``."""
    return make(server, cookie=session_cookie(user), **options)


def toast(page: Any, alarm_id: int) -> Any:
    return page.locator(f'.alarms-toast[data-alarm-id="{alarm_id}"]')


def wait_ready(page: Any, *, leader: bool | None = None, timeout: float = 20_000) -> None:
    """Wait until the script runs (and, if asked, until this page leads and streams)."""
    if leader:
        page.wait_for_function(f"() => {LEADING}", timeout=timeout)
    else:
        page.wait_for_function("() => window.alarms !== undefined", timeout=timeout)


def leader_of(pages: list[Any], timeout: float = 20.0) -> Any:
    """The one page among ``pages`` that leads with an open stream (waits for it)."""

    def leading() -> Any:
        return next((page for page in pages if page.evaluate(f"!!({LEADING})")), None)

    return wait_for(leading, timeout, "a page holding an open alarm stream")


# -- Content-Security-Policy ----------------------------------------------------

# Init scripts run before the page's own and are not subject to its policy.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`
  );
});
"""


@dataclass
class CSPWatch:
    """Violations of the page's Content-Security-Policy in one browser context."""

    console: list[str] = field(default_factory=list)

    def attach(self, context: Any) -> None:
        context.add_init_script(CSP_WATCH)

        def on_console(message: Any) -> None:
            if "Content Security Policy" in message.text:
                self.console.append(message.text)

        context.on("console", on_console)

    def violations(self, page: Any) -> list[str]:
        """What ``page`` reported (its events) plus what any page logged."""
        return [*page.evaluate("window.__cspViolations || []"), *self.console]

    def clear(self, page: Any) -> None:
        page.evaluate("window.__cspViolations = []")
        self.console.clear()

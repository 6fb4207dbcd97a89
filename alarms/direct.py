"""The stream's direct path: serve ``GET /alarms/stream/`` without Django's middleware chain.

    from alarms.asgi import direct_streams, flow_control
    application = flow_control(direct_streams(get_asgi_application()))

Under ASGI, Django runs each ``MiddlewareMixin`` middleware's hooks through
``sync_to_async`` on a thread made for the request, and a middleware that is
not async-capable (WhiteNoise's) puts the whole chain on it. For a page that is
noise; for the stream, opened by every tab of every reader and all at once
after a deploy, it is most of a connect's CPU (``docs/performance.md``).

A stream needs little of that chain. This path does what it needs on the
event loop, with Django's own code where there is some:

- ``ALLOWED_HOSTS`` (``request.get_host()``), errors answered by Django's
  ``response_for_exception`` and every 4xx/5xx logged, as the handler would;
- ``SecurityMiddleware``'s redirect and headers, when it is installed;
- the session from its cookie, loaded with the user in the broker's database
  thread, as on the normal path, and what ``SessionMiddleware`` would write
  back (a cycled key, a renewal, the deletion of a stale cookie) when there is
  any;
- the reader's language as the listed ``LocaleMiddleware`` would choose it
  (Django's, or ``alarms.middleware.LocaleMiddleware``);
- the view itself with its decorators (CORS, ``never_cache``, ``require_GET``),
  found by resolving the URL.

It takes over only when every middleware in ``MIDDLEWARE`` is one whose effect
on a stream it knows (``KNOWN``: it does the same, or the middleware does
nothing a stream needs), or one the project names in ``skip``. A middleware
it does not know may be access control (``LoginRequiredMiddleware``, an
address filter, ``RemoteUserMiddleware``), so then every stream goes through
Django, and the process logs once which middleware kept it there:

    application = flow_control(direct_streams(app, skip=["myproject.middleware.Timing"]))

The receipts' ``POST /alarms/seen/`` and ``POST /alarms/dismiss/`` get a path of
their own here, since a dismissal storm sends thousands a second: Django's
whole middleware chain, whatever it holds, run as a WSGI server runs it, in
one worker thread, where Django's ASGI handler hops to a thread and back for
each hook of each ``MiddlewareMixin`` middleware (16 hops a dismissal with the
demo's chain: 13.5 ms of CPU against 9, ``docs/performance.md``). The signals
run as under any handler. At most ``ALARMS["RECEIPT_THREADS"]`` receipts a
process run at once, in threads at a lower CPU priority
(``ALARMS["RECEIPTS_NICE"]``); the rest wait their turn on the event loop
without holding a database connection, and while a broadcast is being
delivered to this process's streams the next receipt waits for it (at most
``ALARMS["RECEIPTS_YIELD"]`` seconds): showing an alarm goes first.

The ``request_started``/``request_finished`` signals do not run for a stream on
this path (the stream writes nothing through the ORM on its request). Anything
else falls through to Django too: other paths and methods, a mount under
``root_path`` or ``FORCE_SCRIPT_NAME``, the stream under ``i18n_patterns``, a
project without Django's ``SessionMiddleware``, ``PREPEND_WWW`` or
``DISALLOWED_USER_AGENTS`` set.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, suppress
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import signals
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import response_for_exception
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.middleware.security import SecurityMiddleware
from django.urls import NoReverseMatch, resolve, reverse, set_script_prefix
from django.utils import translation
from django.utils.log import log_response
from django.utils.module_loading import import_string

from alarms.broker import current_broker
from alarms.conf import get_config
from alarms.translation import request_language

logger = logging.getLogger("alarms.stream")
request_logger = logging.getLogger("django.request")

Scope = dict[str, Any]

SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"

#: The URL names of the views the receipts' path serves, all synchronous.
RECEIPT_VIEWS = ("alarms:seen", "alarms:dismiss")

#: Middleware whose effect on a ``GET`` of the stream this path reproduces
#: (security, session, locale, the host check of ``CommonMiddleware``) or that
#: does nothing a stream needs (authentication: the broker reads the user from
#: the session itself; CSRF on a safe method; messages; headers for pages;
#: static files; compression and caching, which the stream opts out of).
KNOWN = frozenset(
    {
        SECURITY_MIDDLEWARE,
        SESSION_MIDDLEWARE,
        "django.middleware.locale.LocaleMiddleware",
        "alarms.middleware.LocaleMiddleware",
        # Leaves the stream to its broker, which reads the stored language itself.
        "alarms.middleware.PreferencesMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.middleware.csp.ContentSecurityPolicyMiddleware",
        "csp.middleware.CSPMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.http.ConditionalGetMiddleware",
        "django.middleware.cache.UpdateCacheMiddleware",
        "django.middleware.cache.FetchFromCacheMiddleware",
    }
)


class _Route:
    """What the direct path needs from the settings and URLconf, found once per process."""

    def __init__(self, skip: frozenset[str]) -> None:
        middleware = list(settings.MIDDLEWARE)
        self.path: str | None = None
        self.receipts = _Receipts.for_settings()
        allowed = KNOWN | skip
        unknown = [name for name in middleware if name not in allowed]
        if unknown:
            logger.info(
                "direct_streams: %s may do what a stream needs (it is not known to this path, "
                "nor in its skip list); streams go through Django's middleware",
                unknown[0],
            )
            return
        if (
            SESSION_MIDDLEWARE not in middleware
            or getattr(settings, "FORCE_SCRIPT_NAME", None)
            or settings.PREPEND_WWW
            or settings.DISALLOWED_USER_AGENTS
        ):
            return
        try:
            path = reverse("alarms:stream")
        except NoReverseMatch:
            logger.warning("direct_streams: no URL named alarms:stream; streams go through Django")
            return
        if translation.get_language_from_path(path):
            return  # under i18n_patterns: the URL depends on the language, Django's to route
        self.path = path
        self.view = resolve(path).func
        self.session_store = import_string(settings.SESSION_ENGINE + ".SessionStore")
        self.cookie_name = settings.SESSION_COOKIE_NAME
        self.security = SecurityMiddleware(_no_chain) if SECURITY_MIDDLEWARE in middleware else None
        self.sessions = SessionMiddleware(_no_chain)
        # The language as the listed LocaleMiddleware would choose it, none without one.
        self.language: Callable[[HttpRequest], str] | None = None
        if "alarms.middleware.LocaleMiddleware" in middleware:
            self.language = request_language
        elif "django.middleware.locale.LocaleMiddleware" in middleware:
            self.language = translation.get_language_from_request
        used, prefixed_default = is_language_prefix_patterns_used(settings.ROOT_URLCONF)
        if used and not prefixed_default:
            # Django's rule: a path without a language prefix is LANGUAGE_CODE.
            self.language = None


def lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` (``RECEIPTS_NICE``).

    Under a dismissal storm every core is busy, and a broadcast's delivery (this
    loop's, the other processes', the proxy's) would wait its turn behind the
    receipts: with them niced, the kernel runs delivery first, and the receipts
    still get any core nobody else wants. Linux keeps a nice value per thread;
    elsewhere ``setpriority`` would renice the process, so this does nothing.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + nice))
    except OSError as exc:  # a sandbox that forbids it: run at the process's priority
        logger.warning("RECEIPTS_NICE: could not lower a receipts' thread's priority: %s", exc)


def _no_chain(request: HttpRequest) -> HttpResponseBase:
    """The get_response of the middleware above: only their hooks are called, never it."""
    raise NotImplementedError


class _Receipts:
    """The receipts' path: Django's middleware chain and view, in one worker thread."""

    def __init__(self, paths: frozenset[str]) -> None:
        self.paths = paths
        # Django's synchronous chain, as a WSGI handler loads it.
        self.handler = BaseHandler()
        self.handler.load_middleware(is_async=False)
        config = get_config()
        self.threads = int(config["RECEIPT_THREADS"])
        self.executor = ThreadPoolExecutor(
            self.threads,
            thread_name_prefix="alarms-receipts",
            initializer=lower_priority,
            initargs=(int(config["RECEIPTS_NICE"]),),
        )
        # Admission on the loop, one per loop (a semaphore is bound to its loop):
        # a receipt takes a thread only when one is free, so that the check for
        # a broadcast in delivery comes just before it runs, not before it queues.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.threads)
        return slots

    @classmethod
    def for_settings(cls) -> _Receipts | None:
        if getattr(settings, "FORCE_SCRIPT_NAME", None):
            return None
        try:
            paths = frozenset(reverse(name) for name in RECEIPT_VIEWS)
        except NoReverseMatch:
            return None
        if any(translation.get_language_from_path(path) for path in paths):
            return None  # under i18n_patterns: the URL depends on the language
        return cls(paths)

    def respond(self, request: HttpRequest, scope: Scope) -> HttpResponseBase:
        """In a worker thread: what Django's WSGI handler does for ``request``."""
        set_script_prefix("/")  # never under a prefix: see for_settings and the dispatch
        signals.request_started.send(sender=ASGIHandler, scope=scope)
        try:
            response = self.handler.get_response(request)
        except BaseException:
            signals.request_finished.send(sender=ASGIHandler)
            raise
        # The views answer JSON, in memory: closing now sends request_finished in
        # this thread, so its database connection goes back (to the pool) at once.
        response.close()
        return response


async def _serve_receipt(receipts: _Receipts, scope: Scope, receive: Any, send: Any) -> None:
    max_size = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    with tempfile.SpooledTemporaryFile(max_size=max_size) as body:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # as Django's handler: nothing to answer
            body.write(message.get("body", b""))
            if not message.get("more_body"):
                break
        body.seek(0)
        try:
            request = ASGIRequest(scope, body)
        except UnicodeDecodeError:
            request_logger.warning(
                "Bad Request (UnicodeDecodeError)", exc_info=True, extra={"status_code": 400}
            )
            await _send(HttpResponseBadRequest(), send)
            return
        async with receipts.slot():
            broker = current_broker()
            if broker is not None:
                await broker.yield_to_delivery()
            response = await sync_to_async(
                receipts.respond, thread_sensitive=False, executor=receipts.executor
            )(request, scope)
    await _send(response, send)


def direct_streams(application: Any, *, skip: Iterable[str] = ()) -> Any:
    """Wrap Django's ASGI application so streams take the direct path (module docstring).

    ``skip``: dotted paths of the project's own middleware that a stream may do
    without. Any other middleware not in ``KNOWN`` keeps streams on Django's path.
    """
    skipped = frozenset(skip)
    route: _Route | None = None

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal route
        method = scope.get("method") if scope.get("type") == "http" else None
        # Mounted under a prefix (root_path), the paths differ: Django's to route.
        if method in ("GET", "POST") and not scope.get("root_path"):
            if route is None:
                route = _Route(skipped)
            path = scope.get("path")
            if method == "GET" and route.path is not None and path == route.path:
                await _serve(route, scope, receive, send)
                return
            receipts = route.receipts
            if method == "POST" and receipts is not None and path in receipts.paths:
                await _serve_receipt(receipts, scope, receive, send)
                return
        await application(scope, receive, send)

    return app


async def _serve(route: _Route, scope: Scope, receive: Any, send: Any) -> None:
    # The body of a GET is not wanted; wait for its end, as Django's handler does.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body"):
            break
    try:
        request = ASGIRequest(scope, io.BytesIO())
    except UnicodeDecodeError:
        # As Django's ASGIHandler.create_request answers it.
        request_logger.warning(
            "Bad Request (UnicodeDecodeError)", exc_info=True, extra={"status_code": 400}
        )
        await _send(HttpResponseBadRequest(), send)
        return
    response = await _respond(route, request)
    # What follows lives as long as the stream, so it keeps only what it reads
    # again: not the request (nor its META), nor, once the headers are out, the
    # response (see _send).
    del request
    sending = _send(response, send)
    del response
    # This task sends; one more waits for the client to go away and cancels it.
    serving = cast("asyncio.Task[None]", asyncio.current_task())
    watcher = asyncio.create_task(_disconnected(receive, serving))
    try:
        await sending
    except asyncio.CancelledError:
        # The watcher's cancel ends the stream as a return; any other goes on.
        if not watcher.done() or watcher.cancelled() or serving.uncancel():
            raise
    finally:
        if not watcher.done():
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher


async def _respond(route: _Route, request: HttpRequest) -> HttpResponseBase:
    response = await _view_response(route, request)
    if route.security is not None:
        # Typed for HttpResponse only; it sets headers, as on any response.
        response = route.security.process_response(request, response)  # type: ignore[arg-type]
    if response.status_code >= 400:
        # As Django's handler logs what a view answered (once: errors are logged already).
        await sync_to_async(log_response, thread_sensitive=False)(
            "%s: %s",
            response.reason_phrase,
            request.path,
            # Typed for HttpResponse only; it reads the status code, as of any response.
            response=response,  # type: ignore[arg-type]
            request=request,
        )
    return response


async def _view_response(route: _Route, request: HttpRequest) -> HttpResponseBase:
    try:
        request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware would check it
        if route.security is not None:
            redirect = route.security.process_request(request)
            if redirect is not None:
                return redirect
        session = request.session = route.session_store(request.COOKIES.get(route.cookie_name))
        language = route.language(request) if route.language else settings.LANGUAGE_CODE
        with translation.override(language):
            request.LANGUAGE_CODE = language
            response: HttpResponseBase = await route.view(request)
        # The session is loaded in the broker's thread by now. What SessionMiddleware
        # would write back (a key cycled by a SECRET_KEY_FALLBACKS login, a renewal
        # under SESSION_SAVE_EVERY_REQUEST, the deletion of a stale cookie), it writes.
        if (
            session.modified
            or settings.SESSION_SAVE_EVERY_REQUEST
            or (route.cookie_name in request.COOKIES and session.is_empty())
        ):
            response = await sync_to_async(route.sessions.process_response, thread_sensitive=False)(
                request,
                # Typed for HttpResponse only; it sets cookies, as on any response.
                response,  # type: ignore[arg-type]
            )
        return response
    except Exception as exc:  # answered as Django's handler answers it
        return await sync_to_async(response_for_exception, thread_sensitive=False)(request, exc)


async def _send(response: HttpResponseBase, send: Any) -> None:
    await send(_start(response))
    # Django's flag for the streaming kind of response, as its handlers read it.
    if not getattr(response, "streaming", False):
        await send({"type": "http.response.body", "body": cast(HttpResponse, response).content})
        return
    # The stream's own generator when its response hands it over
    # (EventStreamResponse.detach_events): then the response, its headers and
    # Django's two generators around the stream's are not kept for its life.
    detach = getattr(response, "detach_events", None)
    parts: AsyncGenerator[bytes, None] | None = detach() if detach is not None else None
    if parts is None:
        # Its __aiter__ is an async generator, which the stubs call an AsyncIterator.
        parts = cast(AsyncGenerator[bytes, None], aiter(cast(StreamingHttpResponse, response)))
    del response, detach
    async with aclosing(parts) as content:
        async for part in content:
            await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body"})


def _start(response: HttpResponseBase) -> dict[str, Any]:
    # Built here, so that no frame of the stream keeps the headers once sent.
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").strip().encode("ascii")))
    return {"type": "http.response.start", "status": response.status_code, "headers": headers}


async def _disconnected(receive: Any, serving: asyncio.Task[None]) -> None:
    """Cancel ``serving`` when the client goes away (or ``receive`` fails)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:
        serving.cancel()  # the error stays this task's, as it was
        raise
    serving.cancel()

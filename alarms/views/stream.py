"""``GET /alarms/stream/``: the Server-Sent Events stream of one browser."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import translation
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms import events
from alarms.broker import get_broker
from alarms.broker.base import BaseBroker, BrokerFull, ConnectState, Subscriber
from alarms.translation import supported_language

logger = logging.getLogger("alarms.stream")


@never_cache
@require_GET
async def stream(request: HttpRequest) -> HttpResponse:
    broker = get_broker()
    await broker.ensure_started()
    language = stream_language(request)
    since = events.parse_event_id(
        request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    )
    # Sessions, the user and their receipts are read in the broker's own
    # database threads, so a storm of connects cannot open a connection each.
    # The ids are taken here, on the loop: the broker changes that dict.
    state: ConnectState = await broker.run_db(_load, broker, request, language, list(broker.alarms))
    try:
        sub = broker.subscribe(state)
    except BrokerFull:
        response = HttpResponse(
            "This server holds as many alarm streams as it may; try again shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(random.randint(5, 30))
        return response
    head = broker.head
    try:
        if since is not None:
            missed = await broker.run_db(broker.read_missed, state.viewer, since, head)
        else:
            missed = None
        if missed is not None:
            first = broker.replay(sub, missed)
        else:
            first = broker.snapshot(sub, state.seen)
    except BaseException:
        broker.unsubscribe(sub)
        raise
    # GZipMiddleware reads Accept-Encoding after the view: without it there, it
    # leaves the stream alone (a compressor buffers, and events would stall).
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    response = StreamingHttpResponse(
        _events(broker, sub, request, first), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache, no-store, must-revalidate, private"
    response["X-Accel-Buffering"] = "no"
    response["Content-Language"] = state.viewer.language
    response["Vary"] = "Cookie, Accept-Language"
    return response


def stream_language(request: HttpRequest) -> str:
    """``?lang=`` when the site speaks it, else the locale Django chose for the request."""
    override = supported_language(request.GET.get("lang"))
    if override:
        return override
    active = translation.get_language() or ""
    return supported_language(active) or settings.LANGUAGE_CODE


def _load(
    broker: BaseBroker, request: HttpRequest, language: str, alarm_ids: list[int]
) -> ConnectState:
    return broker.load_viewer(get_user(request), language, alarm_ids)


async def _events(
    broker: BaseBroker, sub: Subscriber, request: HttpRequest, first: list[bytes]
) -> AsyncIterator[bytes]:
    config = broker.config
    heartbeat = float(config["HEARTBEAT"])
    # Jitter spreads the reconnects of streams that opened together.
    lifetime = float(config["MAX_LIFETIME"]) * random.uniform(0.85, 1.0)
    deadline = time.monotonic() + lifetime
    logger.debug("stream %d opened for user %s", sub.id, sub.viewer.user_id)
    # By the first step of the body every middleware has run its response
    # hooks, so the request's thread is not needed again until the end.
    _release_request_thread()
    _slim(request)
    opening = events.encode(retry=int(config["RETRY_MS"])) + events.comment("alarms")
    opening += b"".join(first)
    first.clear()  # this frame lives as long as the stream
    del request
    try:
        yield opening
        del opening
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sub.close("lifetime")
            chunks = await sub.next(max(0.0, min(heartbeat, remaining)))
            if chunks:
                yield b"".join(chunks)
            if sub.closed:
                closing = events.comment(f"closed: {sub.closed}")
                if sub.closed == "shutdown":
                    # This process is going away: come back at once, spread over a second.
                    closing += events.encode(retry=random.randint(100, 1000))
                elif sub.closed == "replaced":
                    # A newer stream of this user took its place: come back late, or
                    # two clients over the cap would keep closing each other.
                    closing += events.encode(retry=random.randint(30_000, 60_000))
                yield closing
                return
            if chunks is None:
                yield events.comment()
    except asyncio.CancelledError:
        # The client went away (Django cancels the response task).
        raise
    finally:
        broker.unsubscribe(sub)
        logger.debug("stream %d closed (%s)", sub.id, sub.closed or "client")


def _slim(request: HttpRequest) -> None:
    """Drop what the request no longer needs: Django holds it for the stream's life.

    By the first body step every middleware has run both its hooks; what is
    kept is what logging an error at the end may still read.
    """
    keep = ("REMOTE_ADDR", "REQUEST_METHOD", "PATH_INFO", "SERVER_NAME", "SERVER_PORT")
    request.META = {k: request.META[k] for k in keep if k in request.META}
    drop = ("session", "user", "COOKIES", "_cached_user", "auser", "_messages", "GET", "scope")
    for name in (*drop, "_stream", "resolver_match", "_post", "_files"):
        request.__dict__.pop(name, None)


def _release_request_thread() -> None:
    """Let go of the idle thread Django's ASGI handler keeps for this request.

    Each ASGI request runs in its own ``ThreadSensitiveContext``; the first
    thread-sensitive call (the ``request_started`` receivers) gives it a
    one-thread executor that lives as long as the request: for a stream, hours
    of an idle OS thread. Nothing in this request needs that thread again until
    the response ends (a later call makes a fresh one, cleaned up as usual), so
    it is shut down now. Without the asgiref internals this relies on, it does
    nothing.
    """
    context_var = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors: Any = getattr(SyncToAsync, "context_to_thread_executor", None)
    if context_var is None or executors is None:
        return
    context = context_var.get(None)
    if context is None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)

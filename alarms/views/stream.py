"""``GET /alarms/stream/``: the Server-Sent Events stream of one browser."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
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
from alarms.asgi import SCOPE_KEY
from alarms.broker import get_broker
from alarms.broker.base import (
    AddressFull,
    BaseBroker,
    BrokerFull,
    ConnectState,
    Missed,
    Subscriber,
    prime_session,
)
from alarms.translation import supported_language

logger = logging.getLogger("alarms.stream")
_warned_no_flow_control = False


@never_cache
@require_GET
async def stream(request: HttpRequest) -> HttpResponse:
    broker = get_broker()
    await broker.ensure_started()
    _check_flow_control(request)
    language = stream_language(request)
    since = events.parse_event_id(
        request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    )
    address = request.META.get("REMOTE_ADDR") or ""
    # Sessions, the user and their receipts are read in the broker's own
    # database threads, so a storm of connects cannot open a connection each.
    # The ids are taken here, on the loop: the broker changes that dict.
    loaded_at = broker.head
    # One trip to the database thread: the viewer, then what it missed up to
    # the head as it was here (each trip costs a wake-up of the loop).
    state, missed = await broker.run_db(
        _load, broker, request, language, list(broker.alarms), since, loaded_at
    )
    state.head = loaded_at
    try:
        sub = broker.subscribe(state, address)
    except AddressFull:
        limit = broker.config["MAX_STREAMS_PER_ADDRESS"]
        logger.warning(
            "stream refused: %s holds %d streams already",
            address,
            limit,
            extra={"event": "stream_refused", "reason": "address", "address": address},
        )
        return _refuse(
            429,
            f"Too many alarm streams from this address (at most {limit}); close some "
            "tabs or try again later.\n",
        )
    except BrokerFull:
        logger.warning(
            "stream refused: this process holds %d streams%s",
            len(broker.subscribers),
            " and is shutting down" if broker.shutting_down else "",
            extra={"event": "stream_refused", "reason": "full", "address": address},
        )
        return _refuse(
            503, "This server holds as many alarm streams as it may; try again shortly.\n"
        )
    if since is not None:
        # Alarms fanned out from now on reach the queue; the replay must not
        # send them a second time.
        sub.tracking = set()
    head = broker.head
    try:
        if missed is not None and head > loaded_at:
            # Rows fanned out between the load and the subscription reached
            # neither: read them too.
            later = await broker.run_db(
                broker.read_missed, state.viewer, (loaded_at, since[1]), head
            )
            missed = missed.merge(later) if later is not None else None
        if missed is not None:
            first = broker.replay(sub, missed)
            broker.stats["resumes"] += 1
        else:
            first = broker.snapshot(sub, state.seen)
            if since is not None:
                broker.stats["resumes_snapshot"] += 1
    except BaseException:
        broker.unsubscribe(sub)
        raise
    finally:
        sub.tracking = None
    logger.info(
        "stream %d opened: user %s, %s, %s (%d events)",
        sub.id,
        state.viewer.user_id or "-",
        language,
        "resumed" if missed is not None else "snapshot",
        len(first),
        extra={
            "event": "stream_opened",
            "stream": sub.id,
            "user": state.viewer.user_id,
            "language": language,
            "address": address,
            "resumed": missed is not None,
            "replayed": len(first),
        },
    )
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


def _refuse(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    # Spread the retries of everyone refused at once.
    response["Retry-After"] = str(random.randint(5, 30))
    return response


def _check_flow_control(request: HttpRequest) -> None:
    """Warn once if daphne serves streams without :func:`alarms.asgi.flow_control`."""
    global _warned_no_flow_control
    if _warned_no_flow_control or "daphne" not in sys.modules:
        return
    if not getattr(request, "scope", {}).get(SCOPE_KEY):
        _warned_no_flow_control = True
        logger.warning(
            "daphne serves alarm streams without backpressure: a client that stops reading "
            "is buffered without bound. Wrap the ASGI application with "
            "alarms.asgi.flow_control (see docs/deployment.md)."
        )


def stream_language(request: HttpRequest) -> str:
    """``?lang=`` when the site speaks it, else the locale Django chose for the request."""
    override = supported_language(request.GET.get("lang"))
    if override:
        return override
    active = translation.get_language() or ""
    return supported_language(active) or settings.LANGUAGE_CODE


def _load(
    broker: BaseBroker,
    request: HttpRequest,
    language: str,
    alarm_ids: list[int],
    since: tuple[int, int] | None,
    head: int,
) -> tuple[ConnectState, Missed | None]:
    session = getattr(request, "session", None)
    expires_at = prime_session(session)
    state = broker.load_viewer(get_user(request), language, alarm_ids, session, expires_at)
    return state, broker.read_missed(state.viewer, since, head) if since is not None else None


async def _events(
    broker: BaseBroker, sub: Subscriber, request: HttpRequest, first: list[bytes]
) -> AsyncIterator[bytes]:
    config = broker.config
    heartbeat = float(config["HEARTBEAT"])
    # Jitter spreads the reconnects of streams that opened together.
    lifetime = float(config["MAX_LIFETIME"]) * random.uniform(0.85, 1.0)
    opened = time.monotonic()
    deadline = opened + lifetime
    # By the first step of the body every middleware has run its response
    # hooks, so the request's thread is not needed again until the end.
    _release_request_thread()
    _slim(request)
    opening = events.encode(retry=int(config["RETRY_MS"])) + events.comment("alarms")
    opening += b"".join(first)
    replayed = len(first)
    first.clear()  # this frame lives as long as the stream
    del request
    try:
        yield opening
        del opening
        # Counted once the server took the bytes (with flow_control: its socket did).
        broker.stats["delivered"] += replayed
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sub.close("lifetime")
            if sub.expires_at is not None:
                # The session may be renewed meanwhile (the broker re-reads it on
                # every access change); at its expiry the stream ends with it.
                left = sub.expires_at - time.time()
                if left <= 0 and not sub.closed:
                    broker.sign_out(sub, "session_expired")
                remaining = min(remaining, left)
            chunks = await sub.next(max(0.0, min(heartbeat, remaining)))
            if chunks:
                yield b"".join(chunks)
                broker.stats["delivered"] += len(chunks)
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
        reason = sub.closed or "client"
        duration = time.monotonic() - opened
        logger.info(
            "stream %d closed (%s) after %.0f s",
            sub.id,
            reason,
            duration,
            extra={
                "event": "stream_closed",
                "stream": sub.id,
                "user": sub.viewer.user_id,
                "address": sub.address,
                "reason": reason,
                "duration_s": round(duration, 1),
            },
        )


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

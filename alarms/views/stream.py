"""``GET /alarms/stream/``: the Server-Sent Events stream of one browser."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import cast

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import translation
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms import events, runtime
from alarms.asgi import SCOPE_KEY
from alarms.broker import get_broker
from alarms.broker.base import BaseBroker
from alarms.broker.connect import connect
from alarms.broker.subscribers import AddressFull, BrokerFull, Subscriber
from alarms.middleware import preferences_read_by_broker
from alarms.translation import default_language, supported_language

logger = logging.getLogger("alarms.stream")
_warned_no_flow_control = False


@preferences_read_by_broker
@never_cache
@require_GET
async def stream(request: HttpRequest) -> HttpResponseBase:
    broker = get_broker()
    await broker.ensure_started()
    _check_flow_control(request)
    language, chosen = requested_language(request)
    since = events.parse_event_id(
        request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    )
    address = request.META.get("REMOTE_ADDR") or ""
    # Sessions, the user and their receipts are read in the broker's own
    # database threads, so a storm of connects cannot open a connection each.
    try:
        opened = await connect(broker, request, language, since, address, chosen=chosen)
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
    sub, first, state = opened.sub, opened.first, opened.state
    language = state.viewer.language
    logger.info(
        "stream %d opened: user %s, %s, %s (%d events)",
        sub.id,
        state.viewer.user_id or "-",
        language,
        "resumed" if opened.resumed else "snapshot",
        len(first),
        extra={
            "event": "stream_opened",
            "stream": sub.id,
            "user": state.viewer.user_id,
            "language": language,
            "address": address,
            "resumed": opened.resumed,
            "replayed": len(first),
        },
    )
    # GZipMiddleware reads Accept-Encoding after the view: without it there, it
    # leaves the stream alone (a compressor buffers, and events would stall).
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    response = EventStreamResponse(
        _events(broker, sub, request, first), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache, no-store, must-revalidate, private"
    response["X-Accel-Buffering"] = "no"
    response["Content-Language"] = state.viewer.language
    response["Vary"] = "Cookie, Accept-Language"
    return response


# Django's property (the stubs call it a plain descriptor), and its setter.
_CONTENT = cast(property, vars(StreamingHttpResponse)["streaming_content"])
_set_content = cast(Callable[[StreamingHttpResponse, object], None], _CONTENT.fset)


class EventStreamResponse(StreamingHttpResponse):
    """A streaming response that closes the view's generator when the server stops.

    Django's ``StreamingHttpResponse`` wraps the generator twice and its handler
    closes only the outer wrapper; the view's own generator, whose ``finally``
    frees the stream's broker slot, is left to the garbage collector. When an
    exception's traceback holds it in a cycle (a send that stalled, a dropped
    socket), that can take minutes, and the slot, the per-address count and the
    ``alarms_streams_open`` gauge stay taken meanwhile.
    """

    def __init__(self, events: AsyncGenerator[bytes, None], **kwargs: object) -> None:
        super().__init__(events, **kwargs)
        self._events = events
        self._replaced = False

    @_CONTENT.setter
    def streaming_content(self, value: object) -> None:
        # Set again after __init__ (a middleware wrapping the events), the
        # content is that wrapper: detach_events hands nothing over then.
        self._replaced = hasattr(self, "_events")
        _set_content(self, value)

    def detach_events(self) -> AsyncGenerator[bytes, None] | None:
        """The view's generator, for a server that sends its bytes (already
        bytes) itself and lets go of this response for the stream's life
        (``alarms.direct``); None when the content was replaced since."""
        return None if self._replaced else self._events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aclosing(self._events):
            async for part in super().__aiter__():
                yield part


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
    """``?lang=`` when the site speaks it, else the locale Django chose for the
    request (a signed-in user's stored one with ``PreferencesMiddleware``)."""
    return requested_language(request)[0]


def requested_language(request: HttpRequest) -> tuple[str, bool]:
    """The language a stream asks for, and whether it was asked for by ``?lang=``.

    The stream then speaks ``?lang=``, else the user's stored language (read by
    the broker with the user, ``Reads.viewers``), else the locale Django chose
    for the request (the cookie, Accept-Language).
    """
    override = supported_language(request.GET.get("lang"))
    if override:
        return override, True
    active = translation.get_language() or ""
    return supported_language(active) or default_language(), False


async def _events(
    broker: BaseBroker, sub: Subscriber, request: HttpRequest, first: list[bytes]
) -> AsyncGenerator[bytes, None]:
    config = broker.config
    heartbeat = float(config["HEARTBEAT"])
    # Jitter spreads the reconnects of streams that opened together.
    lifetime = float(config["MAX_LIFETIME"]) * random.uniform(0.85, 1.0)
    opened = time.monotonic()
    deadline = opened + lifetime
    # By the first step of the body every middleware has run its response
    # hooks, so the request's thread is not needed again until the end.
    runtime.release_request_thread()
    runtime.slim_request(request)
    opening = events.encode(retry=int(config["RETRY_MS"])) + events.comment("alarms")
    opening += b"".join(first)
    replayed = len(first)
    first.clear()  # this frame lives as long as the stream
    del request
    try:
        yield opening
        del opening
        # Counted once the server took the bytes (with flow_control: its socket did).
        broker.counters.delivered += replayed
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
                broker.counters.delivered += len(chunks)
            if sub.closed:
                closing = events.comment(f"closed: {sub.closed}")
                if sub.closed in ("shutdown", "preferences"):
                    # This process is going away, or the user's preferences changed
                    # (a new language, a new mute floor): come back at once, spread
                    # over a second.
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

"""Backpressure for event streams under daphne: wrap the ASGI application.

    from alarms.asgi import flow_control
    application = flow_control(get_asgi_application())

ASGI servers such as uvicorn and hypercorn make ``await send(...)`` wait while
the client's socket is full, so a stream whose client stopped reading stops
producing. Daphne does not: every chunk is appended to Twisted's write buffer
at once, and a client that never reads grows the server's memory for as long
as the stream lives. This wrapper restores the usual ASGI contract for
``text/event-stream`` responses: it registers itself as the Twisted request's
streaming producer, and after each chunk waits while Twisted says its buffer
(64 KiB) is full. A socket that stays full for ``ALARMS["SLOW_CLIENT_TIMEOUT"]``
seconds is aborted, which frees the buffered data at once; the client, if it
is still there, reconnects and replays from its ``Last-Event-ID``.

While the stream waits, the broker keeps queueing its events; past
``QUEUE_SIZE`` it closes the stream as too slow, so memory per stuck client is
bounded either way. Other streams are not held up: nothing here blocks the loop.

Under any other server (uvicorn, hypercorn), whose ``send`` already waits while
the socket is full, the wrapper only bounds that wait: an event stream whose
``send`` waits ``SLOW_CLIENT_TIMEOUT`` seconds is ended (its broker slot freed)
and the application returns without finishing the response, which such servers
answer by closing the connection (uvicorn logs one line about it). Without it, a
client that keeps its connection open and reads nothing would hold its stream
until TCP gives up, which a zero-window client can put off for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, MutableMapping
from typing import Any

from alarms.conf import get_config
from alarms.direct import direct_streams

__all__ = ["SCOPE_KEY", "direct_streams", "flow_control"]

logger = logging.getLogger("alarms.stream")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Set in the scope of requests served through :func:`flow_control`.
SCOPE_KEY = "alarms.flow_control"


def flow_control(application: ASGIApp) -> ASGIApp:
    """Wrap an ASGI application so event streams get backpressure under daphne."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await application(scope, receive, send)
            return
        request = _twisted_request(send)
        if request is None:
            await _with_send_timeout(application, scope, receive, send)
            return
        valve = _Valve(request, float(get_config()["SLOW_CLIENT_TIMEOUT"]))
        scope[SCOPE_KEY] = True

        async def send_with_backpressure(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                await send(message)
                if _is_event_stream(message):
                    valve.open()
            elif kind == "http.response.body" and valve.registered:
                if not message.get("more_body", False):
                    # The stream's last bytes. A client that still reads nothing (a
                    # stream the broker closed as too slow) is dropped all the same,
                    # or its connection would hold Twisted's buffer for good.
                    if not await valve.writable(scope):
                        return
                    # Twisted complains about a producer left registered at finish().
                    valve.close()
                    await send(message)
                    return
                await send(message)
                await valve.writable(scope)
            else:
                await send(message)

        try:
            await application(scope, receive, send_with_backpressure)
        finally:
            valve.close()

    return app


class _Stalled(Exception):
    """An event stream's ``send`` waited ``SLOW_CLIENT_TIMEOUT`` on a full socket."""


async def _with_send_timeout(
    application: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Under a server whose ``send`` waits on a full socket: bound that wait for streams."""
    timeout = float(get_config()["SLOW_CLIENT_TIMEOUT"])
    streaming = False
    scope[SCOPE_KEY] = True

    async def send_within_timeout(message: Message) -> None:
        nonlocal streaming
        if message.get("type") == "http.response.start":
            streaming = _is_event_stream(message)
        if not (streaming and message.get("type") == "http.response.body"):
            await send(message)
            return
        sending = send(message)
        if not isinstance(sending, Coroutine):
            sending = _awaited(sending)
        try:
            # One step first: nearly every send is done in it (the socket took the
            # bytes), and then no timer is made. At 10,000 streams a broadcast's
            # timers cost a tenth of its CPU (docs/performance.md).
            waiting_on = sending.send(None)
        except StopIteration:
            return
        started = time.monotonic()  # when it began to wait: the first step took no time
        try:
            async with asyncio.timeout(timeout):
                await _Rest(sending, waiting_on)
        except TimeoutError:
            _stalled(scope, time.monotonic() - started)
            raise _Stalled from None

    # The response stays unfinished: the server closes the connection.
    with contextlib.suppress(_Stalled):
        await application(scope, receive, send_within_timeout)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


class _Rest:
    """Await the rest of a coroutine already stepped once, which yielded
    ``waiting_on`` to the task: what ``await`` would have done from there."""

    __slots__ = ("coroutine", "waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self.coroutine = coroutine
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, None, None]:
        coroutine, value = self.coroutine, self.waiting_on
        while True:
            try:
                yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # the task's throw (a cancel, the timeout's)
                try:
                    value = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coroutine.send(None)
                except StopIteration:
                    return


def _stalled(scope: Scope, waited: float) -> None:
    client = scope.get("client") or ("-", 0)
    logger.warning(
        "stream dropped: client %s read nothing for %.0f s (stalled)",
        client[0],
        waited,
        extra={"event": "stream_stalled", "address": client[0], "waited_s": round(waited, 1)},
    )
    from alarms.broker import get_broker

    get_broker().counters.aborted_stalled += 1


def _twisted_request(send: Send) -> Any | None:
    """Daphne's request object behind ``send``, or None under another server.

    Daphne hands each application ``partial(server.handle_reply, protocol)``,
    the protocol being a ``twisted.web.http.Request``.
    """
    if "twisted.web.http" not in sys.modules or not isinstance(send, functools.partial):
        return None
    from twisted.web.http import Request

    request = send.args[0] if send.args else None
    return request if isinstance(request, Request) else None


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            media_type: bytes = value.split(b";")[0].strip().lower()
            return media_type == b"text/event-stream"
    return False


class _Valve:
    """A Twisted streaming producer that turns pause/resume into an awaitable."""

    # One per stream, for its life: no __dict__, and a future only while paused
    # (an asyncio.Event holds a deque of waiters from the start).
    __slots__ = ("_paused", "_waiter", "registered", "request", "timeout")

    def __init__(self, request: Any, timeout: float) -> None:
        self.request = request
        self.timeout = timeout
        self.registered = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def open(self) -> None:
        if self.request.channel is None or self.request.producer is not None:
            return
        self.request.registerProducer(self, True)
        self.registered = True

    def close(self) -> None:
        if not self.registered:
            return
        self.registered = False
        self._resume()
        if self.request.channel is not None:
            self.request.unregisterProducer()
        else:
            self.request.producer = None  # the connection is gone with its channel

    # IPushProducer, called by Twisted on this (the loop's) thread.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._resume()

    def stopProducing(self) -> None:
        self._resume()

    def _resume(self) -> None:
        self._paused = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def writable(self, scope: Scope) -> bool:
        """Wait while the socket is full; False if it stayed full and was aborted."""
        if not self._paused:
            return True
        started = time.monotonic()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            self._abort(scope, time.monotonic() - started)
            return False
        finally:
            self._waiter = None
        return True

    def _abort(self, scope: Scope, waited: float) -> None:
        channel = self.request.channel
        transport = getattr(channel, "transport", None)
        _stalled(scope, waited)
        self.close()
        if transport is not None:
            # Dropping the connection frees Twisted's buffer; daphne then tells
            # the application the client is gone, which ends the stream.
            transport.abortConnection()

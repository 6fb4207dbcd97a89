"""A stream the server stops sending frees its broker slot at once, not at the next
garbage collection.

In-process, through the same ASGI stack a server runs (``flow_control`` around
``direct_streams`` or Django's own handler), with the collector off: what frees
the slot must be the response closing the view's generator, not the collector
finding it in a cycle later (which, in a quiet server, can take minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.test import override_settings
from django.utils.module_loading import import_string

from alarms import api
from alarms.asgi import direct_streams, flow_control
from alarms.broker import broker_path
from alarms.broker.base import BaseBroker
from alarms.views.stream import EventStreamResponse
from tests.helpers import client_that_stays, en, run_broker, until

pytestmark = pytest.mark.django_db(transaction=True)

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/alarms/stream/",
    "raw_path": b"/alarms/stream/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"testserver"), (b"accept", b"text/event-stream")],
    "client": ("127.0.0.1", 40000),
    "server": ("testserver", 80),
}


@pytest.fixture(autouse=True)
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


APPLICATIONS = {
    "direct": lambda: flow_control(direct_streams(get_asgi_application())),
    "django": lambda: flow_control(get_asgi_application()),
}


async def stalls(message: dict[str, Any]) -> None:
    """A socket that never drains: flow_control ends the stream after
    SLOW_CLIENT_TIMEOUT, as a server's send that waits on a full socket makes it."""
    if message["type"] == "http.response.body":
        await asyncio.Event().wait()


async def fails(message: dict[str, Any]) -> None:
    """A server whose socket went away under it."""
    if message["type"] == "http.response.body":
        raise OSError("connection reset")


@pytest.mark.parametrize("send", [stalls, fails], ids=["stalled", "failed"])
@pytest.mark.parametrize("path", APPLICATIONS)
@override_settings(ALARMS={"SLOW_CLIENT_TIMEOUT": 0.2, "SHUTDOWN_GRACE": 0})
def test_a_stream_the_server_stops_sending_frees_its_slot(
    path: str, send: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    application = APPLICATIONS[path]()

    async def test(broker: BaseBroker) -> None:
        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                assert len(broker.subscribers) == 1
            await send(message)

        with contextlib.suppress(OSError):
            await asyncio.wait_for(application(dict(SCOPE), client_that_stays(), counted_send), 30)
        assert len(broker.subscribers) == 0

    run_broker(import_string(broker_path())(), test)


@pytest.mark.parametrize("path", APPLICATIONS)
def test_a_client_that_goes_away_ends_its_stream_as_a_return(path: str) -> None:
    application = APPLICATIONS[path]()

    async def test(broker: BaseBroker) -> None:
        gone = asyncio.Event()
        opened = asyncio.Event()
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                opened.set()

        serving = asyncio.create_task(application(dict(SCOPE), receive, send))
        await asyncio.wait_for(opened.wait(), 30)
        assert len(broker.subscribers) == 1
        gone.set()
        await asyncio.wait_for(serving, 30)  # returned: not cancelled, no error
        assert len(broker.subscribers) == 0

    run_broker(import_string(broker_path())(), test)


def test_an_event_stream_response_hands_over_its_events_until_replaced() -> None:
    async def events() -> AsyncGenerator[bytes, None]:
        yield b": alarms\n\n"

    mine = events()
    response = EventStreamResponse(mine, content_type="text/event-stream")
    assert response.detach_events() is mine
    # A middleware that wraps the content: its wrapper is what must be sent.
    response.streaming_content = [b"wrapped"]
    assert response.detach_events() is None
    assert list(response) == [b"wrapped"]


@override_settings(ALARMS={"SLOW_CLIENT_TIMEOUT": 7.25, "SHUTDOWN_GRACE": 0})
def test_a_send_the_socket_takes_at_once_makes_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """flow_control bounds a waiting send with a timeout, made only once the send
    waits: a broadcast's 10,000 writes each made one before (a tenth of its CPU)."""
    import alarms.asgi

    entered: list[float | None] = []
    real_timeout = asyncio.timeout

    def counted(delay: float | None) -> asyncio.Timeout:
        if delay == 7.25:  # the module is asyncio's own: count flow_control's only
            entered.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(alarms.asgi.asyncio, "timeout", counted)
    application = APPLICATIONS["direct"]()

    async def test(broker: BaseBroker) -> None:
        bodies: list[bytes] = []
        socket_full = True

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if socket_full:
                    await asyncio.sleep(0.05)  # waits once, as on a full socket
                bodies.append(message.get("body", b""))

        serving = asyncio.create_task(application(dict(SCOPE), client_that_stays(), send))
        await until(lambda: len(bodies) == 1, 10)
        assert entered == [7.25]  # the opening waited: bounded
        socket_full = False
        await sync_to_async(api.send_alarm)(en("At once"), audience="everyone")
        await until(lambda: len(bodies) == 2, 10)
        assert b"At once" in bodies[1]
        assert entered == [7.25]  # taken at once: no timer
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)

    run_broker(import_string(broker_path())(), test)

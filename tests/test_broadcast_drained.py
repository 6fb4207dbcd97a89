"""The broker logs when every stream of its process has taken a broadcast.

In-process, through ``direct_streams``: a stream whose socket takes nothing
holds an alarm queued to it; the line comes only once the socket is let go and
the stream has taken the alarm, so a slow fan-out can be told apart from a slow
journal read (logged before it) and from the proxy and the browsers after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.asgi import get_asgi_application
from django.test import Client, override_settings
from django.utils.module_loading import import_string

from alarms import api
from alarms.asgi import direct_streams
from alarms.broker import broker_path
from alarms.broker.base import BaseBroker
from tests.helpers import client_that_stays, en, run_broker
from tests.test_receipts_yield import scope, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LINE = "every one took it"


def test_the_line_comes_once_the_stream_took_the_broadcast(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = get_user_model().objects.create_user("dora", password="pw")
    client = Client()
    client.force_login(reader)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    application = direct_streams(get_asgi_application())
    seen: dict[str, Any] = {}

    def drained() -> list[str]:
        return [r.getMessage() for r in caplog.records if LINE in r.getMessage()]

    async def test(broker: BaseBroker) -> None:
        socket_free = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                await socket_free.wait()

        get = scope("GET", "/alarms/stream/", [(b"cookie", cookie.encode())])
        stream = asyncio.create_task(application(get, client_that_stays(b""), send))
        await wait_until(lambda: len(broker.subscribers) == 1, "the stream")
        await sync_to_async(api.send_alarm)(en("Held"), users=[reader])
        backlog = broker.subscribers.backlog
        await wait_until(lambda: backlog.count == 1, "the alarm queued to the stream")
        await asyncio.sleep(0.2)
        seen["while_held"] = drained()
        socket_free.set()
        await wait_until(lambda: bool(drained()), "the line")
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)

    with (
        caplog.at_level(logging.INFO, logger="alarms.broker"),
        override_settings(ALARMS={"SHUTDOWN_GRACE": 0}),
    ):
        run_broker(import_string(broker_path())(), test)
    assert seen["while_held"] == []
    [line] = drained()
    assert line.startswith("broadcast to 1 streams: every one took it "), line

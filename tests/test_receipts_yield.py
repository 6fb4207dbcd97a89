"""A receipt waits while a broadcast is being delivered to this process's streams.

In-process, through ``direct_streams`` as a server runs it: a stream whose
socket has not taken its opening yet holds an alarm queued to it, undelivered;
a dismissal posted meanwhile is recorded only once that stream has taken it
(or ``RECEIPTS_YIELD`` seconds have passed), since recording a dismissal can
wait a moment and showing an alarm cannot.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
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
from alarms.broker.cache import Viewer
from alarms.broker.subscribers import Subscriber, Subscribers
from alarms.models import AlarmReceipt
from tests.helpers import client_that_stays, en, run_broker

pytestmark = pytest.mark.django_db(transaction=True)


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run(yield_seconds: float, stays_held: bool = False) -> tuple[bool, Any, Any, int]:
    """Post a dismissal while an alarm waits, undelivered, in a stream's queue.

    Returns: whether the stream had been let go (and so took the alarm) when the
    receipt was answered, its status and body, and the dismissals saved. With
    ``stays_held``, the receipt is given a second after the stream took the
    alarm, then given up (status and body None when it was not answered).
    """
    reader = get_user_model().objects.create_user("rhea", password="pw")
    alarm = api.send_alarm(en("First"), users=[reader])
    client = Client()
    client.force_login(reader)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    token = secrets.token_hex(16)  # a CSRF secret of our own: cookie and header agree
    cookie = f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={token}".encode()
    application = direct_streams(get_asgi_application())
    outcome: dict[str, Any] = {}

    async def test(broker: BaseBroker) -> None:
        socket_free = asyncio.Event()

        async def stream_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                await socket_free.wait()  # the socket takes nothing until let go

        get = scope("GET", "/alarms/stream/", [(b"cookie", cookie)])
        stream = asyncio.create_task(application(get, client_that_stays(b""), stream_send))
        await wait_until(lambda: len(broker.subscribers) == 1, "the stream")
        await sync_to_async(api.send_alarm)(en("Second"), users=[reader])
        backlog = broker.subscribers.backlog
        await wait_until(lambda: backlog.count == 1, "the alarm queued to the stream")

        answer: list[dict[str, Any]] = []

        async def receipt_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # (Not the backlog: the dismissal's own event may be queued by now.)
                outcome["let_go"] = socket_free.is_set()
            answer.append(message)

        headers = [
            (b"cookie", cookie),
            (b"x-csrftoken", token.encode()),
            (b"content-type", b"application/json"),
        ]
        body = json.dumps({"ids": [alarm.pk], "language": "en"}).encode()
        post = scope("POST", "/alarms/dismiss/", headers)
        receipt = asyncio.create_task(application(post, client_that_stays(body), receipt_send))
        # Without a yield it is answered while the stream still holds the alarm
        # (however slow the machine); with one, not before the stream is let go.
        await asyncio.wait([receipt], timeout=0.5 if yield_seconds else 20)
        socket_free.set()
        if stays_held:
            await wait_until(lambda: backlog.count == 0, "the stream to take the alarm")
            await asyncio.wait([receipt], timeout=1.0)
            # Unanswered, "let go" is whether the stream still had taken it when given up on.
            outcome.setdefault("let_go", backlog.count == 0)
            receipt.cancel()
            await asyncio.gather(receipt, return_exceptions=True)
        else:
            await asyncio.wait_for(receipt, 20)
        outcome["status"] = answer[0]["status"] if answer else None
        outcome["body"] = answer[1]["body"] if len(answer) > 1 else None
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)

    with override_settings(ALARMS={"RECEIPTS_YIELD": yield_seconds, "SHUTDOWN_GRACE": 0}):
        run_broker(import_string(broker_path())(), test)
    saved = AlarmReceipt.objects.filter(user=reader, alarm=alarm, dismissed_at__isnull=False)
    return (
        outcome["let_go"],
        outcome["status"],
        outcome["body"],
        saved.count(),
    )


def test_a_receipt_waits_until_the_broadcast_is_delivered() -> None:
    let_go, status, body, saved = run(yield_seconds=60)

    # Not answered while the stream held the alarm undelivered; then recorded.
    assert let_go
    assert (status, json.loads(body), saved) == (200, {"updated": 1}, 1)


def test_without_the_yield_a_receipt_does_not_wait() -> None:
    let_go, status, body, saved = run(yield_seconds=0)

    # Answered while the alarm still sat in the stream's queue.
    assert not let_go
    assert (status, json.loads(body), saved) == (200, {"updated": 1}, 1)


def test_the_backlog_counts_streams_holding_untaken_events() -> None:
    async def test() -> None:
        subscribers = Subscribers()
        backlog = subscribers.backlog
        viewer = Viewer()
        a, b = (Subscriber(viewer, 8, backlog=backlog) for _ in range(2))
        subscribers.add(a, 10)
        subscribers.add(b, 10)
        a.push(b"1")
        a.push(b"2")  # one stream, however many events
        b.push(b"3")
        assert backlog.count == 2
        waiting = asyncio.create_task(backlog.empty(30))
        assert await a.next(0) == [b"1", b"2"]
        assert backlog.count == 1
        subscribers.remove(b)  # left with its event untaken
        assert backlog.count == 0
        await asyncio.wait_for(waiting, 5)
        b.push(b"4")  # a stream that left counts no more
        assert backlog.count == 0
        a.push(b"5")
        started = asyncio.get_running_loop().time()
        await backlog.empty(0.05)  # gives up after its time
        assert asyncio.get_running_loop().time() - started >= 0.04
        assert backlog.count == 1

    asyncio.run(test())


def test_a_receipt_waits_for_the_hold_after_the_streams_took_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One stream: held 30 s, past the test's wait.
    monkeypatch.setattr(BaseBroker, "receipts_hold_per_stream", 30.0)
    let_go, status, body, saved = run(yield_seconds=60, stays_held=True)

    # The stream took the alarm, and the receipt still waited: not answered, not recorded.
    assert let_go
    assert (status, body, saved) == (None, None, 0)


def test_holds_grow_with_the_streams_and_leave_the_receipts_half_the_time() -> None:
    broker = BaseBroker()
    per = broker.receipts_hold_per_stream

    broker.hold_receipts(100.0, 1000, most=2.0)
    assert broker._hold_until == pytest.approx(100.0 + 1000 * per)
    broker.hold_receipts(100.1, 1000, most=2.0)  # a second alarm while held: longer
    assert broker._hold_until == pytest.approx(100.0 + 2000 * per)
    broker.hold_receipts(100.0, 10**6, most=2.0)  # never past RECEIPTS_YIELD
    assert broker._hold_until == pytest.approx(102.0)
    # After a 2 s hold, none for the next 2 s; then a new one.
    broker.hold_receipts(103.5, 1000, most=2.0)
    assert broker._hold_until == pytest.approx(102.0)
    broker.hold_receipts(104.0, 1000, most=2.0)
    assert broker._hold_until == pytest.approx(104.0 + 1000 * per)
    broker.hold_receipts(110.0, 1000, most=0.0)  # RECEIPTS_YIELD 0: none
    assert broker._hold_until == pytest.approx(110.0)

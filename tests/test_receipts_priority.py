"""The receipts' threads run at a lower CPU priority than the streams' loop.

Through ``direct_streams`` as a server runs it: a ``POST /alarms/dismiss/`` is
answered by a thread of the receipts' pool, and ``request_started`` fires in that
thread, so a receiver there reads the priority the request ran at.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest
from django.core import signals
from django.core.asgi import get_asgi_application
from django.test import override_settings

from alarms.asgi import direct_streams
from alarms.direct import lower_priority
from tests.helpers import client_that_stays
from tests.test_receipts_yield import scope

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread"),
]


def priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def priority_of_a_receipt(nice: int) -> tuple[int, int, str]:
    """Post a dismissal; return its status, the priority it ran at and its thread's name."""
    seen: dict[str, Any] = {}

    def started(**kwargs: Any) -> None:
        seen["priority"] = priority()
        seen["thread"] = threading.current_thread().name

    async def post() -> int:
        application = direct_streams(get_asgi_application())
        answer: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            answer.append(message)

        await application(scope("POST", "/alarms/dismiss/", []), client_that_stays(b""), send)
        return answer[0]["status"]

    signals.request_started.connect(started)
    try:
        with override_settings(ALARMS={"RECEIPTS_NICE": nice}):
            status = asyncio.run(post())
    finally:
        signals.request_started.disconnect(started)
    return status, seen["priority"], seen["thread"]


def test_a_receipt_runs_niced_in_the_receipts_thread() -> None:
    status, ran_at, thread = priority_of_a_receipt(nice=10)

    # Refused (no session, no CSRF token), but by Django's chain in a receipts'
    # thread, ten steps below this one's priority.
    assert status == 403
    assert thread.startswith("alarms-receipts")
    assert ran_at == min(19, priority() + 10)


def test_with_no_nice_a_receipt_runs_at_the_process_priority() -> None:
    status, ran_at, thread = priority_of_a_receipt(nice=0)

    assert (status, thread[:15], ran_at) == (403, "alarms-receipts", priority())


def test_the_nice_value_stops_at_19() -> None:
    def lowered(nice: int) -> int:
        done: list[int] = []

        def run() -> None:
            lower_priority(nice)
            done.append(priority())

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return done[0]

    # Only this thread's priority changes, never the process's.
    assert (lowered(3), lowered(40), priority()) == (
        min(19, priority() + 3),
        19,
        priority(),
    )

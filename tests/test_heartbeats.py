"""The streams' waits are timed by shared ticks (``Heartbeats``), not a timer each."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from alarms.broker.cache import Viewer
from alarms.broker.subscribers import Heartbeats, Subscriber, Subscribers

TICK = Heartbeats.TICK


def streams(count: int) -> tuple[Subscribers, list[Subscriber]]:
    subscribers = Subscribers()
    subs = [
        Subscriber(Viewer(), 8, backlog=subscribers.backlog, heartbeats=subscribers.heartbeats)
        for _ in range(count)
    ]
    for sub in subs:
        subscribers.add(sub, 10)
    return subscribers, subs


def scheduled(loop: Any) -> int:
    """Timers the loop holds that are not cancelled."""
    return sum(1 for handle in loop._scheduled if not handle.cancelled())


def test_a_hundred_waits_make_a_timer_per_tick_not_one_each() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        _subscribers, subs = streams(100)
        before = scheduled(loop)
        waits = [asyncio.create_task(sub.next(1.0)) for sub in subs]
        await asyncio.sleep(0)  # every wait has begun
        # The waits began within one turn of the loop: one tick, or two across a boundary.
        assert scheduled(loop) - before <= 2
        started = loop.time()
        assert await asyncio.gather(*waits) == [None] * 100  # each ran out
        took = loop.time() - started
        assert 1.0 - 0.05 <= took <= 1.0 + TICK + 0.5

    asyncio.run(test())


def test_an_event_ends_a_wait_and_its_tick_ends_no_later_wait() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        _subscribers, [sub] = streams(1)
        waiting = asyncio.create_task(sub.next(1.0))  # its tick: 1.0 to 1.25 s from now
        await asyncio.sleep(0)
        sub.push(b"event")
        assert await waiting == [b"event"]
        # Short waits keep an exact timer each; the tick of the wait the event
        # ended, due while the second of them runs, must not end it early.
        assert await sub.next(0.5) is None
        started = loop.time()
        assert await sub.next(0.9) is None
        assert loop.time() - started >= 0.85

    asyncio.run(test())


@pytest.mark.parametrize("how", ["leave", "close"])
def test_a_stream_that_leaves_is_held_by_no_tick(how: str) -> None:
    async def test() -> None:
        subscribers, [sub, other] = streams(2)
        waiting = asyncio.create_task(sub.next(20))
        other_waiting = asyncio.create_task(other.next(20))
        await asyncio.sleep(0)
        held = [s for ticks in subscribers.heartbeats._ticks.values() for s in ticks]
        assert sub in held and other in held
        if how == "close":
            sub.close("shutdown")
            assert await waiting is None
        else:
            waiting.cancel()
        subscribers.remove(sub)
        held = [s for ticks in subscribers.heartbeats._ticks.values() for s in ticks]
        assert sub not in held and other in held
        other_waiting.cancel()

    asyncio.run(test())

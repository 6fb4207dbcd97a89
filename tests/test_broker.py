"""The broker in-process, one shared test class run against every backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import OperationalError, connection, connections
from django.test import Client, RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import alarms.broker as broker_module
from alarms import api
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.connect import replay, snapshot
from alarms.broker.memory import MemoryBroker
from alarms.broker.postgres import PostgresBroker
from alarms.broker.reads import ConnectState
from alarms.broker.subscribers import AddressFull, BrokerFull
from alarms.models import Alarm
from alarms.views.stream import stream as stream_view
from tests.helpers import run_broker, until, with_broker
from tests.sse import parse


def en_ko(title: str) -> dict[str, dict[str, str]]:
    """An alarm's text in English and (the title marked) in Korean."""
    return {
        "en": {"title": title, "message": "m"},
        "ko": {"title": f"{title} (ko)", "message": "m"},
    }


def viewer(user: Any = None, language: str = "en") -> ConnectState:
    if user is None:
        return ConnectState(Viewer(language=language), set(), set())
    return ConnectState(Viewer(user_id=user.pk, language=language), set(), set())


class Clock:
    """The broker's two clocks, its event loop's and the wall clock, as the test moves them.

    Both keep the real pace from where the test put them; :meth:`advance` moves
    them on at once. A test of timers then waits for no timer of its own, and
    none runs out early because a busy machine was slow to get the test there.
    """

    def __init__(self, wall: Callable[[], datetime]) -> None:
        self.offset = 0.0
        self._wall = wall

    def now(self) -> datetime:
        """For ``django.utils.timezone.now``."""
        return self._wall() + timedelta(seconds=self.offset)

    def new_loop(self) -> asyncio.AbstractEventLoop:
        clock = self

        class ClockLoop(asyncio.SelectorEventLoop):
            def time(self) -> float:
                return super().time() + clock.offset

        return ClockLoop()

    async def advance(self, seconds: float) -> None:
        self.offset += seconds
        # The loop runs the timers that fell due in the order of their times:
        # every one the jump passed runs before this sleep's.
        await asyncio.sleep(0.001)


@pytest.fixture
def clock() -> Clock:
    return Clock(timezone.now)


class BrokerContract:
    """What every broker must do. Subclasses say which broker and settings."""

    broker_class: type[BaseBroker]
    settings: dict[str, Any] = {}

    @pytest.fixture
    def run(
        self, transactional_db: None, request: pytest.FixtureRequest
    ) -> Iterator[Callable[..., Any]]:
        """Run ``test(broker)`` with a started broker on a fresh event loop (one on the
        test's ``clock`` if it asks for one)."""
        clock = request.getfixturevalue("clock") if "clock" in request.fixturenames else None

        def runner(test: Callable[[BaseBroker], Coroutine[Any, Any, None]]) -> None:
            if clock is None:
                run_broker(self.broker_class(), test)
            else:
                with asyncio.Runner(loop_factory=clock.new_loop) as runner:
                    runner.run(with_broker(self.broker_class(), test))

        with override_settings(ALARMS=self.settings):
            yield runner

    def test_starts_from_the_table(self, run):
        live = api.send_alarm(en_ko("Live"))
        later = api.send_alarm(en_ko("Later"), publish_at=timezone.now() + timedelta(hours=1))
        gone = api.send_alarm(en_ko("Gone"))
        api.withdraw([gone])

        async def test(broker: BaseBroker) -> None:
            assert set(broker.alarms) == {live.pk, later.pk}
            assert broker.alarms[live.pk].announced
            assert not broker.alarms[later.pk].announced
            assert broker.head > 0

        run(test)

    def test_a_commit_reaches_subscribers_encoded_once_per_language(self, run):
        async def test(broker: BaseBroker) -> None:
            en_1, en_2 = broker.subscribe(viewer()), broker.subscribe(viewer())
            ko = broker.subscribe(viewer(language="ko"))
            await sync_to_async(api.send_alarm)(en_ko("Hello"), audience="everyone")
            got = [await sub.next(3) for sub in (en_1, en_2, ko)]
            assert got[0][0] is got[1][0]  # the same bytes object, encoded once
            assert parse(got[0][0].decode())[0].json()["title"] == "Hello"
            assert parse(got[2][0].decode())[0].json()["title"] == "Hello (ko)"

        run(test)

    def test_slow_subscriber_is_closed_not_buffered_forever(self, run):
        async def test(broker: BaseBroker) -> None:
            broker.config = {**broker.config, "QUEUE_SIZE": 2}
            slow = broker.subscribe(viewer())
            for i in range(3):
                await sync_to_async(api.send_alarm)(en_ko(f"n{i}"), audience="everyone")
                await until(lambda n=i + 1: broker.counters.events >= n)
            assert slow.closed == "slow"

        run(test)

    def test_per_user_and_process_caps(self, run):
        user = get_user_model().objects.create_user("capped")

        async def test(broker: BaseBroker) -> None:
            broker.config = {**broker.config, "MAX_STREAMS_PER_USER": 2, "MAX_STREAMS": 4}
            first, second, third = (broker.subscribe(viewer(user)) for _ in range(3))
            assert (first.closed, second.closed, third.closed) == ("replaced", None, None)
            broker.unsubscribe(first)
            broker.subscribe(viewer())
            broker.subscribe(viewer())
            with pytest.raises(BrokerFull):
                broker.subscribe(viewer())

        run(test)

    def test_per_address_cap_refuses_new_streams(self, run):
        async def test(broker: BaseBroker) -> None:
            broker.config = {**broker.config, "MAX_STREAMS_PER_ADDRESS": 2}
            first = broker.subscribe(viewer(), "10.0.0.1")
            broker.subscribe(viewer(), "10.0.0.1")
            with pytest.raises(AddressFull):
                broker.subscribe(viewer(), "10.0.0.1")
            broker.subscribe(viewer(), "10.0.0.2")  # another address is not affected
            broker.unsubscribe(first)
            broker.unsubscribe(first)  # twice is harmless: the count stays right
            broker.subscribe(viewer(), "10.0.0.1")
            assert broker.subscribers.by_address == {"10.0.0.1": 2, "10.0.0.2": 1}
            assert first.closed is None  # existing streams are never closed for it

        run(test)

    def test_a_link_written_around_the_validators_is_not_streamed(self, run):
        alarm = api.send_alarm(en_ko("Bad link"), audience="everyone")
        # As raw SQL or a careless migration could: no validator runs.
        Alarm.objects.filter(pk=alarm.pk).update(url="javascript:alert(1)")

        async def test(broker: BaseBroker) -> None:
            sub = broker.subscribe(viewer())
            [chunk] = snapshot(broker, sub, set())
            assert parse(chunk.decode())[0].json()["url"] == ""

        run(test)

    def test_a_resume_does_not_replay_what_reached_the_queue_meanwhile(self, run):
        """An alarm fanned out while a resuming stream reads the journal comes once."""
        api.send_alarm(en_ko("Before"), audience="everyone")

        async def test(broker: BaseBroker) -> None:
            head, since = broker.head, (broker.head, int(time.time() * 1000))
            sub = broker.subscribe(viewer())
            sub.tracking = set()  # as the stream view does before its journal read
            missed = await broker.run_db(broker.reads.missed, sub.viewer, since, head)
            await sync_to_async(api.send_alarm)(en_ko("During"), audience="everyone")
            queued = await sub.next(3)
            assert queued
            replayed = replay(broker, sub, missed)
            titles = [e.json()["title"] for c in replayed + queued for e in parse(c.decode())]
            assert titles.count("During") == 1
            assert "Before" not in titles  # published before the resume point

        run(test)

    def test_a_resume_reads_what_came_between_its_load_and_its_subscription(self, run):
        """The stream view reads what a reader missed in the same trip as the reader, up to
        the head of that moment; rows fanned out before the stream subscribed reach
        neither that read nor the queue, and must be read after it."""
        old = api.send_alarm(en_ko("Old"), audience="everyone")

        def edit() -> None:
            translation = old.translations.get(language_code="en")
            translation.title = "Old, edited"
            translation.save()

        async def test(broker: BaseBroker) -> None:
            since = f"{broker.head}-{int(time.time() * 1000)}"
            real_run_db = broker.run_db
            trips = 0

            async def run_db(func: Callable[..., Any], *args: Any) -> Any:
                nonlocal trips
                result = await real_run_db(func, *args)
                trips += 1
                if trips == 1:  # the load: an edit reaches the broker before the subscription
                    head = broker.head
                    await sync_to_async(edit)()
                    await until(lambda: broker.head > head, 10)
                return result

            broker.run_db = run_db  # type: ignore[method-assign]
            request = RequestFactory().get("/alarms/stream/", HTTP_LAST_EVENT_ID=since)
            request.session = SessionStore()
            response = await stream_view(request)
            body = aiter(response)
            try:
                first = await anext(body)
            finally:
                await body.aclose()
            replayed = [e.json()["title"] for e in parse(first.decode()) if e.event == "alarm"]
            assert replayed == ["Old, edited"]
            assert trips == 2

        run(test)

    def test_schedule_runs_on_the_brokers_clock(self, run, clock, monkeypatch):
        monkeypatch.setattr(timezone, "now", clock.now)  # the broker's wall clock too

        async def test(broker: BaseBroker) -> None:
            sub = broker.subscribe(viewer())
            now = timezone.now()
            alarm = await sync_to_async(api.send_alarm)(
                en_ko("Timed"),
                audience="everyone",
                publish_at=now + timedelta(seconds=10),
                expires_at=now + timedelta(seconds=20),
            )
            await until(lambda: alarm.pk in broker.alarms, 10)
            assert await sub.next(0) is None  # not before its time
            # Short of POLL_INTERVAL: only the broker's timer can find the time has come.
            await clock.advance(11)
            first = await sub.next(10)
            assert first, "not published at its time"
            assert parse(first[0].decode())[0].event == "alarm"
            # From publication to expiry: the alarm's own NOTIFYs (one per row of
            # its transaction) were read long before, and the timer needs none.
            reads = broker.counters.reads
            await clock.advance(10)
            second = await sub.next(10)
            assert second, "not retracted at its expiry"
            assert parse(second[0].decode())[0].event == "retract"
            assert alarm.pk not in broker.alarms
            if isinstance(broker, PostgresBroker):
                assert broker.counters.reads == reads  # the timer needed no query

        run(test)

    def test_a_resume_ahead_of_the_expiry_timer_retracts_once(self, run, clock, monkeypatch):
        """An alarm expired while the reader was away, and the broker's own timer has not
        retracted it yet when the reader resumes: the retract comes once, not from the
        replay and then again from the timer."""
        monkeypatch.setattr(timezone, "now", clock.now)
        alarm = api.send_alarm(
            en_ko("Expiring"), audience="everyone", expires_at=clock.now() + timedelta(seconds=30)
        )

        async def test(broker: BaseBroker) -> None:
            head, since = broker.head, (broker.head, int(clock.now().timestamp() * 1000))
            tick = broker._tick
            broker._tick = lambda: None  # type: ignore[method-assign]  # the timer is late
            clock.offset += 60  # both clocks past the expiry, with no await for the timer
            sub = broker.subscribe(viewer())
            sub.tracking = set()
            missed = await broker.run_db(broker.reads.missed, sub.viewer, since, head)
            replayed = replay(broker, sub, missed)
            sub.tracking = None
            broker._tick = tick  # type: ignore[method-assign]
            broker._tick()
            queued = await sub.next(3) or []
            sent = [e for chunk in replayed + queued for e in parse(chunk.decode())]
            assert [(e.event, e.json()["id"]) for e in sent] == [("retract", alarm.pk)]

        run(test)

    def test_garbage_collection_waits_until_the_broadcast_is_written(self, run, clock):
        import gc

        async def test(broker: BaseBroker) -> None:
            broker.config = {**broker.config, "GC_PAUSE": 60}
            sub = broker.subscribe(viewer())
            assert gc.isenabled()
            await sync_to_async(api.send_alarm)(en_ko("Burst"), audience="everyone")
            assert await sub.next(3)
            assert not gc.isenabled()
            await clock.advance(59)
            assert not gc.isenabled()
            await clock.advance(2)
            assert gc.isenabled()

        run(test)

    def test_steady_broadcasts_do_not_keep_the_collector_off(self, run, clock):
        """Broadcasts closer together than GC_PAUSE must not hold it off for good."""
        import gc

        async def test(broker: BaseBroker) -> None:
            broker.config = {**broker.config, "GC_PAUSE": 60}
            sub = broker.subscribe(viewer())
            enabled_between = []
            await sync_to_async(api.send_alarm)(en_ko("First"), audience="everyone")
            assert await sub.next(3)
            for i in range(4):  # a broadcast every 25 s: the collector is back at 60 s
                await clock.advance(25)
                enabled_between.append(gc.isenabled())
                await sync_to_async(api.send_alarm)(en_ko(f"Steady {i}"), audience="everyone")
                assert await sub.next(3)
            assert enabled_between[:2] == [False, False]  # held off, not released early
            assert any(enabled_between), "the collector stayed off through every broadcast"

        run(test)


class TestMemoryBroker(BrokerContract):
    broker_class = MemoryBroker
    # Polling every minute: a delivery within seconds proves the in-process wake-up.
    settings = {
        "BROKER": "alarms.broker.memory.MemoryBroker",
        "POLL_INTERVAL": 60,
        "SHUTDOWN_GRACE": 0,
    }


@pytest.mark.postgres
class TestPostgresBroker(BrokerContract):
    broker_class = PostgresBroker
    settings = {"BROKER": "alarms.broker.postgres.PostgresBroker", "SHUTDOWN_GRACE": 0}

    def test_notify_wakes_it_without_the_local_hook(self, run, monkeypatch):
        monkeypatch.setattr(broker_module, "wake_local", lambda: None)

        async def test(broker: BaseBroker) -> None:
            sub = broker.subscribe(viewer())
            await sync_to_async(api.send_alarm)(en_ko("Via NOTIFY"), audience="everyone")
            assert await sub.next(3)
            assert broker.counters.notifications >= 1

        run(test)


@pytest.mark.postgres
def test_a_resume_finds_what_expired_by_index_not_by_scanning_every_alarm(db):
    """Every resuming stream asks which alarms expired while it was away; with
    RETENTION_DAYS of alarms kept, a scan per reconnect would grow with them."""
    now = timezone.now()
    Alarm.objects.bulk_create(
        Alarm(
            level="info",
            audience="everyone",
            publish_at=now - timedelta(days=30, minutes=i),
            expires_at=now - timedelta(days=20, minutes=i),
        )
        for i in range(20_000)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Alarm._meta.db_table}")
    broker = PostgresBroker()
    since = (0, int((time.time() - 60) * 1000))  # away for a minute
    with CaptureQueriesContext(connections[broker.alias]) as queries:
        assert broker.reads.missed(Viewer(), since, 0) is not None
    (expired,) = [q["sql"] for q in queries if '"expires_at" <=' in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + expired)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "alarms_alarm_expires_idx" in plan, plan


@pytest.mark.postgres
def test_a_failed_start_retried_keeps_one_listener(transactional_db, monkeypatch):
    """The first read fails (the database is away): the next stream's start
    retries it, and the listener the first attempt began is the only one."""

    async def main() -> None:
        broker = PostgresBroker()
        real, calls = broker.reads.everything, []

        def flaky() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise OperationalError("the database is away")
            return real()

        monkeypatch.setattr(broker.reads, "everything", flaky)
        try:
            with pytest.raises(OperationalError):
                await broker.ensure_started()
            await broker.ensure_started()
            assert broker.running
            listeners = [t for t in asyncio.all_tasks() if t.get_name() == "alarms-listen"]
            assert len(listeners) == 1
        finally:
            await broker.stop()
            await sync_to_async(connections.close_all)()

    with override_settings(ALARMS={"SHUTDOWN_GRACE": 0}):
        asyncio.run(main())


def test_postgres_broker_refuses_other_databases():
    if connection.vendor == "postgresql":
        pytest.skip("only meaningful on another database")
    assert [m.id for m in PostgresBroker.check()] == ["alarms.E005"]


def test_the_brokers_own_reads_go_before_queued_connect_loads() -> None:
    """A storm of connects queues for the database thread behind the journal read."""
    broker = MemoryBroker()  # DB_THREADS 1: one call at a time
    order: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        def blocker() -> None:
            loop.call_soon_threadsafe(gate.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
            order.append("blocker")

        def job(name: str) -> Callable[[], None]:
            return lambda: order.append(name)

        first = asyncio.create_task(broker.run_db(blocker))
        await gate.wait()  # the one thread is busy
        connects = [asyncio.create_task(broker.run_db(job(f"connect {i}"))) for i in range(5)]
        await asyncio.sleep(0)
        read = asyncio.create_task(broker.read_db(job("journal read")))
        await asyncio.sleep(0)
        gone = connects.pop(2)
        gone.cancel()  # a client that left while queued gives its turn up
        release.set()
        await asyncio.gather(first, read, *connects)
        assert broker._db_queue.busy == 0

    asyncio.run(main())
    broker._executor.shutdown()
    assert order == ["blocker", "journal read", "connect 0", "connect 1", "connect 3", "connect 4"]


def test_a_signed_in_connect_reads_its_session_once(db) -> None:
    """The session's data and its expiry come in one query."""
    from alarms.broker.loads import Load, load_batch
    from alarms.broker.sessions import Login

    user = get_user_model().objects.create_user("sam")
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    stored = Session.objects.get(session_key=key).expire_date
    request = RequestFactory().get("/alarms/stream/")
    request.session = SessionStore(key)
    load = Load(Login(session=request.session, request=request), "en")

    with CaptureQueriesContext(connection) as queries:
        [loaded] = load_batch(MemoryBroker().reads, [load], [], 0)

    assert not isinstance(loaded, Exception)
    state, missed = loaded
    assert (state.viewer.user_id, state.session_key, state.expires_at) == (user.pk, key, stored)
    assert missed is None
    reads = [q["sql"] for q in queries.captured_queries if '"django_session"' in q["sql"]]
    assert len(reads) == 1, reads

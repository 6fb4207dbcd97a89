"""Journal ids drawn in one order and committed in another: nothing lost, nothing early.

On PostgreSQL journal writers take no lock (``alarms.journal``); the broker's
reader holds back rows above an id that is not final yet
(``alarms.broker.reads.JournalCursor``). The cursor's rules are checked here on
their own against a model of writers and snapshots; the rest against a real
PostgreSQL, with writers on connections of their own.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection, transaction
from django.test import RequestFactory, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

import alarms.broker as broker_module
from alarms import api, journal
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.memory import MemoryBroker
from alarms.broker.postgres import PostgresBroker
from alarms.broker.reads import BATCH, ConnectState, JournalCursor, Read, Snapshot
from alarms.broker.subscribers import Subscriber
from alarms.models import AlarmChange
from alarms.views.stream import stream as stream_view
from tests.helpers import en, run_broker, until, wait_for
from tests.sse import parse

# -- the cursor against a model of PostgreSQL ----------------------------------------


def row(i: int) -> Read:
    return (i, i, "alarm", None, "", None)  # type: ignore[return-value]


class Model:
    """PostgreSQL as the journal's reader sees it. Transactions take ids in order
    and end in any order; a snapshot counts as finished what is below ``xmax``
    (one past the last transaction to end) and not running, so a transaction
    given its id after that one is in no list. Writers draw journal ids in
    order, each holding the journal's lock from its first draw to its end."""

    def __init__(self) -> None:
        self.next_id = 1
        self.next_xid = 2**32 - 3  # across a wraparound of the 32-bit ids
        self.latest_ended = self.next_xid - 1
        self.open: dict[int, list[int]] = {}  # xid -> journal ids drawn
        self.committed: set[int] = set()

    def begin(self) -> int:
        self.open[self.next_xid] = []
        self.next_xid += 1
        return self.next_xid - 1

    def draw(self, xid: int) -> None:
        self.open[xid].append(self.next_id)
        self.next_id += 1

    def end(self, xid: int, commit: bool) -> None:
        ids = self.open.pop(xid)
        if commit:
            self.committed.update(ids)
        self.latest_ended = max(self.latest_ended, xid)

    def snapshot(self) -> Snapshot:
        xmax = self.latest_ended + 1
        return Snapshot(xmax, frozenset(x for x in self.open if x < xmax))

    def writers(self) -> frozenset[int]:
        """What ``Reads._journal_writers`` finds: 32-bit ids, lock holders only."""
        return frozenset(x % 2**32 for x, ids in self.open.items() if ids)

    def read(self, cursor: JournalCursor, meanwhile: Callable[[], None]) -> None:
        """What ``Reads._read`` does: rows and snapshot at once, then (after
        ``meanwhile``, other transactions ending) the writers of new gaps."""
        room = BATCH - len(cursor.held)
        past = sorted(i for i in self.committed if i > cursor.seen)[:room]
        in_gaps = [i for i in self.committed for g in cursor.gaps if g.first <= i <= g.last]
        snapshot = self.snapshot()
        cursor.absorb(snapshot, [row(i) for i in past + in_gaps])
        meanwhile()
        if cursor.asking:
            cursor.adopt(snapshot, self.writers())

    def start(self, meanwhile: Callable[[], None]) -> JournalCursor:
        """What ``Reads._start_cursor`` does."""
        top = max(self.committed, default=0)
        snapshot = self.snapshot()
        cursor = JournalCursor.at_start(top, sorted(self.committed))
        meanwhile()
        if cursor.gaps:
            cursor.adopt(snapshot, self.writers())
            if any(not g.writers for g in cursor.gaps):
                self.read(cursor, lambda: None)
                cursor.settle()
        return cursor


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_cursor_delivers_every_committed_row_once_in_id_order(data: st.DataObject) -> None:
    model = Model()
    cursor: JournalCursor | None = None
    at_start: set[int] = set()
    delivered: list[int] = []

    def end_some() -> None:
        # Transactions that end between a read's two statements.
        for _ in range(data.draw(st.integers(0, 2))):
            if model.open:
                model.end(data.draw(st.sampled_from(sorted(model.open))), data.draw(st.booleans()))

    ops = ("write", "write", "other", "draw", "end", "end", "read", "start")
    for _ in range(data.draw(st.integers(0, 40))):
        op = data.draw(st.sampled_from(ops))
        if op == "write" or (op == "draw" and not model.open):
            model.draw(model.begin())
        elif op == "other":
            model.begin()  # a transaction that writes elsewhere, or draws later
        elif op == "draw":
            model.draw(data.draw(st.sampled_from(sorted(model.open))))
        elif op == "end" and model.open:
            model.end(data.draw(st.sampled_from(sorted(model.open))), data.draw(st.booleans()))
        elif op == "start" and cursor is None:
            # A broker starts: what is committed now is in its cache already.
            at_start = set(model.committed)
            cursor = model.start(end_some)
        elif op == "read" and cursor is not None:
            before = cursor.position
            model.read(cursor, end_some)
            delivered += [r[0] for r in cursor.deliver(BATCH)]
            assert cursor.position >= before
            # The position never passes an id that may still be committed.
            assert all(i > cursor.position for ids in model.open.values() for i in ids)
    if cursor is None:
        cursor = JournalCursor(0)
    for xid in sorted(model.open):
        model.end(xid, data.draw(st.booleans()))
    for _ in range(3):  # new gaps get their (no) writers, then are final
        model.read(cursor, lambda: None)
        delivered += [r[0] for r in cursor.deliver(BATCH)]
    assert not cursor.gaps
    assert delivered == sorted(model.committed - at_start)
    assert cursor.position == max(model.committed, default=0)


def test_a_writer_newer_than_the_last_to_end_is_in_no_snapshot_list() -> None:
    """Why a gap's writers come from the lock table, not the snapshot's list."""
    model = Model()
    w, t = model.begin(), model.begin()  # W takes its id first, T second
    model.draw(t)  # T draws 1
    model.draw(w)  # W draws 2, and commits
    model.end(w, commit=True)
    assert t not in model.snapshot().running and not model.snapshot().finished(t)
    cursor = JournalCursor(0)
    model.read(cursor, lambda: None)
    assert cursor.deliver(BATCH) == [] and cursor.gaps[0].writers == {t}
    model.read(cursor, lambda: None)
    assert cursor.deliver(BATCH) == []
    model.end(t, commit=True)
    model.read(cursor, lambda: None)
    assert [r[0] for r in cursor.deliver(BATCH)] == [1, 2]


def test_a_gap_waits_only_for_journal_writers_still_running() -> None:
    model = Model()
    other = model.begin()  # a long transaction that never writes the journal
    a, b = model.begin(), model.begin()
    model.draw(a)
    model.draw(b)
    model.end(b, commit=True)
    cursor = JournalCursor(0)
    model.read(cursor, lambda: None)
    assert cursor.gaps[0].writers == {a}  # not `other`
    assert cursor.deliver(BATCH) == [] and cursor.recheck_in() is not None
    model.end(a, commit=False)
    model.read(cursor, lambda: None)
    assert [r[0] for r in cursor.deliver(BATCH)] == [2]
    assert (cursor.position, cursor.gaps, cursor.recheck_in()) == (2, [], None)
    assert other in model.open


def test_a_broker_starts_below_an_id_that_may_still_come() -> None:
    model = Model()
    a = model.begin()
    model.draw(a)  # 1, open
    for _ in range(3):  # 2, 3, 4 committed
        model.draw(x := model.begin())
        model.end(x, commit=True)
    cursor = model.start(lambda: None)
    assert (cursor.position, cursor.seen) == (0, 4)
    model.end(a, commit=True)
    model.read(cursor, lambda: None)
    assert [r[0] for r in cursor.deliver(BATCH)] == [1]  # 2 to 4 were in its cache
    assert cursor.position == 4


# -- against PostgreSQL ---------------------------------------------------------------

pg = pytest.mark.postgres

# Storm control serialises the sends it checks with a lock of its own: off, so
# that only the journal decides who waits for whom.
ALARMS = {"BROKER": "alarms.broker.postgres.PostgresBroker", "SHUTDOWN_GRACE": 0}
UNLIMITED = {"STORM_LIMIT": None}


#: Seconds a Held transaction waits for its next order before it rolls back.
HELD_FOR_AT_MOST = 60


class Held(threading.Thread):
    """A transaction on a connection of its own, kept open: :meth:`call` runs a
    function in it, :meth:`end` commits it or rolls it back."""

    # Those a failed test left open, rolled back by the fixture `ends_held`.
    started: ClassVar[list[Held]] = []

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.orders: queue.Queue[Callable[[], Any] | bool] = queue.Queue()
        self.results: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self.started.append(self)
        self.start()

    def run(self) -> None:
        try:
            with transaction.atomic():
                while not isinstance(order := self._next_order(), bool):
                    try:
                        self.results.put((True, order()))
                    except BaseException as exc:
                        self.results.put((False, exc))
                        raise
                transaction.set_rollback(not order)
            self.results.put((True, None))
        except BaseException as exc:
            self.results.put((False, exc))
        finally:
            connection.close()

    def _next_order(self) -> Callable[[], Any] | bool:
        # A test that failed before it ended this transaction would leave it open,
        # and the database's flush after the test would wait for it for ever (the
        # fixture `ends_held` is torn down after that flush): roll back on its own.
        try:
            return self.orders.get(timeout=HELD_FOR_AT_MOST)
        except queue.Empty:
            return False

    def call(self, func: Callable[[], Any]) -> Any:
        self.orders.put(func)
        ok, result = self.results.get(timeout=30)
        if not ok:
            raise result
        return result

    async def acall(self, func: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(self.call, func)

    def end(self, commit: bool = True) -> None:
        self.orders.put(commit)
        ok, result = self.results.get(timeout=30)
        self.join(30)
        if not ok:
            raise result


@pytest.fixture(autouse=True)
def ends_held() -> Iterator[None]:
    yield
    while Held.started:
        held = Held.started.pop()
        if held.is_alive():
            held.orders.put(False)
            held.join(30)


def journal_ids(alarm_id: int) -> list[int]:
    return list(AlarmChange.objects.filter(alarm_id=alarm_id).values_list("id", flat=True))


@pytest.fixture
def run(transactional_db: None) -> Iterator[Callable[..., Any]]:
    """Run ``test(broker)`` with a started PostgresBroker on a fresh event loop."""
    with override_settings(ALARMS={**ALARMS, **UNLIMITED}):
        yield lambda test: run_broker(PostgresBroker(), test)


#: A MemoryBroker that polls once a minute: only a wake-up or a timer of its
#: own makes it read sooner.
SLOW_POLL = {
    **ALARMS,
    **UNLIMITED,
    "BROKER": "alarms.broker.memory.MemoryBroker",
    "POLL_INTERVAL": 60,
}


def titles(chunks: list[bytes]) -> list[str]:
    return [e.json()["title"] for c in chunks for e in parse(c.decode()) if e.event == "alarm"]


async def read_titles(sub: Subscriber, count: int) -> list[str]:
    """The titles of the next ``count`` alarms queued to ``sub`` (bounded: a hang fails)."""
    found: list[str] = []
    async with asyncio.timeout(15):
        while len(found) < count:
            found += titles(await sub.next(15) or [])
    return found


async def send(title: str) -> Any:
    return await sync_to_async(api.send_alarm)(en(title), audience="everyone")


def write_alarm(title: str) -> int:
    """An alarm for everyone; its journal row's id (seen from its own transaction)."""
    alarm = api.send_alarm(en(title), audience="everyone")
    return max(journal_ids(alarm.pk))


async def held_open(title: str) -> tuple[Held, int]:
    """An alarm written (its journal ids drawn) in a transaction left open, and
    its last journal id (seen from that transaction)."""
    held = Held()
    return held, await held.acall(lambda: write_alarm(title))


async def send_and_read(broker: BaseBroker, title: str) -> int:
    """Send an alarm, and wait for the broker's read that follows its commit (the
    broker is idle before it: no read is under way). Its last journal row's id."""
    reads = broker.counters.reads
    alarm = await send(title)
    await until(lambda: broker.counters.reads > reads, 15)
    return max(await sync_to_async(journal_ids)(alarm.pk))


@pg
def test_a_row_above_an_open_write_waits_for_it_then_both_come_in_id_order(run):
    async def test(broker: PostgresBroker) -> None:
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        a, a_row = await held_open("A")
        b_row = await send_and_read(broker, "B")
        assert a_row < b_row
        # B is committed and read, but A's lower id is still open: held back.
        assert await sub.next(0) is None
        assert broker.head < a_row
        a.end(commit=True)
        assert await read_titles(sub, 2) == ["A", "B"]
        assert broker.head == b_row

    run(test)


@pg
def test_a_rolled_back_write_is_passed_over_without_a_notify(run, monkeypatch):
    # Only NOTIFY wakes the broker: not this process's own commits.
    monkeypatch.setattr(broker_module, "wake_local", lambda: None)

    async def test(broker: PostgresBroker) -> None:
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        a, _a_row = await held_open("A, rolled back")
        b_row = await send_and_read(broker, "B")
        assert await sub.next(0) is None
        notifications = broker.counters.notifications
        a.end(commit=False)
        # Nothing notifies a rollback: the broker's own re-check passes the gap.
        assert await read_titles(sub, 1) == ["B"]
        assert broker.counters.notifications == notifications
        assert broker.head == b_row

    run(test)


def take_xid() -> int:
    """Give the transaction of this thread's connection its id."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return int(cursor.fetchone()[0])


@pg
def test_a_rolled_back_write_does_not_wait_for_transactions_off_the_journal(run, monkeypatch):
    """A long transaction that never wrote the journal (an open session, a batch
    job) is no writer of the gap: the rows above a rollback go on."""
    monkeypatch.setattr(broker_module, "wake_local", lambda: None)

    async def test(broker: PostgresBroker) -> None:
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        other = Held()
        await other.acall(take_xid)
        a, _a_row = await held_open("A, rolled back")
        await send_and_read(broker, "B")
        a.end(commit=False)
        assert await read_titles(sub, 1) == ["B"]
        assert other.is_alive()
        other.end()

    run(test)


@pg
def test_a_writer_newer_than_the_last_to_commit_still_holds_its_gap(run):
    """W takes its transaction id before T, T draws the lower journal ids, W the
    higher ones and commits first. T still runs, but is in no snapshot's list of
    running transactions (its id is at or past the snapshot's xmax), unless a
    newer transaction has ended meanwhile: W's rows wait for it all the same."""

    async def test(broker: PostgresBroker) -> None:
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        w, t = Held(), Held()
        w_xid = await w.acall(take_xid)
        t_xid = await t.acall(take_xid)
        assert w_xid < t_xid
        t_row = await t.acall(lambda: write_alarm("T"))
        w_row = await w.acall(lambda: write_alarm("W"))
        assert t_row < w_row
        reads = broker.counters.reads
        w.end()
        # The read W's commit brings, and a re-check after it: W's rows still wait.
        await until(lambda: broker.counters.reads > reads + 1, 15)
        assert await sub.next(0) is None
        t.end()
        assert await read_titles(sub, 2) == ["T", "W"]

    run(test)


@pg
@pytest.mark.django_db(transaction=True)
def test_an_open_journal_write_does_not_hold_up_another():
    """A transaction holding an uncommitted journal row; a second journal write
    commits meanwhile. (With a lock around journal writes it would wait.)"""
    a = Held()
    a.call(lambda: journal.record([1], using="default"))
    done = threading.Event()

    def second() -> None:
        try:
            journal.record([2], using="default")
            done.set()
        finally:
            connection.close()

    b = threading.Thread(target=second, daemon=True)
    b.start()

    def waiting() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return int(cursor.fetchone()[0])

    # The second write either commits, or shows in pg_locks waiting for a lock.
    wait_for(lambda: done.is_set() or waiting(), 15, "the second write done or waiting")
    blocked = not done.is_set()
    a.end(commit=True)
    b.join(15)
    assert not blocked, "the second journal write waited for the first"
    assert sorted(AlarmChange.objects.values_list("alarm_id", flat=True)) == [1, 2]


@pg
def test_a_resume_during_a_gap_replays_up_to_the_position_and_gets_the_rest_live(run):
    async def test(broker: PostgresBroker) -> None:
        await send("Before")
        await until(lambda: len(broker.alarms) == 1, 15)
        since = f"{broker.head}-{int(time.time() * 1000)}"
        a, _a_row = await held_open("A")
        await send_and_read(broker, "B")
        position = broker.head
        request = RequestFactory().get("/alarms/stream/", HTTP_LAST_EVENT_ID=since)
        request.session = SessionStore()
        response = await stream_view(request)
        body = aiter(response)
        try:
            opening = parse((await anext(body)).decode())
            # Nothing past the broker's position: B waits behind A's open id.
            assert [e.event for e in opening if e.event in ("alarm", "retract")] == []
            assert broker.head == position
            a.end(commit=True)
            live: list[bytes] = []
            async with asyncio.timeout(15):
                while len(titles(live)) < 2:
                    live.append(await anext(body))
            assert titles(live) == ["A", "B"]
        finally:
            await body.aclose()

    run(test)


@pg
@pytest.mark.django_db(transaction=True)
def test_a_broker_starting_on_an_emptied_journal_starts_where_the_sequence_is():
    """Rows pruned (or a test database flushed): the table is empty, its sequence
    is not. The start's position is the last id drawn, so the next row is no gap
    to decide at a later read, which a broker that polls would leave to its poll."""
    journal.record([1, 2, 3], using="default")
    last = AlarmChange.objects.order_by("-id").values_list("id", flat=True).first()
    AlarmChange.objects.all().delete()

    async def test(broker: BaseBroker) -> None:
        assert broker.head == last
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        await send("After the prune")
        assert await read_titles(sub, 1) == ["After the prune"]

    with override_settings(ALARMS=SLOW_POLL):
        run_broker(MemoryBroker(), test)


@pg
@pytest.mark.django_db(transaction=True)
def test_a_polling_broker_rechecks_a_gap_sooner_than_its_poll():
    """MemoryBroker on PostgreSQL (a project may choose it): a rolled-back write
    wakes nobody, and a poll of a minute would hold the row above it that long.
    The gap's own re-check timer reads again within the read_titles bound."""

    async def test(broker: BaseBroker) -> None:
        sub = broker.subscribe(ConnectState(Viewer(language="en"), set(), set()))
        a, _a_row = await held_open("A, rolled back")
        await send_and_read(broker, "B")  # B's commit wakes this process's broker
        assert await sub.next(0) is None
        a.end(commit=False)
        assert await read_titles(sub, 1) == ["B"]

    with override_settings(ALARMS=SLOW_POLL):
        run_broker(MemoryBroker(), test)

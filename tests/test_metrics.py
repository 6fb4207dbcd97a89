"""``GET /alarms/metrics/``: access, the Prometheus text format, and values from the broker.

A scrape starts the broker (a fresh process reports its real state), so every
test that gets a 200 runs on one event loop of its own (``run``), as a server
would, and stops the broker it made.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import prometheus_client
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.http.response import HttpResponseBase
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

import alarms.broker as broker_module
from alarms import api
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.postgres import PostgresBroker
from alarms.broker.reads import ConnectState
from alarms.broker.subscribers import AddressFull, BrokerFull, Subscriber
from alarms.models import AlarmChange
from tests.factories import ahead, make_user
from tests.helpers import ExpositionError, en, metric_samples, parse_metrics, until

URL = reverse("alarms:metrics")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DENIED = b"Staff or the metrics token only.\n"
# No SIGTERM handler in the test process; the token set.
ALARMS = {"METRICS_TOKEN": TOKEN, "SHUTDOWN_GRACE": 0}


@pytest.fixture(autouse=True)
def fresh_broker() -> Iterator[None]:
    """Each test gets its own broker (built lazily under the test's settings), never started."""
    broker_module.reset_broker()
    yield
    broker_module.reset_broker()


Runner = Callable[..., None]


@pytest.fixture
def run(transactional_db: None) -> Iterator[Runner]:
    """Run ``test()`` on a fresh event loop with no broker yet, then stop the one it made."""

    def runner(test: Callable[[], Coroutine[Any, Any, None]], **settings: Any) -> None:
        async def main() -> None:
            broker_module.reset_broker()
            try:
                await test()
            finally:
                broker = broker_module._broker
                if broker is not None:
                    await broker.stop()
                await sync_to_async(connections.close_all)()
                broker_module.reset_broker()

        # Polling slow enough that only a wake-up reads the journal.
        with override_settings(ALARMS={**ALARMS, "POLL_INTERVAL": 60, **settings}):
            asyncio.run(main())

    yield runner


async def scrape(client: AsyncClient | None = None, **headers: str) -> str:
    response = await (client or AsyncClient()).get(URL, headers=headers or AUTH)
    assert response.status_code == 200, response.content
    return response.content.decode()


# -- the strict parse of the text exposition format (0.0.4) -----------------------------

GOOD = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 1\na_total{x="2"} 2.5\n'


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GOOD[:-1], "no newline"),
        (GOOD + "\n", "a blank line"),
        (GOOD.replace("a_total", "a"), "ends in _total"),
        (GOOD.replace("# HELP a_total A.\n", ""), "not all there"),
        (GOOD.replace("# TYPE a_total counter\n", ""), "type 'unknown'"),
        (GOOD.replace("counter", "histogram"), "type 'histogram'"),
        (GOOD + "# HELP a_total Again.\n", "after the samples"),
        (GOOD.replace("# TYPE", "# HELP a_total B.\n# TYPE"), "repeated"),
        (GOOD.replace("# TYPE a_total counter\n", "# HELP a_total B.\n"), "type 'unknown'"),
        (GOOD.replace("# HELP a_total A.\n", "# TYPE a_total counter\n"), "not all there"),
        (GOOD.replace('x="2"', 'x="1"'), "not once"),
        (GOOD.replace("2.5", "2,5"), "not the text format"),
        (GOOD.replace("2.5", "1_0"), "not the text format"),  # float() takes it, Prometheus not
        (GOOD.replace("2.5", "2.5 1700000000000"), "not once"),  # the view writes no time
        (GOOD.replace('a_total{x="2"}', 'b_total{x="2"}'), "outside its family"),
        (GOOD.replace('x="1"', "x=1"), "not the text format"),
        (GOOD.replace('x="1"', 'x="1",x="2"'), "not the text format"),
        (GOOD.replace("a_total", "1a_total"), "not the text format"),  # a digit first
        (GOOD + "# HELP b_total B.\n# TYPE b_total counter\nb_total 1\n" + GOOD, "comes back"),
        (GOOD + "# a comment\n", "a comment"),  # the view writes none
    ],
)
def test_the_parse_refuses_what_a_strict_scraper_would(text: str, why: str) -> None:
    # Otherwise the format test below would prove nothing.
    assert parse_metrics(GOOD) == {"a_total": ("counter", {(("x", "1"),): 1.0, (("x", "2"),): 2.5})}
    swapped = GOOD.replace(
        "# HELP a_total A.\n# TYPE a_total counter\n", "# TYPE a_total counter\n# HELP a_total A.\n"
    )
    assert parse_metrics(swapped) == parse_metrics(GOOD)  # HELP and TYPE in either order
    with pytest.raises(ExpositionError, match=why):
        parse_metrics(text)


# -- access ----------------------------------------------------------------------------


def assert_never_cached(response: HttpResponseBase) -> None:
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"no-cache", "no-store", "must-revalidate", "max-age=0"} <= cache_control


@pytest.mark.django_db
@override_settings(ALARMS=ALARMS)
def test_only_staff_or_the_token_refused() -> None:
    reader = Client()
    reader.force_login(make_user("reader"))

    refused = [
        Client().get(URL),
        reader.get(URL),
        Client().get(URL, headers={"Authorization": "Bearer nope"}),
        Client().get(URL, headers={"Authorization": TOKEN}),  # no scheme
        Client().get(URL, headers={"Authorization": f"Bearer {TOKEN}x"}),  # a longer token
        Client().get(URL, headers={"Authorization": f"Bearer {TOKEN.upper()}"}),
        Client().get(URL, headers={"Authorization": f"Basic {TOKEN}"}),
    ]
    for response in refused:
        assert response.status_code == 403
        assert response.content == DENIED  # and no counters
        assert_never_cached(response)
    assert broker_module._broker is None  # a refusal starts nothing


def test_only_staff_or_the_token_answered(run: Runner) -> None:
    operator = make_user("operator", is_staff=True)

    async def test() -> None:
        staff = AsyncClient()
        await staff.aforce_login(operator)
        # The scheme's case is free (RFC 9110), the token's is not.
        lower = {"Authorization": f"bearer {TOKEN}"}
        for response in (
            await staff.get(URL),
            await AsyncClient().get(URL, headers=AUTH),
            await AsyncClient().get(URL, headers=lower),
        ):
            assert response.status_code == 200
            assert b"alarms_streams_open " in response.content
            assert_never_cached(response)

    run(test)


@pytest.mark.django_db
@override_settings(ALARMS={**ALARMS, "METRICS_TOKEN": None})
def test_no_token_set_means_staff_only() -> None:
    for given in ("Bearer ", "Bearer None", f"Bearer {TOKEN}", ""):
        response = Client().get(URL, headers={"Authorization": given})
        assert (response.status_code, response.content) == (403, DENIED)


def test_no_token_set_still_answers_staff(run: Runner) -> None:
    operator = make_user("operator", is_staff=True)

    async def test() -> None:
        staff = AsyncClient()
        await staff.aforce_login(operator)
        assert (await staff.get(URL)).status_code == 200

    run(test, METRICS_TOKEN=None)


@pytest.mark.django_db
@override_settings(ALARMS=ALARMS)
def test_only_get() -> None:
    assert Client().post(URL, headers=AUTH).status_code == 405


# -- the format ----------------------------------------------------------------------


REQUIRED = {
    "alarms_streams_open": "gauge",  # open streams
    "alarms_streams_max": "gauge",  # and the cap they are held to
    "alarms_streams_backlogged": "gauge",  # holding events not yet written
    "alarms_broker_running": "gauge",
    "alarms_journal_position": "gauge",
    "alarms_events_delivered_total": "counter",  # events delivered
    "alarms_broker_lag_seconds": "gauge",  # broker lag
    "alarms_journal_read_seconds_total": "counter",  # journal reads, with alarms_reads_total
    "alarms_reads_total": "counter",
    "alarms_fan_out_seconds_total": "counter",
    "alarms_resumes_total": "counter",  # reconnects
    "alarms_connects_total": "counter",
    "alarms_streams_closed_total": "counter",  # slow clients dropped
    "alarms_stalled_aborted_total": "counter",
}
# Durations, and only they, are in seconds (Prometheus's unit for time).
DURATIONS = {
    "alarms_broker_lag_seconds",
    "alarms_journal_read_seconds_total",
    "alarms_fan_out_seconds_total",
}


def test_prometheus_text_format(run: Runner) -> None:
    async def test() -> None:
        await scrape()  # starts the broker
        broker = broker_module.get_broker()
        # Two streams and a journal read that found a row, so that not every value is a zero.
        broker.subscribe(ConnectState(Viewer(user_id=1), set(), set()), "10.0.0.1")
        broker.subscribe(ConnectState(Viewer(), set(), set()))
        await sync_to_async(api.send_alarm)(en("Read"), audience="everyone")
        reads = broker.counters.reads
        broker.wake()
        await until(lambda: broker.counters.reads > reads and broker.head > 0, 10)
        response = await AsyncClient().get(URL, headers=AUTH)

        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.content.decode()
        families = parse_metrics(text)  # every rule of the format, or ExpositionError
        assert {name: families[name][0] for name in REQUIRED if name in families} == REQUIRED
        assert (("reason", "slow"),) in families["alarms_streams_closed_total"][1]
        assert families["alarms_streams_open"][1] == {(): 2}
        # Neither stream's generator runs here: the alarm waits in both queues.
        assert families["alarms_streams_backlogged"][1] == {(): 2}
        assert all(not math.isnan(value) and value >= 0 for value in metric_samples(text).values())
        assert {name for name in families if "second" in name} == DURATIONS
        assert not [name for name in families if name.endswith(("_ms", "_ms_total"))]
        # Measured, in seconds: a read of a few rows takes well under a minute.
        assert 0 < families["alarms_journal_read_seconds_total"][1][()] < 60
        # Its own registry: the process-wide one, the project's, holds none of it.
        exposed = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
        assert "alarms_" not in exposed

    run(test)


# -- the values ----------------------------------------------------------------------


def subscribe(broker: BaseBroker, user_id: int | None = None, address: str = "") -> Subscriber:
    return broker.subscribe(ConnectState(Viewer(user_id=user_id), set(), set()), address)


def test_values_are_the_brokers(run: Runner) -> None:
    api.send_alarm(en("Live"), audience="everyone")
    api.send_alarm(en("Scheduled"), audience="everyone", publish_at=ahead(hours=1))
    api.send_alarm(en("Another"), audience="everyone")
    latest = AlarmChange.objects.order_by("-id")[0].pk

    async def test() -> None:
        broker = broker_module.get_broker()
        await broker.ensure_started()
        before = metric_samples(await scrape())
        counted = {key: value for key, value in before.items() if key[0].endswith("_total")}
        assert set(counted.values()) == {0.0}  # a new broker has counted nothing

        # Through the broker's own bookkeeping: three streams for two users ...
        slow = subscribe(broker, user_id=1, address="10.0.0.1")
        first = subscribe(broker, user_id=2)
        subscribe(broker, user_id=2)  # ... the second closes the first (one per user) ...
        subscribe(broker)
        with pytest.raises(AddressFull):
            subscribe(broker, address="10.0.0.1")  # ... one per address
        for _ in range(3):
            slow.push(b"data: x\n\n")  # ... a queue of 2 overflows
        broker.unsubscribe(slow)
        broker.unsubscribe(first)

        # ... and, for what needs a stream view, the ASGI wrapper or time, distinct
        # numbers, so that a series reading the wrong one is caught.
        counted = {
            "events": 11,
            "resumes": 12,
            "resumes_snapshot": 13,
            "reads": 14,
            "notifications": 15,
            "aborted_stalled": 16,
            "closed_lifetime": 17,
            "closed_shutdown": 18,
            "delivered": 19,
            "closed_signed_out": 20,
            "closed_session_expired": 21,
            "reauthorised": 22,
            "closed_preferences": 23,
            "redis_wakes": 24,
        }
        for name, value in counted.items():
            setattr(broker.counters, name, value)
        broker.timings.read_seconds, broker.timings.fan_out_seconds = 2.5, 0.5
        broker.timings.lag_seconds = 1.25
        broker.shutting_down = True  # refuses new streams as a full process does
        with pytest.raises(BrokerFull):
            subscribe(broker)
        broker.shutting_down = False

        closed = "alarms_streams_closed_total"
        refused = "alarms_streams_refused_total"
        found = metric_samples(await scrape())
        listener = found.pop(("alarms_listener_up", ()), None)
        assert listener == (1 if isinstance(broker, PostgresBroker) else None)
        assert found == {
            ("alarms_streams_open", ()): 2,
            ("alarms_streams_max", ()): 7,
            ("alarms_users_streaming", ()): 1,
            ("alarms_streams_backlogged", ()): 0,
            ("alarms_broker_running", ()): 1,
            ("alarms_alarms_current", ()): 3,
            ("alarms_journal_position", ()): latest,
            ("alarms_broker_lag_seconds", ()): 1.25,
            ("alarms_journal_read_seconds_total", ()): 2.5,
            ("alarms_fan_out_seconds_total", ()): 0.5,
            ("alarms_connects_total", ()): 4,
            ("alarms_resumes_total", ()): 12,
            ("alarms_resumes_snapshot_total", ()): 13,
            (refused, (("reason", "full"),)): 1,
            (refused, (("reason", "address"),)): 1,
            ("alarms_events_total", ()): 11,
            ("alarms_events_delivered_total", ()): 19,
            ("alarms_reads_total", ()): 14,
            ("alarms_notifications_total", ()): 15,
            ("alarms_redis_wakes_total", ()): 24,
            ("alarms_users_reauthorised_total", ()): 22,
            (closed, (("reason", "slow"),)): 1,
            (closed, (("reason", "replaced"),)): 1,
            (closed, (("reason", "lifetime"),)): 17,
            (closed, (("reason", "shutdown"),)): 18,
            (closed, (("reason", "signed_out"),)): 20,
            (closed, (("reason", "session_expired"),)): 21,
            (closed, (("reason", "preferences"),)): 23,
            ("alarms_stalled_aborted_total", ()): 16,
        }

    run(
        test,
        QUEUE_SIZE=2,
        MAX_STREAMS=7,
        MAX_STREAMS_PER_USER=1,
        MAX_STREAMS_PER_ADDRESS=1,
    )


# -- a fresh process -----------------------------------------------------------------


def test_a_fresh_process_reports_its_real_state(run: Runner) -> None:
    # Written before this process's broker exists, as by another process.
    api.send_alarm(en("Live"), audience="everyone")
    api.send_alarm(en("Scheduled"), audience="everyone", publish_at=ahead(hours=1))
    latest = AlarmChange.objects.order_by("-id")[0].pk
    assert latest > 0

    async def test() -> None:
        assert broker_module._broker is None  # no stream has started one
        found = metric_samples(await scrape())
        assert found[("alarms_broker_running", ())] == 1
        assert found[("alarms_journal_position", ())] == latest  # not a 0
        assert found[("alarms_alarms_current", ())] == 2
        assert found[("alarms_streams_open", ())] == 0
        # No read has found rows yet: no lag, rather than a lag of 0.
        assert ("alarms_broker_lag_seconds", ()) not in found

    run(test)


def test_a_broker_that_cannot_start_says_so(run: Runner) -> None:
    def fail(self: Any) -> None:
        raise RuntimeError("no journal table")

    async def test() -> None:
        broker = broker_module.get_broker()
        broker.reads.everything = fail.__get__(broker.reads)  # type: ignore[method-assign]
        found = metric_samples(await scrape())
        assert found[("alarms_broker_running", ())] == 0
        # What only a running broker knows is left out, not reported as 0.
        assert ("alarms_journal_position", ()) not in found
        assert ("alarms_alarms_current", ()) not in found
        assert found[("alarms_streams_open", ())] == 0  # that 0 is true
        assert found[("alarms_streams_max", ())] == 20000

    run(test)


def test_the_listener_is_up_or_absent(run: Runner) -> None:
    async def test() -> None:
        found = metric_samples(await scrape())
        broker = broker_module.get_broker()
        if connection.vendor != "postgresql":
            # MemoryBroker has no listener: no series, so no alert on it.
            assert ("alarms_listener_up", ()) not in found
            return
        assert isinstance(broker, PostgresBroker)
        assert found[("alarms_listener_up", ())] == 1
        broker.listening.clear()  # as when its connection is lost
        assert metric_samples(await scrape())[("alarms_listener_up", ())] == 0

    run(test)

"""``GET /alarms/metrics/``: access, the Prometheus text format, and values from the broker."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from django.http.response import HttpResponseBase
from django.test import Client, override_settings
from django.urls import reverse

import alarms.broker as broker_module
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.reads import ConnectState
from alarms.broker.subscribers import AddressFull, BrokerFull, Subscriber
from tests.factories import make_user
from tests.helpers import ExpositionError, metric_samples, parse_metrics

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


def scrape(client: Client | None = None, **headers: str) -> str:
    response = (client or Client()).get(URL, headers=headers or AUTH)
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
def test_only_staff_or_the_token() -> None:
    reader, operator = Client(), Client()
    reader.force_login(make_user("reader"))
    operator.force_login(make_user("operator", is_staff=True))

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

    # The scheme's case is free (RFC 9110), the token's is not.
    lower = {"Authorization": f"bearer {TOKEN}"}
    for response in (
        operator.get(URL),
        Client().get(URL, headers=AUTH),
        Client().get(URL, headers=lower),
    ):
        assert response.status_code == 200
        assert b"alarms_streams_open " in response.content
        assert_never_cached(response)


@pytest.mark.django_db
@override_settings(ALARMS={**ALARMS, "METRICS_TOKEN": None})
def test_no_token_set_means_staff_only() -> None:
    for given in ("Bearer ", "Bearer None", f"Bearer {TOKEN}", ""):
        response = Client().get(URL, headers={"Authorization": given})
        assert (response.status_code, response.content) == (403, DENIED)
    operator = Client()
    operator.force_login(make_user("operator", is_staff=True))
    assert operator.get(URL).status_code == 200


@pytest.mark.django_db
@override_settings(ALARMS=ALARMS)
def test_only_get() -> None:
    assert Client().post(URL, headers=AUTH).status_code == 405


# -- the format ----------------------------------------------------------------------


REQUIRED = {
    "alarms_streams_open",  # open streams
    "alarms_events_delivered_total",  # events delivered
    "alarms_broker_lag_seconds",  # broker lag
    "alarms_resumes_total",  # reconnects
    "alarms_connects_total",
    "alarms_streams_closed_total",  # slow clients dropped
    "alarms_stalled_aborted_total",
}


@pytest.mark.django_db
@override_settings(ALARMS=ALARMS)
def test_prometheus_text_format() -> None:
    # Two streams, so that not every value is a zero.
    broker = broker_module.get_broker()
    broker.subscribe(ConnectState(Viewer(user_id=1), set(), set()), "10.0.0.1")
    broker.subscribe(ConnectState(Viewer(), set(), set()))
    response = Client().get(URL, headers=AUTH)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    families = parse_metrics(text)  # every rule of the format, or ExpositionError
    assert set(families) >= REQUIRED
    assert families["alarms_streams_open"][0] == "gauge"
    assert families["alarms_broker_lag_seconds"][0] == "gauge"
    for name in REQUIRED - {"alarms_streams_open", "alarms_broker_lag_seconds"}:
        assert families[name][0] == "counter", name
    assert (("reason", "slow"),) in families["alarms_streams_closed_total"][1]
    assert families["alarms_streams_open"][1] == {(): 2}
    assert all(not math.isnan(value) and value >= 0 for value in metric_samples(text).values())


# -- the values ----------------------------------------------------------------------


def subscribe(broker: BaseBroker, user_id: int | None = None, address: str = "") -> Subscriber:
    return broker.subscribe(ConnectState(Viewer(user_id=user_id), set(), set()), address)


@pytest.mark.django_db
@override_settings(
    ALARMS={**ALARMS, "QUEUE_SIZE": 2, "MAX_STREAMS_PER_USER": 1, "MAX_STREAMS_PER_ADDRESS": 1}
)
def test_values_are_the_brokers() -> None:
    broker = broker_module.get_broker()
    before = metric_samples(scrape())
    assert set(before.values()) == {0.0}  # a new broker has counted nothing

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

    # ... and, for what needs a running broker, a stream view or the ASGI wrapper,
    # distinct numbers, so that a series reading the wrong one is caught.
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
    }
    for name, value in counted.items():
        setattr(broker.counters, name, value)
    broker.timings.read_ms, broker.timings.fan_out_ms, broker.timings.lag_s = 2.5, 0.5, 1.25
    broker.head = 42
    broker.alarms.update(dict.fromkeys((1, 2, 3)))  # type: ignore[arg-type]
    broker.shutting_down = True  # refuses new streams as a full process does
    with pytest.raises(BrokerFull):
        subscribe(broker)
    broker.shutting_down = False

    closed = "alarms_streams_closed_total"
    refused = "alarms_streams_refused_total"
    assert metric_samples(scrape()) == {
        ("alarms_streams_open", ()): 2,
        ("alarms_users_streaming", ()): 1,
        ("alarms_alarms_current", ()): 3,
        ("alarms_journal_position", ()): 42,
        ("alarms_last_read_ms", ()): 2.5,
        ("alarms_last_fan_out_ms", ()): 0.5,
        ("alarms_broker_lag_seconds", ()): 1.25,
        ("alarms_connects_total", ()): 4,
        ("alarms_resumes_total", ()): 12,
        ("alarms_resumes_snapshot_total", ()): 13,
        (refused, (("reason", "full"),)): 1,
        (refused, (("reason", "address"),)): 1,
        ("alarms_events_total", ()): 11,
        ("alarms_events_delivered_total", ()): 19,
        ("alarms_reads_total", ()): 14,
        ("alarms_notifications_total", ()): 15,
        ("alarms_users_reauthorised_total", ()): 22,
        (closed, (("reason", "slow"),)): 1,
        (closed, (("reason", "replaced"),)): 1,
        (closed, (("reason", "lifetime"),)): 17,
        (closed, (("reason", "shutdown"),)): 18,
        (closed, (("reason", "signed_out"),)): 20,
        (closed, (("reason", "session_expired"),)): 21,
        ("alarms_stalled_aborted_total", ()): 16,
    }

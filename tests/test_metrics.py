"""``GET /alarms/metrics/``: access, the Prometheus text format, and values from the broker."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

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

URL = reverse("alarms:metrics")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DENIED = b"Staff or the metrics token only.\n"
# No SIGTERM handler in the test process; the token set.
ALARMS = {"METRICS_TOKEN": TOKEN, "SHUTDOWN_GRACE": 0}

Labels = tuple[tuple[str, str], ...]


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


# -- a strict parser of the text exposition format (0.0.4) ---------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
HELP_LINE = re.compile(rf"# HELP ({NAME}) ((?:[^\\]|\\[\\n])+)")
TYPE_LINE = re.compile(rf"# TYPE ({NAME}) (counter|gauge)")
SAMPLE_LINE = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)")
LABEL = re.compile(rf'({LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
# Go's ParseFloat as Prometheus uses it: Python's float() would also take "1_0" or "infinity".
VALUE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|Inf|NaN")


class ExpositionError(ValueError):
    pass


@dataclass
class Family:
    name: str
    help: str | None = None
    type: str | None = None
    samples: dict[Labels, float] = field(default_factory=dict)


def _labels(text: str | None, where: str) -> Labels:
    if not text:
        return ()
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = LABEL.match(text, position)
        if match is None:
            raise ExpositionError(f"{where}: bad labels {text!r}")
        pairs.append((match[1], match[2]))
        position = match.end()
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names) or any(name.startswith("__") for name in names):
        raise ExpositionError(f"{where}: repeated or reserved label in {text!r}")
    return tuple(sorted(pairs))


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises ExpositionError on anything a strict scraper would refuse.

    Only counters and gauges (what the view writes): a sample's name is its
    family's name, its family's HELP and TYPE come first, once each, and a
    family's lines are not interleaved with another's.
    """
    if not text.endswith("\n"):
        raise ExpositionError("the last line has no newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}"
        if line.startswith("#"):
            match = HELP_LINE.fullmatch(line) or TYPE_LINE.fullmatch(line)
            if match is None:
                raise ExpositionError(f"{where}: not a HELP or TYPE line: {line!r}")
            name, text_or_type = match[1], match[2]
            if name not in families:
                families[name] = Family(name)
            elif families[name] is not current:
                raise ExpositionError(f"{where}: {name} comes back after another family")
            current = families[name]
            if current.samples:
                raise ExpositionError(f"{where}: {name}'s HELP/TYPE after its samples")
            attribute = "help" if line.startswith("# HELP") else "type"
            if getattr(current, attribute) is not None:
                raise ExpositionError(f"{where}: a second {attribute.upper()} for {name}")
            setattr(current, attribute, text_or_type)
            continue
        match = SAMPLE_LINE.fullmatch(line)
        if match is None:
            raise ExpositionError(f"{where}: not a sample line: {line!r}")
        name, labels, value = match[1], _labels(match[2], where), match[3]
        if current is None or current.name != name:
            raise ExpositionError(f"{where}: {name} is not the family whose HELP/TYPE precede it")
        if current.help is None or current.type is None:
            raise ExpositionError(f"{where}: {name} lacks a HELP or a TYPE line")
        if current.type == "counter" and not name.endswith("_total"):
            raise ExpositionError(f"{where}: counter {name} does not end in _total")
        if labels in current.samples:
            raise ExpositionError(f"{where}: {name}{dict(labels)} repeated")
        if not VALUE.fullmatch(value):
            raise ExpositionError(f"{where}: {value!r} is not a float")
        current.samples[labels] = float(value)
    for family in families.values():
        if family.help is None or family.type is None or not family.samples:
            raise ExpositionError(f"{family.name}: HELP, TYPE and samples are not all there")
    return families


def samples(text: str) -> dict[tuple[str, Labels], float]:
    return {
        (family.name, labels): value
        for family in parse(text).values()
        for labels, value in family.samples.items()
    }


GOOD = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 1\na_total{x="2"} 2.5\n'


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GOOD[:-1], "no newline"),
        (GOOD + "\n", "not a sample line"),  # a blank line
        (GOOD.replace("a_total", "a"), "does not end in _total"),
        (GOOD.replace("# HELP a_total A.\n", ""), "lacks a HELP"),
        (GOOD.replace("# TYPE a_total counter\n", ""), "lacks a HELP or a TYPE"),
        (GOOD.replace("counter", "histogram"), "not a HELP or TYPE line"),
        (GOOD + "# HELP a_total Again.\n", "after its samples"),
        (GOOD.replace("# TYPE", "# HELP a_total B.\n# TYPE"), "a second HELP"),
        (GOOD.replace('x="2"', 'x="1"'), "repeated"),
        (GOOD.replace("2.5", "2,5"), "not a float"),
        (GOOD.replace("2.5", "1_0"), "not a float"),  # float() takes it, Prometheus does not
        (GOOD.replace('a_total{x="2"}', 'b_total{x="2"}'), "not the family"),
        (GOOD.replace('x="1"', "x=1"), "bad labels"),
        (GOOD.replace('x="1"', 'x="1",x="2"'), "repeated or reserved label"),
        (GOOD.replace("a_total", "1a_total"), "not a"),  # a name starting with a digit
        (GOOD + "# HELP b_total B.\n# TYPE b_total counter\nb_total 1\n" + GOOD, "comes back"),
        (GOOD + "# a comment\n", "not a HELP or TYPE line"),  # the view writes none
    ],
)
def test_the_parser_refuses_what_a_strict_scraper_would(text: str, why: str) -> None:
    # Otherwise the format test below would prove nothing.
    assert parse(GOOD)["a_total"].samples == {(("x", "1"),): 1.0, (("x", "2"),): 2.5}
    with pytest.raises(ExpositionError, match=why):
        parse(text)


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
    families = parse(text)  # every rule of the format, or ExpositionError
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert set(families) >= REQUIRED
    assert families["alarms_streams_open"].type == "gauge"
    assert families["alarms_broker_lag_seconds"].type == "gauge"
    for name in REQUIRED - {"alarms_streams_open", "alarms_broker_lag_seconds"}:
        assert families[name].type == "counter", name
    assert (("reason", "slow"),) in families["alarms_streams_closed_total"].samples
    assert all(not math.isnan(value) and value >= 0 for value in samples(text).values())


# -- the values ----------------------------------------------------------------------


def subscribe(broker: BaseBroker, user_id: int | None = None, address: str = "") -> Subscriber:
    return broker.subscribe(ConnectState(Viewer(user_id=user_id), set(), set()), address)


@pytest.mark.django_db
@override_settings(
    ALARMS={**ALARMS, "QUEUE_SIZE": 2, "MAX_STREAMS_PER_USER": 1, "MAX_STREAMS_PER_ADDRESS": 1}
)
def test_values_are_the_brokers() -> None:
    broker = broker_module.get_broker()
    before = samples(scrape())
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
    assert samples(scrape()) == {
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

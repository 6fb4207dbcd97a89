"""``GET /alarms/metrics/``: this process's broker in the Prometheus text format.

Written by ``prometheus_client`` from a collector of our own, in a registry of
its own: the process-wide default registry is left to the project (which may
expose it elsewhere), and nothing here is counted twice or kept between
scrapes. The counters come from :class:`alarms.broker.counters.Counters`, field
by field: a counter added there is exposed here. Durations are in seconds.

**A fresh process reports its real state.** The broker of a process starts with
its first stream; before that it has read nothing, and its journal position and
alarms would be zeros that look like values. So a scrape starts the broker, as
``/alarms/health/`` does (within its ``START_TIMEOUT``): from its first scrape a
process reports the journal position it has really reached and the alarms it
really holds, and on PostgreSQL whether its listener is up. A broker that does
not start reports ``alarms_broker_running 0`` and leaves out what only a
running broker knows (``alarms_journal_position``, ``alarms_alarms_current``),
rather than a 0. ``alarms_broker_lag_seconds`` is left out until a read has
found journal rows, ``alarms_listener_up`` where there is no listener
(``MemoryBroker``), and ``alarms_redis_subscribed`` where nothing subscribes
(no ``WAKE_URL``).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from alarms.broker import get_broker
from alarms.broker.base import BaseBroker
from alarms.views.access import refusal
from alarms.views.health import start_broker

# The text format generate_latest writes for names like ours (legacy-valid, so
# no quoting): 0.0.4, which every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@never_cache
@require_GET
async def metrics(request: HttpRequest) -> HttpResponse:
    if refused := await refusal(request):
        return refused
    broker = get_broker()
    await start_broker(broker)  # a failure shows as alarms_broker_running 0
    return HttpResponse(exposition(broker), content_type=CONTENT_TYPE)


def exposition(broker: BaseBroker) -> bytes:
    """Every gauge and counter of ``broker``, in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    return generate_latest(registry)


#: Gauges read from the broker's own health checks, where it has them: the
#: check, its key, and the gauge's name and help.
HEALTH_GAUGES = (
    (
        "listener",
        "ok",
        "alarms_listener_up",
        "1 while the broker listens for NOTIFY on its PostgreSQL connection.",
    ),
    (
        "redis",
        "subscribed",
        "alarms_redis_subscribed",
        "1 while the broker is subscribed to its wake-ups on Redis (WAKE_URL).",
    ),
)


class BrokerCollector:
    """A ``prometheus_client`` collector: the broker's state, read at each scrape."""

    def __init__(self, broker: BaseBroker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        broker, timings = self.broker, self.broker.timings
        running = broker.running

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, value=value)

        yield gauge("alarms_streams_open", "Streams open in this process.", len(broker.subscribers))
        yield gauge(
            "alarms_streams_max",
            "Streams this process accepts (MAX_STREAMS); more are refused with a 503.",
            int(broker.config["MAX_STREAMS"]),
        )
        yield gauge(
            "alarms_users_streaming",
            "Signed-in users with a stream open in this process.",
            len(broker.subscribers.by_user),
        )
        yield gauge(
            "alarms_streams_backlogged",
            "Streams holding events not yet written to them: a broadcast in delivery, or a "
            "client that stopped reading (receipts wait while it is above 0; RECEIPTS_YIELD).",
            broker.subscribers.backlog.count,
        )
        yield gauge(
            "alarms_broker_running",
            "1 while the broker's read loop runs, 0 when it could not start.",
            int(running),
        )
        if running:
            yield gauge(
                "alarms_alarms_current",
                "Live or scheduled alarms the broker holds.",
                len(broker.alarms),
            )
            yield gauge(
                "alarms_journal_position",
                "Last change journal row the broker has read.",
                broker.head,
            )
        checks = broker.health()
        for check, key, name, documentation in HEALTH_GAUGES:
            if check in checks:
                yield gauge(name, documentation, int(bool(checks[check][key])))
        if timings.lag_seconds is not None:
            yield gauge(
                "alarms_broker_lag_seconds",
                "From the newest journal row's write to its read, at the last read that found any.",
                timings.lag_seconds,
            )
        yield CounterMetricFamily(
            "alarms_journal_read_seconds_total",
            "Seconds spent reading the journal; over alarms_reads_total, the mean read.",
            value=timings.read_seconds,
        )
        yield CounterMetricFamily(
            "alarms_fan_out_seconds_total",
            "Seconds spent queueing what the journal reads found to every stream.",
            value=timings.fan_out_seconds,
        )
        families: dict[str, CounterMetricFamily] = {}
        for name, help_text, labels, value in broker.counters.series():
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
        yield from families.values()

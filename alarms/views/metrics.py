"""``GET /alarms/metrics/``: the broker's state and counters in Prometheus text format.

The counters come from :class:`alarms.broker.counters.Counters`, field by
field: a counter added there is exposed here.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms.broker import get_broker
from alarms.broker.base import BaseBroker
from alarms.views.access import refusal


@never_cache
@require_GET
async def metrics(request: HttpRequest) -> HttpResponse:
    if refused := await refusal(request):
        return refused
    return HttpResponse(
        exposition(get_broker()), content_type="text/plain; version=0.0.4; charset=utf-8"
    )


def exposition(broker: BaseBroker) -> str:
    """Every gauge and counter of ``broker``, as the Prometheus text format has them."""
    timings = broker.timings
    gauges = [
        ("alarms_streams_open", "Streams open in this process.", len(broker.subscribers)),
        (
            "alarms_users_streaming",
            "Signed-in users with a stream open in this process.",
            len(broker.subscribers.by_user),
        ),
        ("alarms_alarms_current", "Live or scheduled alarms the broker holds.", len(broker.alarms)),
        (
            "alarms_journal_position",
            "Last change journal row the broker has read.",
            broker.head,
        ),
        ("alarms_last_read_ms", "How long the last journal read took.", f"{timings.read_ms:.1f}"),
        (
            "alarms_last_fan_out_ms",
            "How long queueing the last changes to every stream took.",
            f"{timings.fan_out_ms:.1f}",
        ),
        (
            "alarms_broker_lag_seconds",
            "From the newest journal row's write to its read.",
            f"{timings.lag_s:.3f}",
        ),
    ]
    lines = []
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    described: set[str] = set()
    for name, help_text, labels, value in broker.counters.series():
        if name not in described:
            described.add(name)
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"

"""``GET /alarms/metrics/``: the broker's counters in Prometheus text format."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms.broker import get_broker
from alarms.views.access import refusal


@never_cache
@require_GET
async def metrics(request: HttpRequest) -> HttpResponse:
    if refused := await refusal(request):
        return refused
    broker = get_broker()
    stats = broker.stats
    lines = [
        "# HELP alarms_streams_open Streams open in this process.",
        "# TYPE alarms_streams_open gauge",
        f"alarms_streams_open {len(broker.subscribers)}",
        "# HELP alarms_users_streaming Signed-in users with a stream open in this process.",
        "# TYPE alarms_users_streaming gauge",
        f"alarms_users_streaming {len(broker.by_user)}",
        "# HELP alarms_alarms_current Live or scheduled alarms the broker holds.",
        "# TYPE alarms_alarms_current gauge",
        f"alarms_alarms_current {len(broker.alarms)}",
        "# HELP alarms_journal_position Last change journal row the broker has read.",
        "# TYPE alarms_journal_position gauge",
        f"alarms_journal_position {broker.head}",
        "# HELP alarms_last_read_ms How long the last journal read took.",
        "# TYPE alarms_last_read_ms gauge",
        f"alarms_last_read_ms {broker.timings['read_ms']:.1f}",
        "# HELP alarms_last_fan_out_ms How long queueing the last changes to every stream took.",
        "# TYPE alarms_last_fan_out_ms gauge",
        f"alarms_last_fan_out_ms {broker.timings['fan_out_ms']:.1f}",
        "# HELP alarms_broker_lag_seconds From the newest journal row's write to its read.",
        "# TYPE alarms_broker_lag_seconds gauge",
        f"alarms_broker_lag_seconds {broker.timings['lag_s']:.3f}",
        "# HELP alarms_connects_total Streams opened.",
        "# TYPE alarms_connects_total counter",
        f"alarms_connects_total {stats['connects']}",
        "# HELP alarms_resumes_total Reconnects that replayed exactly what was missed.",
        "# TYPE alarms_resumes_total counter",
        f"alarms_resumes_total {stats['resumes']}",
        "# HELP alarms_resumes_snapshot_total Reconnects whose Last-Event-ID was unknown or "
        "pruned (a fresh snapshot was sent).",
        "# TYPE alarms_resumes_snapshot_total counter",
        f"alarms_resumes_snapshot_total {stats['resumes_snapshot']}",
        "# HELP alarms_streams_refused_total Streams refused, by reason.",
        "# TYPE alarms_streams_refused_total counter",
        f'alarms_streams_refused_total{{reason="full"}} {stats["refused_full"]}',
        f'alarms_streams_refused_total{{reason="address"}} {stats["refused_address"]}',
        "# HELP alarms_events_total Events queued to streams.",
        "# TYPE alarms_events_total counter",
        f"alarms_events_total {stats['events']}",
        "# HELP alarms_events_delivered_total Events written to streams, replays included "
        "(queued events of a stream dropped as too slow never are).",
        "# TYPE alarms_events_delivered_total counter",
        f"alarms_events_delivered_total {stats['delivered']}",
        "# HELP alarms_reads_total Journal reads by the broker.",
        "# TYPE alarms_reads_total counter",
        f"alarms_reads_total {stats['reads']}",
        "# HELP alarms_notifications_total NOTIFY messages received.",
        "# TYPE alarms_notifications_total counter",
        f"alarms_notifications_total {stats['notifications']}",
        "# HELP alarms_streams_closed_total Streams the server closed, by reason.",
        "# TYPE alarms_streams_closed_total counter",
    ]
    for reason in ("slow", "replaced", "lifetime", "shutdown", "signed_out", "session_expired"):
        lines.append(
            f'alarms_streams_closed_total{{reason="{reason}"}} {stats["closed_" + reason]}'
        )
    lines += [
        "# HELP alarms_stalled_aborted_total Connections dropped because the client read "
        "nothing for SLOW_CLIENT_TIMEOUT (see alarms.asgi).",
        "# TYPE alarms_stalled_aborted_total counter",
        f"alarms_stalled_aborted_total {stats['aborted_stalled']}",
    ]
    return HttpResponse(
        "\n".join(lines) + "\n", content_type="text/plain; version=0.0.4; charset=utf-8"
    )

"""The broker's counters, typed: each is a field, and ``/alarms/metrics/`` is made from them.

A field's metadata names the Prometheus series (and labels) it is exposed as,
so a counter added here is exposed without touching the view, and a misspelt
counter is an ``AttributeError`` (the class has slots), never a silent 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

#: Why the server closed a stream (``Subscriber.close``).
CloseReason = Literal[
    "slow", "replaced", "lifetime", "shutdown", "signed_out", "session_expired", "preferences"
]


def _counter(name: str, help_text: str, **labels: str) -> Any:
    return field(default=0, metadata={"name": name, "help": help_text, "labels": labels})


_REFUSED = "Streams refused, by reason."
_CLOSED = "Streams the server closed, by reason."


@dataclass(slots=True)
class Counters:
    connects: int = _counter("alarms_connects_total", "Streams opened.")
    resumes: int = _counter(
        "alarms_resumes_total", "Reconnects that replayed exactly what was missed."
    )
    resumes_snapshot: int = _counter(
        "alarms_resumes_snapshot_total",
        "Reconnects whose Last-Event-ID was unknown or pruned (a fresh snapshot was sent).",
    )
    refused_full: int = _counter("alarms_streams_refused_total", _REFUSED, reason="full")
    refused_address: int = _counter("alarms_streams_refused_total", _REFUSED, reason="address")
    events: int = _counter("alarms_events_total", "Events queued to streams.")
    delivered: int = _counter(
        "alarms_events_delivered_total",
        "Events written to streams, replays included "
        "(queued events of a stream dropped as too slow never are).",
    )
    reads: int = _counter("alarms_reads_total", "Journal reads by the broker.")
    notifications: int = _counter("alarms_notifications_total", "NOTIFY messages received.")
    redis_wakes: int = _counter(
        "alarms_redis_wakes_total", "Wake-ups received from Redis (ALARMS['WAKE_URL'])."
    )
    reauthorised: int = _counter(
        "alarms_users_reauthorised_total",
        "Times a user's open streams were authorised again after an access change.",
    )
    closed_slow: int = _counter("alarms_streams_closed_total", _CLOSED, reason="slow")
    closed_replaced: int = _counter("alarms_streams_closed_total", _CLOSED, reason="replaced")
    closed_lifetime: int = _counter("alarms_streams_closed_total", _CLOSED, reason="lifetime")
    closed_shutdown: int = _counter("alarms_streams_closed_total", _CLOSED, reason="shutdown")
    closed_signed_out: int = _counter("alarms_streams_closed_total", _CLOSED, reason="signed_out")
    closed_session_expired: int = _counter(
        "alarms_streams_closed_total", _CLOSED, reason="session_expired"
    )
    closed_preferences: int = _counter("alarms_streams_closed_total", _CLOSED, reason="preferences")
    aborted_stalled: int = _counter(
        "alarms_stalled_aborted_total",
        "Connections dropped because the client read nothing for SLOW_CLIENT_TIMEOUT "
        "(see alarms.asgi).",
    )

    def closed(self, reason: CloseReason) -> None:
        name = f"closed_{reason}"
        setattr(self, name, getattr(self, name) + 1)

    def series(self) -> list[tuple[str, str, dict[str, str], int]]:
        """Every counter as (series name, help, labels, value), in field order."""
        return [
            (f.metadata["name"], f.metadata["help"], f.metadata["labels"], getattr(self, f.name))
            for f in fields(self)
        ]


@dataclass(slots=True)
class Timings:
    """Where the broker's time goes, in seconds (Prometheus's unit).

    The durations are sums, exposed as counters: Prometheus takes their rate,
    and divided by the rate of ``Counters.reads`` it is the mean read over any
    window, where a last value would show only whichever read came last.
    """

    #: Every journal read (``alarms_reads_total`` counts them).
    read_seconds: float = 0.0
    #: Queueing what the reads found to every stream.
    fan_out_seconds: float = 0.0
    #: From the newest journal row's write to its read, at the last read that
    #: found rows; None until one has.
    lag_seconds: float | None = None

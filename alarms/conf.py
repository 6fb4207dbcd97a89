"""The app's settings: one ``ALARMS`` dict merged over ``DEFAULTS``, read lazily."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Dotted path of the broker class; None picks PostgresBroker when DATABASE is
    # PostgreSQL and MemoryBroker (in-process wake-ups plus polling) otherwise.
    "BROKER": None,
    # Database alias the broker reads and listens on.
    "DATABASE": "default",
    # Seconds between polls of the change journal when nothing wakes the broker
    # (MemoryBroker: how soon a write from another process is seen). PostgresBroker
    # uses SAFETY_POLL_INTERVAL instead: None means it never polls while idle
    # (RedisBroker, which WAKE_URL picks: once a minute).
    "POLL_INTERVAL": 0.5,
    "SAFETY_POLL_INTERVAL": None,
    # PostgreSQL NOTIFY channel (and Redis channel, with WAKE_URL).
    "CHANNEL": "alarms",
    # On PostgreSQL, a Redis server ("redis://host:6379/0", "rediss://", "unix://")
    # that wakes the brokers instead of NOTIFY (alarms.broker.redis): for many
    # processes, whose listening connections slow every notifying commit. The
    # journal stays in PostgreSQL. None: NOTIFY. Needs the "redis" extra.
    "WAKE_URL": None,
    # Seconds of silence after which a stream sends a comment, so that proxies keep
    # it open: under the tightest common idle timeout (30 s, docs/deployment.md).
    "HEARTBEAT": 20,
    # Reconnection delay sent to EventSource (milliseconds).
    "RETRY_MS": 2000,
    # Events buffered per stream before it is judged too slow and closed.
    "QUEUE_SIZE": 256,
    # Streams one signed-in user may hold in one process; the oldest is closed beyond it.
    "MAX_STREAMS_PER_USER": 10,
    # Streams one process holds at most; beyond it the stream answers 503.
    "MAX_STREAMS": 20000,
    # Seconds a stream lives before the server ends it (the client reconnects and resumes).
    "MAX_LIFETIME": 3600,
    # Threads (and so database connections) the broker uses for reads, including
    # the per-connect loads of sessions, users and receipts.
    "DB_THREADS": 1,
    # Receipts (seen, dismiss) a process records at once on alarms.asgi.direct_streams'
    # path, each in a thread with a database connection. Fewer keeps a broadcast's
    # fan-out quick under a dismissal storm; more answers the storm sooner.
    "RECEIPT_THREADS": 2,
    # Seconds at most a receipt waits, after an alarm was queued to streams, for
    # every stream to take it and then for the proxy and clients to be given it
    # (0.5 ms per stream): a dismissal can be recorded a moment later, an alarm
    # must be shown now (0: never wait).
    "RECEIPTS_YIELD": 2.0,
    # How much lower the CPU priority of those receipts' threads is (a nice value
    # added, Linux only): where cores are busy, the streams' loop, the proxy and
    # the other processes' deliveries go first; an idle core still runs them at
    # once (0: the process's own priority).
    "RECEIPTS_NICE": 10,
    # Seconds the cyclic garbage collector waits after a broadcast starts, so
    # that a full collection does not land among thousands of writes (0: off).
    "GC_PAUSE": 2.0,
    # Seconds between SIGTERM and the server's own shutdown, in which every stream
    # is ended with a short retry hint (0: leave SIGTERM to the server).
    "SHUTDOWN_GRACE": 1.0,
    # Bearer token that may read /alarms/metrics/ and /alarms/health/ besides staff
    # users (None: staff only).
    "METRICS_TOKEN": None,
    # Streams one client address may hold in one process; beyond it the stream
    # answers 429 (None: no cap). Behind a proxy, run daphne with --proxy-headers
    # so that the address is the client's, not the proxy's.
    "MAX_STREAMS_PER_ADDRESS": 100,
    # Seconds a stream's socket may refuse more data (a client that stopped
    # reading) before the connection is dropped. Needs alarms.asgi.flow_control.
    "SLOW_CLIENT_TIMEOUT": 30,
    # Origins ("https://app.example.com") whose pages may open the stream and post
    # seen/dismiss with credentials (CORS). Same-origin pages need no entry.
    "CORS_ALLOWED_ORIGINS": [],
    # Storm control: at most STORM_LIMIT alarms to one audience per STORM_WINDOW
    # seconds (None: no cap).
    "STORM_LIMIT": 10,
    "STORM_WINDOW": 60,
    # prune_alarms: days an ended (expired or withdrawn) alarm, with its receipts,
    # is kept; days the change journal is kept (a client offline longer than that
    # resumes from a fresh snapshot instead of an exact replay).
    "RETENTION_DAYS": 90,
    "JOURNAL_RETENTION_DAYS": 7,
    # Journal rows a resuming stream may have missed before it gets a fresh
    # snapshot instead of an exact replay: a forged or very old Last-Event-ID
    # costs no more than a new connect.
    "REPLAY_MAX_ROWS": 1000,
    # Template the app's pages (the alarm centre) extend; it must have a "content"
    # block (and may have "title"). None: the app's own standalone page, so that
    # the app works in a project without a base.html.
    "BASE_TEMPLATE": None,
    # Live reach in the admin (alarms.reach): seconds between two writes of a
    # broker's presence row when its streams change (at most), and seconds after
    # which a row no longer counts (its process is taken for gone). A broker with
    # open streams touches its row every third of PRESENCE_TTL.
    "PRESENCE_INTERVAL": 2.0,
    "PRESENCE_TTL": 60,
    # Escalation by email (docs/escalation.md): None (off) or a dict of the keys of
    # ESCALATE_DEFAULTS, merged over them. BASE_URL is required.
    "ESCALATE": None,
}

ESCALATE_DEFAULTS: dict[str, Any] = {
    # Minutes a live alarm may go unseen by a reader before it is emailed to them.
    "AFTER": 10,
    # Levels that escalate.
    "LEVELS": ["critical"],
    # The sender address; None: DEFAULT_FROM_EMAIL.
    "FROM": None,
    # Emails one pass of escalate_alarms sends at most.
    "BATCH": 500,
    # The site's address the links in the emails start with, e.g. "https://alarms.example.com".
    "BASE_URL": None,
    # Seconds a claimed email may stay unsent before another process sends it
    # instead (its sender is taken to have died). Longer than EMAIL_TIMEOUT.
    "LEASE": 300,
    # Days the "mark as seen" link in an email stays valid.
    "LINK_DAYS": 7,
}


@cache
def get_config() -> dict[str, Any]:
    user = getattr(settings, "ALARMS", {}) or {}
    unknown = set(user) - set(DEFAULTS)
    config = {**DEFAULTS, **user}
    config["_unknown"] = sorted(unknown)
    return config


def escalate_config() -> dict[str, Any] | None:
    """``ALARMS["ESCALATE"]`` merged over ``ESCALATE_DEFAULTS``; None when escalation
    is off. The values are not checked here: ``alarms.checks`` does (alarms.E008)."""
    value = get_config()["ESCALATE"]
    if not value:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"ALARMS['ESCALATE'] must be None or a dict, not {value!r}.")
    return {**ESCALATE_DEFAULTS, **value}


@receiver(setting_changed)
def _clear_config(*, setting: str, **kwargs: Any) -> None:
    if setting in ("ALARMS", "DATABASES"):
        get_config.cache_clear()

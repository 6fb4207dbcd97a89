"""The optional Redis wake-up transport (``ALARMS["WAKE_URL"]``), for PostgreSQL.

The journal stays in PostgreSQL as the source of truth; only the wake-up moves.
Without it every journal write ``NOTIFY``s in its transaction, and PostgreSQL
then queues each commit's notification under one cluster-wide lock and signals
every listening backend: the write rate falls with the number of listening
processes (``docs/scaling.md``). With it, a journal write commits without a
``NOTIFY`` and then ``PUBLISH``es on Redis, which fans the message out to the
brokers' subscriptions; the commit no longer pays for the listeners.

What keeps "never misses one" true with two systems:

- The ``PUBLISH`` follows the commit, so a woken broker always finds the row.
- A ``PUBLISH`` that fails (Redis down or slow) falls back to a ``NOTIFY`` after
  the commit, and Redis is left alone for ``_BACKOFF`` seconds: every broker
  still listens on PostgreSQL, which costs a commit nothing while nobody
  notifies.
- A broker whose subscription is lost polls the journal every
  ``POLL_INTERVAL`` until it is back, then reads once more to catch up.
- A writer that dies between its commit and its ``PUBLISH`` leaves its row for
  the next wake-up: ``SAFETY_POLL_INTERVAL`` bounds how long that can be, and
  under this broker it is ``_SAFETY_POLL`` when unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from django.db import connections

from alarms.broker.postgres import PostgresBroker
from alarms.conf import get_config

logger = logging.getLogger("alarms.broker")

#: Seconds a subscription may be silent before it is asked for a PING, and
#: seconds it then has to answer before it is taken for dead (a half-open TCP
#: connection raises nothing by itself).
_PING_AFTER = 15.0
_PING_WITHIN = 5.0
#: Seconds a writer leaves Redis alone after a failed PUBLISH (it NOTIFYs meanwhile).
_BACKOFF = 1.0
#: Seconds a PUBLISH (or its connect) may take before it counts as failed: it
#: runs after the commit, in the request that wrote.
_PUBLISH_TIMEOUT = 0.5
#: This broker's SAFETY_POLL_INTERVAL when it is unset: one read a minute.
_SAFETY_POLL = 60.0

SCHEMES = ("redis", "rediss", "unix")


def wake_url() -> str | None:
    """``ALARMS["WAKE_URL"]``: the Redis server journal writes wake the brokers
    through, or None (they ``NOTIFY`` on PostgreSQL)."""
    url = get_config()["WAKE_URL"]
    return str(url) if url else None


def url_problem(url: Any) -> str | None:
    """Why ``url`` cannot be a wake URL, or None."""
    if not isinstance(url, str):
        return f"must be a redis://, rediss:// or unix:// URL, not {url!r}"
    if urlsplit(url).scheme not in SCHEMES:
        return f"must be a redis://, rediss:// or unix:// URL, not {url!r}"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "needs the redis package (the app's \"redis\" extra: pip install '.[redis]')"
    return None


class RedisBroker(PostgresBroker):
    """A :class:`PostgresBroker` also woken by ``PUBLISH`` on Redis.

    It keeps its ``LISTEN`` connection for the writers' fallback ``NOTIFY``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.url = wake_url()
        self._subscriber: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    @classmethod
    def check(cls) -> list[Any]:
        from django.core.checks import Error

        messages = super().check()
        problem = url_problem(get_config()["WAKE_URL"])
        if problem:
            messages.append(
                Error(
                    f"ALARMS['WAKE_URL'] {problem}.",
                    hint="RedisBroker is the broker for ALARMS['WAKE_URL']; leave both unset "
                    "to be woken by PostgreSQL's NOTIFY.",
                    id="alarms.E009",
                )
            )
        return messages

    async def on_start(self) -> None:
        await super().on_start()
        if self._subscriber is None or self._subscriber.done():
            self.subscribed = asyncio.Event()
            self._subscriber = asyncio.get_running_loop().create_task(
                self._subscribe(), name="alarms-redis-subscribe"
            )
        # As with LISTEN: subscribe before the first read, so a write between
        # the two is seen. A Redis that is down delays the start by this much
        # at most; the broker then polls until the subscription is made.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5)

    async def on_stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        await super().on_stop()

    def health(self) -> dict[str, dict[str, Any]]:
        checks = super().health()
        # Always ok: without Redis, writers NOTIFY and this broker polls, so alarms
        # are not late, and a shared Redis down must not take every process out
        # of a load balancer's rotation. alarms_redis_subscribed says it is down.
        checks["redis"] = {"ok": True, "subscribed": self.subscribed.is_set()}
        return checks

    def idle_poll(self) -> float | None:
        safety = super().idle_poll()
        if safety is None:
            safety = _SAFETY_POLL
        if self.subscribed.is_set():
            return safety
        # Writers that reach Redis while this broker cannot would wake nobody here.
        return min(float(self.config["POLL_INTERVAL"]), safety)

    async def _subscribe(self) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert self.url is not None
        channel = self.config["CHANNEL"]
        failures = 0
        while True:
            # No retries of redis-py's own: a reconnect must be seen here, since
            # whatever was published while it lasted has to be read.
            client: Any = redis.asyncio.Redis.from_url(
                self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                if failures:
                    logger.warning("subscribed again on Redis after %d failures", failures)
                failures = 0
                self.subscribed.set()
                # Catch up with whatever was published while not subscribed (and
                # leave the poll that ran meanwhile).
                self.wake()
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                logger.warning("Redis subscription lost (%s); again in %.1fs", exc, delay)
                if self.subscribed.is_set():
                    self.subscribed.clear()
                    self.wake()  # so that the read loop polls until it is back
                await asyncio.sleep(delay)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _receive(self, pubsub: Any) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=_PING_WITHIN if pinged else _PING_AFTER)
            if message is None:
                if pinged:
                    raise TimeoutError("no answer to PING")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message["type"] in ("message", "pmessage"):
                self.counters.redis_wakes += 1
                self.wake()


# -- the writers' side --------------------------------------------------------

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
_down_until = 0.0


def _client(url: str) -> Any:
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(
                url,
                socket_timeout=_PUBLISH_TIMEOUT,
                socket_connect_timeout=_PUBLISH_TIMEOUT,
                retry=None,
            )
            _clients[url] = client
        return client


def publish(url: str, channel: str) -> bool:
    """``PUBLISH`` a wake-up on Redis; False when it failed, or Redis failed less
    than ``_BACKOFF`` seconds ago. Safe from any thread."""
    global _down_until
    if time.monotonic() < _down_until:
        return False
    import redis

    try:
        _client(url).publish(channel, b"")
    except redis.RedisError as exc:
        _down_until = time.monotonic() + _BACKOFF
        logger.warning("PUBLISH on Redis failed (%s); waking by NOTIFY meanwhile", exc)
        return False
    return True


def wake_after_commit(using: str) -> None:
    """Wake every broker after a journal commit: by Redis, else by ``NOTIFY``.

    Runs as an ``on_commit`` hook, outside any transaction: the ``NOTIFY`` is
    its own, sent at once.
    """
    config = get_config()
    url = wake_url()
    if url is not None and publish(url, config["CHANNEL"]):
        return
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [config["CHANNEL"]])
    except Exception:
        # The row is committed: a broker reads it at its next wake-up, or at
        # SAFETY_POLL_INTERVAL. The writer's request must not fail for it.
        logger.exception("neither PUBLISH nor NOTIFY could wake the brokers")

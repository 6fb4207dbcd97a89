"""The Redis wake-up transport (``ALARMS["WAKE_URL"]``) against a real redis-server.

Every test runs servers on PostgreSQL with ``WAKE_URL`` set, and watches the two
ways a write can wake them: a subscription of its own on Redis, and a ``LISTEN``
of its own on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from django.db import connection

from alarms import api, runtime
from alarms.broker import redis as redis_wake
from tests.e2e.conftest import Server, http_request, metric, open_stream
from tests.e2e.redis_server import RedisServer
from tests.helpers import en, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CHANNEL = "alarms"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


class Watch:
    """Counts the wake-ups on both transports: Redis messages and NOTIFYs."""

    def __init__(self, url: str) -> None:
        self.pubsub: Any = redis.Redis.from_url(url).pubsub()
        self.pubsub.subscribe(CHANNEL)
        confirmed = self.pubsub.get_message(timeout=10)
        assert confirmed is not None and confirmed["type"] == "subscribe", confirmed
        self.listen = psycopg.connect(**runtime.listen_params(connection))
        self.listen.execute(f"LISTEN {CHANNEL}")

    def published(self) -> int:
        count = 0
        while (message := self.pubsub.get_message(timeout=0.2)) is not None:
            count += message["type"] == "message"
        return count

    def notified(self) -> int:
        return sum(1 for _ in self.listen.notifies(timeout=0.2))

    def close(self) -> None:
        self.pubsub.close()
        self.listen.close()


@pytest.fixture
def watch(redis_server: RedisServer) -> Iterator[Watch]:
    watching = Watch(redis_server.url)
    yield watching
    watching.close()


def health(server: Server) -> dict[str, Any]:
    _status, _headers, body = http_request(
        server.port, "GET", "/alarms/health/", {"Authorization": "Bearer t0ken"}
    )
    return json.loads(body)


def subscribed(server: Server) -> bool:
    return bool(health(server)["checks"]["redis"]["subscribed"])


def test_processes_are_woken_through_redis_and_not_by_notify(
    server_factory, redis_server, watch, make_user, session_cookie
):
    one = server_factory(WAKE_URL=redis_server.url, METRICS_TOKEN="t0ken")
    two = server_factory(WAKE_URL=redis_server.url, METRICS_TOKEN="t0ken")
    cookie = session_cookie(make_user("rex"))
    with open_stream(one, cookie) as a, open_stream(two, cookie) as b:
        a.opened()
        b.opened()
        # A third process writes: the command, with the same settings.
        one.manage("send_alarm", "--translation", "en", "Through Redis", "Woken by PUBLISH")
        assert a.next_event(10).json()["title"] == "Through Redis"
        assert b.next_event(10).json()["title"] == "Through Redis"
    assert watch.published() >= 1
    assert watch.notified() == 0
    assert metric(two, "alarms_redis_wakes_total") >= 1
    assert metric(two, "alarms_notifications_total") == 0
    assert health(two)["checks"]["redis"] == {"ok": True, "subscribed": True}
    assert metric(two, "alarms_redis_subscribed") == 1


def test_a_writer_that_cannot_publish_wakes_by_notify(
    server_factory, redis_server, watch, make_user, session_cookie
):
    # A long poll: only a wake-up can bring the alarm within the test's wait.
    server = server_factory(WAKE_URL=redis_server.url, METRICS_TOKEN="t0ken", POLL_INTERVAL=60)
    cookie = session_cookie(make_user("nia"))
    with open_stream(server, cookie) as stream:
        stream.opened()
        redis_server.stop()
        wait_for(lambda: not subscribed(server), 15, "the server sees Redis gone")
        # Delivery goes on, so the process stays in rotation; the gauge tells.
        assert health(server)["status"] == "ok"
        assert metric(server, "alarms_redis_subscribed") == 0
        server.manage("send_alarm", "--translation", "en", "Redis down", "Woken by NOTIFY")
        assert stream.next_event(10).json()["title"] == "Redis down"
        assert watch.notified() >= 1
        assert metric(server, "alarms_notifications_total") >= 1

        redis_server.start()
        wait_for(lambda: subscribed(server), 30, "the server subscribes again")
        watch.pubsub.close()
        watching_again = Watch(redis_server.url)
        try:
            server.manage("send_alarm", "--translation", "en", "Redis back", "Woken by PUBLISH")
            assert stream.next_event(10).json()["title"] == "Redis back"
            assert watching_again.published() >= 1
            assert watching_again.notified() == 0
        finally:
            watching_again.close()


def test_a_lost_subscription_reads_what_it_missed(
    server_factory, redis_server, make_user, session_cookie, settings, monkeypatch
):
    """Writes that wake nobody (a writer that died between its commit and its
    PUBLISH, or one that reached Redis while this server could not) are read when
    the subscription is lost and again when it is back, and while it is down
    every POLL_INTERVAL."""
    settings.ALARMS = {**settings.ALARMS, "WAKE_URL": redis_server.url}
    woken: list[str] = []
    monkeypatch.setattr(redis_wake, "wake_after_commit", woken.append)
    server = server_factory(WAKE_URL=redis_server.url, METRICS_TOKEN="t0ken", POLL_INTERVAL=60)
    cookie = session_cookie(make_user("lou"))
    with open_stream(server, cookie) as stream:
        stream.opened()
        first = api.send_alarm(en("Unannounced"))
        assert woken == ["default"]  # this process wrote, and woke no one
        # Subscribed, the server reads only when woken (or once a minute).
        reads = metric(server, "alarms_reads_total")
        with pytest.raises(TimeoutError):
            stream.next_event(1.5)
        assert metric(server, "alarms_reads_total") == reads
        redis_server.stop()
        assert stream.next_event(10).json()["id"] == first.pk  # the loss wakes it

        second = api.send_alarm(en("While unsubscribed"))
        redis_server.start()
        assert stream.next_event(30).json()["id"] == second.pk  # the subscription's return


def test_unsubscribed_the_broker_polls_every_poll_interval(settings):
    settings.ALARMS = {**settings.ALARMS, "WAKE_URL": "redis://127.0.0.1:1/0", "POLL_INTERVAL": 0.3}
    broker = redis_wake.RedisBroker()
    assert broker.idle_poll() == 0.3
    broker.subscribed.set()
    assert broker.idle_poll() == 60.0
    settings.ALARMS = {**settings.ALARMS, "SAFETY_POLL_INTERVAL": 5}
    broker = redis_wake.RedisBroker()
    broker.subscribed.set()
    assert broker.idle_poll() == 5.0

"""``GET /alarms/health/``: access, each check, and a real server losing its listener."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

import alarms.broker as broker_module
from alarms import api
from alarms.broker.cache import Viewer
from alarms.broker.postgres import PostgresBroker
from alarms.broker.reads import ConnectState
from alarms.models import AlarmChange
from alarms.views import health as health_module
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Server
from tests.factories import ago, make_user
from tests.helpers import until, wait_for
from tests.sse import Stream

URL = reverse("alarms:health")
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# The end-to-end fixtures, for the real-server tests at the end.
server_factory = e2e.server_factory
session_cookie = e2e.session_cookie
make_e2e_user = e2e.make_user

Runner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


async def get_health(client: AsyncClient | None = None, **headers: str) -> tuple[int, Any]:
    response = await (client or AsyncClient()).get(URL, headers=headers or AUTH)
    return response.status_code, json.loads(response.content)


@pytest.fixture
def run(transactional_db: None) -> Iterator[Callable[..., None]]:
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

        # No SIGTERM handler in the test process; polling slow enough that only
        # a wake-up reads the journal.
        alarms = {"METRICS_TOKEN": TOKEN, "SHUTDOWN_GRACE": 0, "POLL_INTERVAL": 60, **settings}
        with override_settings(ALARMS=alarms):
            asyncio.run(main())

    yield runner


# -- access ----------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(ALARMS={"METRICS_TOKEN": TOKEN})
def test_only_staff_or_the_token() -> None:
    anonymous = Client().get(URL)
    reader = Client()
    reader.force_login(make_user("reader"))
    wrong = Client().get(URL, headers={"Authorization": "Bearer nope"})

    for response in (anonymous, reader.get(URL), wrong):
        assert response.status_code == 403
        assert response.content == b"Staff or the metrics token only.\n"


@pytest.mark.django_db
def test_no_token_set_means_staff_only() -> None:
    assert Client().get(URL, headers={"Authorization": "Bearer "}).status_code == 403
    assert Client().get(URL, headers={"Authorization": "Bearer None"}).status_code == 403


# -- the checks --------------------------------------------------------------------


def test_ok_for_the_token_and_for_staff(run: Runner) -> None:
    staff = make_user("operator", is_staff=True)
    api.send_alarm({"en": {"title": "T", "message": "M"}})

    async def test() -> None:
        status, body = await get_health()
        assert status == 200
        assert body["status"] == "ok"
        checks = body["checks"]
        assert checks["database"]["ok"] is True
        assert checks["broker"] == {
            "ok": True,
            "running": True,
            "shutting_down": False,
            "class": type(broker_module.get_broker()).__name__,
        }
        latest = await sync_to_async(lambda: AlarmChange.objects.order_by("-id")[0].pk)()
        assert checks["journal"] == {
            "ok": True,
            "latest": latest,
            "head": latest,
            "lag": 0,
            "oldest_unread_seconds": None,
        }
        assert checks["streams"] == {"ok": True, "open": 0, "max": 20000}
        if connection.vendor == "postgresql":
            assert checks["listener"] == {"ok": True, "listening": True, "connected": True}
        else:
            assert "listener" not in checks

        client = AsyncClient()
        await client.aforce_login(staff)
        response = await client.get(URL)
        assert response.status_code == 200
        assert "no-cache" in response["Cache-Control"]
        assert response["Content-Type"] == "application/json"

    run(test)


def test_unread_journal_rows_make_it_degraded_until_the_broker_reads(run: Runner) -> None:
    async def test() -> None:
        assert (await get_health())[0] == 200  # starts the broker
        broker = broker_module.get_broker()
        # A row no broker was woken for, written five minutes ago.
        row = await sync_to_async(AlarmChange.objects.create)(alarm_id=1, created_at=ago(minutes=5))

        status, body = await get_health()
        assert status == 503
        assert body["status"] == "degraded"
        journal = body["checks"]["journal"]
        assert journal["ok"] is False
        # Ids, not rows: the journal's numbers may skip.
        assert journal["latest"] == row.pk
        assert journal["lag"] == row.pk - journal["head"] > 0
        assert journal["oldest_unread_seconds"] >= 300

        broker.wake()
        await until(lambda: broker.head >= row.pk, 5)
        status, body = await get_health()
        assert (status, body["status"], body["checks"]["journal"]["lag"]) == (200, "ok", 0)

    run(test)


def test_a_database_that_does_not_answer_is_down(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def hang(*args: Any) -> Any:
        release.wait(10)
        raise RuntimeError("released")

    monkeypatch.setattr(health_module, "DB_TIMEOUT", 0.2)
    monkeypatch.setattr(health_module, "_probe", hang)

    async def test() -> None:
        try:
            status, body = await get_health()
        finally:
            release.set()
        assert status == 503
        assert body["status"] == "down"
        assert body["checks"]["database"] == {"ok": False, "error": "no answer within 0.2 s"}
        assert body["checks"]["journal"]["ok"] is False
        assert body["checks"]["broker"]["ok"] is True

    run(test)


def test_a_broker_that_cannot_start_is_down(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: Any) -> None:
        raise RuntimeError("no journal table")

    async def test() -> None:
        broker = broker_module.get_broker()
        monkeypatch.setattr(broker.reads, "everything", fail.__get__(broker.reads))
        status, body = await get_health()
        assert status == 503
        assert body["status"] == "down"
        assert body["checks"]["broker"]["ok"] is False
        assert body["checks"]["broker"]["running"] is False
        assert body["checks"]["broker"]["error"] == "failed to start: no journal table"
        assert body["checks"]["database"]["ok"] is True

    run(test)


def test_a_process_full_of_streams_is_degraded(run: Runner) -> None:
    async def test() -> None:
        broker = broker_module.get_broker()
        await broker.ensure_started()
        broker.subscribe(ConnectState(Viewer(), set(), set()))
        status, body = await get_health()
        assert status == 503
        assert body["status"] == "degraded"
        assert body["checks"]["streams"] == {"ok": False, "open": 1, "max": 1}

    run(test, MAX_STREAMS=1)


def test_a_process_shutting_down_is_down(run: Runner) -> None:
    async def test() -> None:
        broker = broker_module.get_broker()
        await broker.ensure_started()
        broker.shutting_down = True
        status, body = await get_health()
        assert (status, body["status"]) == (503, "down")
        assert body["checks"]["broker"]["shutting_down"] is True

    run(test)


@pytest.mark.postgres
def test_a_lost_listener_is_degraded(run: Runner) -> None:
    async def test() -> None:
        assert (await get_health())[0] == 200
        broker = broker_module.get_broker()
        assert isinstance(broker, PostgresBroker)
        broker.listening.clear()
        status, body = await get_health()
        assert (status, body["status"]) == (503, "degraded")
        assert body["checks"]["listener"]["ok"] is False

    run(test)


# -- a real server ------------------------------------------------------------------


def fetch(server: Server, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{server.url}{URL}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if exc.code == 503 else body


@pytest.mark.e2e
def test_a_real_server_reports_its_streams(
    server_factory: e2e.ServerFactory,
    make_e2e_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
) -> None:
    server = server_factory(METRICS_TOKEN=TOKEN)
    assert fetch(server, token=None) == (403, b"Staff or the metrics token only.\n")
    cookie = session_cookie(make_e2e_user("watcher"))
    with Stream(f"{server.url}/alarms/stream/", cookies=dict([cookie])) as stream:
        assert stream.status == 200
        stream.opened()
        status, body = fetch(server)
    assert (status, body["status"]) == (200, "ok")
    assert body["checks"]["streams"]["open"] == 1
    assert body["checks"]["broker"]["running"] is True


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_real_server_whose_listener_is_killed_is_degraded_then_recovers(
    server_factory: e2e.ServerFactory,
) -> None:
    server = server_factory(METRICS_TOKEN=TOKEN)
    assert fetch(server)[0] == 200  # the broker is started and listening

    def kill_listener() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )

    # Killed again at each reconnect, the listener backs off longer each time:
    # sooner or later a check lands while it is away.
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        kill_listener()
        for _ in range(10):
            status, body = fetch(server)
            if status == 503:
                seen = body
                break
            time.sleep(0.02)
    assert seen, "the listener's loss was never reported"
    assert seen["status"] == "degraded"
    assert seen["checks"]["listener"]["ok"] is False
    assert seen["checks"]["database"]["ok"] is True

    # Left alone, it reconnects, and a write made meanwhile is read.
    api.send_alarm({"en": {"title": "While deaf", "message": "M"}})
    wait_for(lambda: fetch(server)[0] == 200, 30, "the listener back")
    status, body = fetch(server)
    assert (status, body["status"]) == (200, "ok")
    assert body["checks"]["listener"] == {"ok": True, "listening": True, "connected": True}
    assert body["checks"]["journal"]["lag"] == 0


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/alarms/health/", {}),
        ("/alarms/metrics/", {}),
        ("/alarms/stream/", {"Origin": "https://elsewhere.example"}),
    ],
)
def test_async_views_run_under_atomic_requests(db, monkeypatch, url, headers) -> None:
    # Django refuses an async view in ATOMIC_REQUESTS' transaction unless marked: a 500.
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    response = Client().get(url, headers=headers)
    assert response.status_code in (200, 403), response.status_code

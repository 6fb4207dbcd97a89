"""What only PostgreSQL can show: commit order, LISTEN/NOTIFY, a lost listener."""

from __future__ import annotations

import json
import secrets
import threading

import pytest
from django.db import connection, transaction

from alarms import api
from alarms.models import AlarmChange, AlarmReceipt
from tests.e2e.conftest import before_marker, http_request, metric, open_stream
from tests.helpers import en, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REQUESTS = 40


def test_cursor_survives_out_of_order_commits(server_factory, make_user, session_cookie, settings):
    """Writer A takes the lower journal ids but commits after writer B, which does
    not wait for it: the stream gets both, A first, and nothing early."""
    # Storm control orders the sends it checks with a lock of its own: off here,
    # so that the journal alone decides.
    settings.ALARMS = {**settings.ALARMS, "STORM_LIMIT": None}
    server = server_factory(METRICS_TOKEN="t0ken")
    cookie = session_cookie(make_user("ord"))
    a_written, release_a = threading.Event(), threading.Event()
    b_done = threading.Event()
    errors: list[BaseException] = []
    alarms: dict[str, int] = {}

    def writer_a() -> None:
        try:
            with transaction.atomic():
                alarms["A"] = api.send_alarm(en("A, lower id")).pk
                a_written.set()
                release_a.wait(10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def writer_b() -> None:
        try:
            alarms["B"] = api.send_alarm(en("B, higher id")).pk
            b_done.set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    a = threading.Thread(target=writer_a)
    b = threading.Thread(target=writer_b)
    with open_stream(server, cookie) as stream:
        stream.opened()
        try:
            a.start()
            assert a_written.wait(5)
            reads = metric(server, "alarms_reads_total")
            b.start()
            # B commits while A is open (no lock orders them), and the server's
            # broker reads B's row, past A's uncommitted one: then let A commit.
            wait_for(lambda: b_done.is_set() or ungranted_locks(), 10, "B done or waiting")
            assert b_done.is_set(), "B waited for A"
            wait_for(lambda: metric(server, "alarms_reads_total") > reads, 10, "B read")
        finally:
            release_a.set()
            a.join(10)
            b.join(10)
        assert not errors
        [events] = before_marker(stream)
    # Nothing lost, and B, held back until A's lower row committed, comes after it.
    assert [e.json()["title"] for e in events] == ["A, lower id", "B, higher id"]
    journal = AlarmChange.objects.filter(alarm_id__in=alarms.values())
    a_rows = journal.filter(alarm_id=alarms["A"]).values_list("id", flat=True)
    assert max(a_rows) < min(journal.filter(alarm_id=alarms["B"]).values_list("id", flat=True))


def ungranted_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return int(cursor.fetchone()[0])


def test_listener_killed_by_the_server_reconnects_and_catches_up(
    server_factory, make_user, session_cookie
):
    server = server_factory(METRICS_TOKEN="t0ken")
    cookie = session_cookie(make_user("lis"))
    with open_stream(server, cookie) as stream:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchall() == [(True,)]
        # Written while nobody listens: the reconnect's catch-up read finds it.
        alarm = api.send_alarm(en("While deaf"))
        event = stream.next_event(15)
        assert event.json()["id"] == alarm.pk
        after = api.send_alarm(en("After"))
        assert stream.next_event(10).json()["id"] == after.pk


def test_no_database_reads_while_idle(server_factory, make_user, session_cookie):
    server = server_factory(METRICS_TOKEN="t0ken", HEARTBEAT=0.2)
    streams = [open_stream(server, session_cookie(make_user(f"idle{i}"))) for i in range(3)]
    try:
        # The server's own clock: each heartbeat is HEARTBEAT seconds its loop
        # ran with nothing to do, however slowly this machine runs it.
        for stream in streams:
            stream.opened()
        streams[0].comments_until("", 1)
        before = metric(server, "alarms_reads_total")
        streams[0].comments_until("", 6)  # 1 s idle
        assert metric(server, "alarms_reads_total") == before
        api.send_alarm(en("Wake"))
        wait_for(lambda: metric(server, "alarms_reads_total") > before)
    finally:
        for s in streams:
            s.close()


def sessions_opened() -> int:
    """Connections PostgreSQL has let into the test database since its statistics began."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_requests_reuse_the_pools_connections(server_factory, make_user, session_cookie, settings):
    """Each ASGI request runs on a thread of its own: without the project's pool,
    every dismissal would open a PostgreSQL connection (a server process) of its own."""
    settings.ALARMS = {**settings.ALARMS, "STORM_LIMIT": None}
    server = server_factory()
    cookie = session_cookie(make_user("pooled"))
    alarms = [api.send_alarm(en(f"Pooled {i}"), audience="everyone") for i in range(REQUESTS)]
    token = secrets.token_hex(16)  # a CSRF secret of our own: cookie and header agree
    headers = {
        "Cookie": f"{cookie[0]}={cookie[1]}; csrftoken={token}",
        "X-CSRFToken": token,
        "Content-Type": "application/json",
    }
    with open_stream(server, cookie) as stream:
        stream.opening()  # the broker's threads hold their connections by now
        before = sessions_opened()
        for alarm in alarms:
            status, _, body = http_request(
                server.port,
                "POST",
                "/alarms/dismiss/",
                headers,
                json.dumps({"ids": [alarm.pk]}).encode(),
            )
            assert (status, json.loads(body)) == (200, {"updated": 1})
        opened = sessions_opened() - before
    assert AlarmReceipt.objects.filter(dismissed_at__isnull=False).count() == REQUESTS
    # The pool's connections (at most its max_size, 12), not one a request.
    assert opened <= 12, f"{opened} connections for {REQUESTS} requests"

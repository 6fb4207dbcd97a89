"""What only PostgreSQL can show: commit order, LISTEN/NOTIFY, a lost listener."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from alarms import api
from alarms.journal import ADVISORY_LOCK_KEY
from alarms.models import AlarmChange
from tests.e2e.conftest import before_marker, metric, open_stream
from tests.helpers import advisory_lock_waiters, en, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_cursor_survives_out_of_order_commits(server, make_user, session_cookie):
    """Writer A takes the lower ids but commits after writer B: nothing is lost."""
    cookie = session_cookie(make_user("ord"))
    a_written, release_a = threading.Event(), threading.Event()
    b_done = threading.Event()
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            with transaction.atomic():
                api.send_alarm(en("A, lower id"))
                a_written.set()
                release_a.wait(10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def writer_b() -> None:
        try:
            api.send_alarm(en("B, higher id"))
            b_done.set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with open_stream(server, cookie) as stream:
        stream.opened()
        a = threading.Thread(target=writer_a)
        a.start()
        assert a_written.wait(5)
        b = threading.Thread(target=writer_b)
        b.start()
        # B's alarm id is higher than A's. B must wait for A's commit to write
        # its journal row; were it let through, the broker would read B's row,
        # past A's, before A commits: wait for that, then let A commit.
        wait_for(
            lambda: advisory_lock_waiters(ADVISORY_LOCK_KEY) == 1 or b_done.is_set(),
            10,
            "B blocked or done",
        )
        early = [stream.next_event(10)] if b_done.is_set() else []
        release_a.set()
        a.join(10)
        b.join(10)
        assert not errors
        [later] = before_marker(stream)
        titles = [e.json()["title"] for e in early + later]
    assert sorted(titles) == ["A, lower id", "B, higher id"]
    # The journal numbers rows in commit order: A's row comes first.
    rows = list(AlarmChange.objects.order_by("id").values_list("alarm_id", flat=True))
    assert rows == sorted(rows)


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

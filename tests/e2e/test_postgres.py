"""What only PostgreSQL can show: commit order, LISTEN/NOTIFY, a lost listener."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from alarms import api
from alarms.models import AlarmChange
from tests.e2e.test_stream import en, metric, open_stream, wait_for

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
        a = threading.Thread(target=writer_a)
        a.start()
        assert a_written.wait(5)
        b = threading.Thread(target=writer_b)
        b.start()
        # B may commit now (its alarm id is higher than A's); give the broker
        # every chance to read past A's row before A commits.
        b_done.wait(1.0)
        early = stream.drain(0.5)
        release_a.set()
        a.join(10)
        b.join(10)
        assert not errors
        titles = [e.json()["title"] for e in early + stream.drain(1.0)]
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
    server = server_factory(METRICS_TOKEN="t0ken")
    streams = [open_stream(server, session_cookie(make_user(f"idle{i}"))) for i in range(3)]
    try:
        time.sleep(0.5)
        before = metric(server, "alarms_reads_total")
        time.sleep(2.0)
        assert metric(server, "alarms_reads_total") == before
        api.send_alarm(en("Wake"))
        wait_for(lambda: metric(server, "alarms_reads_total") > before)
    finally:
        for s in streams:
            s.close()

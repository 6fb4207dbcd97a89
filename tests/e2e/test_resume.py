"""Resuming with Last-Event-ID: bounded work, and nothing revealed.

A resume's replay comes in the stream's opening; what the server's broker had
not read of the journal then comes live after it. A marker sent once the stream
is open ends what the test reads (``received``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from alarms import api
from alarms.models import Alarm, AlarmChange
from tests.e2e.conftest import metric, open_stream, received
from tests.helpers import en, until, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "t0ken"


def resumed(server, last_id: str, cookie=None) -> list[tuple[str, int]]:
    with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
        return [(e.event, e.json()["id"]) for e in received(stream)]


def test_a_forged_old_id_costs_a_snapshot_not_the_whole_journal(server_factory, settings):
    settings.ALARMS = {**settings.ALARMS, "STORM_LIMIT": None}  # 30 alarms at once
    server = server_factory(METRICS_TOKEN=TOKEN, REPLAY_MAX_ROWS=50)
    gone = [api.send_alarm(en(f"Gone {i}"), audience="everyone") for i in range(30)]
    Alarm.objects.filter(pk__in=[a.pk for a in gone]).delete()
    live = api.send_alarm(en("Live"), audience="everyone")
    assert AlarmChange.objects.count() > 50
    # "0-0" names the start of the journal: more rows than a replay may read.
    assert resumed(server, "0-0") == [("alarm", live.pk)]  # the snapshot: no retract
    assert metric(server, "alarms_resumes_snapshot_total", TOKEN) == 1
    assert metric(server, "alarms_resumes_total", TOKEN) == 0


def test_a_resume_names_no_alarm_the_reader_could_not_have_seen(server_factory, make_user):
    server = server_factory(METRICS_TOKEN=TOKEN)
    staff = make_user("sam", is_staff=True)
    on_screen = api.send_alarm(en("On screen"), audience="everyone")
    with open_stream(server) as stream:  # an anonymous reader
        assert stream.next_event(10).json()["id"] == on_screen.pk
        last_id = stream.last_event_id
    # While the reader is away:
    later = timezone.now() + timedelta(hours=1)
    scheduled = api.send_alarm(en("Scheduled"), audience="everyone", publish_at=later)
    scheduled.level = "warning"
    scheduled.save()  # changed, still not published
    staff_only = api.send_alarm(en("Staff only"), audience="staff")
    staff_only.delete()
    theirs = api.send_alarm(en("Theirs"), users=[staff])
    theirs.delete()
    api.withdraw([api.send_alarm(en("For the signed-in"), audience="authenticated")])
    came_and_went = api.send_alarm(en("Came and went"), audience="everyone")
    came_and_went.delete()  # published after the reader left: never on their screen
    on_screen_id = on_screen.pk
    on_screen.delete()  # on their screen: the one retract they need
    # Resume once the broker has read all of that: a row it reads while the resume
    # runs goes out live, to every stream that may see its alarm, which is not
    # what this test is about.
    journal_end = AlarmChange.objects.order_by("-pk").values_list("pk", flat=True).first()
    wait_for(lambda: metric(server, "alarms_journal_position", TOKEN) >= journal_end)
    assert resumed(server, last_id) == [("retract", on_screen_id)]


def test_the_clients_time_is_floored_at_the_journals_retention(server_factory):
    server = server_factory(JOURNAL_RETENTION_DAYS=7)
    long_ago = timezone.now() - timedelta(days=30)
    api.send_alarm(
        en("Old"),
        audience="everyone",
        publish_at=long_ago,
        expires_at=long_ago + timedelta(hours=1),
    )
    live = api.send_alarm(en("Live"), audience="everyone")
    with open_stream(server) as stream:
        assert stream.next_event(10).json()["id"] == live.pk
        seq = stream.last_event_id.partition("-")[0]
    # A client that claims to have been away since 1970 is not told of every
    # alarm that expired since then, only of what the journal's retention covers.
    assert resumed(server, f"{seq}-0") == [("alarm", live.pk)]  # no retract of "Old"


def test_an_alarm_that_expired_while_away_is_retracted_at_the_head(server_factory):
    server = server_factory(METRICS_TOKEN=TOKEN)
    soon = timezone.now() + timedelta(seconds=2)
    brief = api.send_alarm(en("Brief"), audience="everyone", expires_at=soon)
    live = api.send_alarm(en("Live"), audience="everyone")
    with open_stream(server) as stream:
        assert {stream.next_event(10).json()["id"] for _ in range(2)} == {brief.pk, live.pk}
        last_id = stream.last_event_id
    # Nothing is written when an alarm expires: the resume is at the journal's head,
    # where the broker reads no journal, and must still find the expiry.
    head = AlarmChange.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert last_id.partition("-")[0] == str(head)
    # Once the server's broker let it go (its clock passed the expiry), so the
    # retract can only come from the resume.
    wait_for(lambda: metric(server, "alarms_alarms_current", TOKEN) == 1)
    assert timezone.now() > soon
    assert resumed(server, last_id) == [("retract", brief.pk)]


# Connects in flight at once; bench/flood.py runs thousands and reads the times.
FLOOD = int(os.environ.get("ALARMS_FLOOD", "200"))


def test_a_connect_flood_does_not_hold_back_delivery(server_factory):
    """Resuming connects queue for the broker's database thread; its journal read does not."""
    server = server_factory(MAX_STREAMS_PER_ADDRESS=None, REPLAY_MAX_ROWS=100_000)
    api.send_alarm(en("Warm"), audience="everyone")
    with open_stream(server) as reader:
        reader.next_event(10)
        resume = reader.last_event_id  # a real id: each connect reads the journal since
        request = (
            f"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: {resume}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()

        sent = 0

        async def connect() -> bool:
            nonlocal sent
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                w.write(request)
                await w.drain()
                sent += 1
                head = await r.readuntil(b"\r\n\r\n")
                await r.readuntil(b": alarms\n\n")  # the opening: the connect is done
                return head.startswith(b"HTTP/1.1 200")
            finally:
                w.close()

        def delivery() -> float:
            sent = time.monotonic()
            alarm = api.send_alarm(en("Now"), audience="everyone")
            assert reader.next_event(30).json()["id"] == alarm.pk
            return time.monotonic() - sent

        def delivery_from_a_thread() -> float:
            try:
                return delivery()
            finally:
                connections.close_all()  # this thread's own connection

        quiet = [delivery() for _ in range(3)]

        async def flood() -> tuple[list[bool], list[float]]:
            connects = [asyncio.create_task(connect()) for _ in range(FLOOD)]
            await until(lambda: sent == FLOOD, within=30)  # every request is at the server
            during = [await asyncio.to_thread(delivery_from_a_thread) for _ in range(3)]
            return list(await asyncio.gather(*connects)), during

        opened, during = asyncio.run(flood())
    assert all(opened), f"{opened.count(False)} of {FLOOD} connects refused"
    print(
        f"\n{FLOOD} resuming connects on {connection.vendor}: delivery to an open stream "
        f"{statistics.median(quiet) * 1000:.0f} ms quiet, "
        f"{statistics.median(during) * 1000:.0f} ms (max {max(during) * 1000:.0f}) meanwhile"
    )

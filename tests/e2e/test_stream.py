"""The stream end to end: real server processes, real sockets, real sessions.

Every test that takes the ``server`` fixture runs under each ASGI server the
deployment guide names (daphne, uvicorn, hypercorn); the ones that start their
own servers run under daphne, the default.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from alarms import api
from alarms.models import Alarm
from tests.e2e.conftest import (
    ASGI_SERVERS,
    Server,
    ServerFactory,
    before_marker,
    http_request,
    metric,
    open_stream,
    received,
)
from tests.helpers import en, wait_for
from tests.sse import Stream

pytestmark = pytest.mark.e2e


@pytest.fixture(params=ASGI_SERVERS)
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> Server:
    return server_factory(asgi_server=request.param)


TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ko": {"title": "소방 훈련", "message": "동쪽 계단으로 나가십시오."},
    "ja": {"title": "避難訓練", "message": "東階段から退出してください。"},
}


def test_headers_and_first_bytes(server):
    with open_stream(server) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert "no-cache" in stream.headers["Cache-Control"]
        assert stream.headers["X-Accel-Buffering"] == "no"
        assert stream.headers.get("Connection", "").lower() != "keep-alive"
        assert "Content-Encoding" not in stream.headers
        stream.opened()  # no event in its opening
        assert before_marker(stream) == [[]]  # nor after it
        assert stream.parser.retry == 2000
        assert stream.parser.comments == ["alarms"]


def test_delivery_in_each_users_language(server, make_user, session_cookie):
    users = {lang: make_user(f"user-{lang}") for lang in TEXTS}
    streams = {
        lang: open_stream(server, session_cookie(user), **{"Accept-Language": lang})
        for lang, user in users.items()
    }
    try:
        for stream in streams.values():
            stream.opened()  # subscribed: what is sent now reaches it live
        sent = time.monotonic()
        alarm = api.send_alarm(TEXTS, level="warning")
        for lang, stream in streams.items():
            event = stream.next_event(10)
            assert event.event == "alarm"
            data = event.json()
            assert data["id"] == alarm.pk
            assert data["language"] == lang
            assert data["title"] == TEXTS[lang]["title"]
            assert data["dir"] == "ltr"
            assert data["level"] == "warning"
        assert time.monotonic() - sent < 3
    finally:
        for stream in streams.values():
            stream.close()


def test_connect_sends_what_the_user_should_still_see(server, make_user, session_cookie):
    user = make_user("ann")
    seen = api.send_alarm(en("Seen already"))
    dismissed = api.send_alarm(en("Dismissed"), level="critical")
    critical_seen = api.send_alarm(en("Critical, seen"), level="critical")
    fresh = api.send_alarm(en("Fresh"))
    api.send_alarm(
        en("Expired"),
        publish_at=timezone.now() - timedelta(hours=2),
        expires_at=timezone.now() - timedelta(hours=1),
    )
    api.send_alarm(en("Later"), publish_at=timezone.now() + timedelta(hours=1))
    withdrawn = api.send_alarm(en("Withdrawn"))
    api.withdraw([withdrawn])
    api.mark_seen(user, [seen.pk, critical_seen.pk])
    api.dismiss(user, [dismissed.pk])
    with open_stream(server, session_cookie(user)) as stream:
        got = [(e.event, e.json()["id"]) for e in received(stream)]
    assert sorted(got) == [("alarm", critical_seen.pk), ("alarm", fresh.pk)]


def test_last_event_id_resumes_with_nothing_missed_and_nothing_twice(
    server, make_user, session_cookie
):
    user = make_user("ben")
    cookie = session_cookie(user)
    first = api.send_alarm(en("First"))
    with open_stream(server, cookie) as stream:
        assert stream.next_event(10).json()["id"] == first.pk
        last_id = stream.last_event_id
    second = api.send_alarm(en("Second"))
    later = api.send_alarm(en("Third"))
    api.withdraw([first])
    with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
        got = [(e.event, e.json()["id"]) for e in received(stream)]
    assert got == [("alarm", second.pk), ("alarm", later.pk), ("retract", first.pk)]


@pytest.mark.parametrize("bad", ["garbage", "99999999-1", "-1", "1-2-3", "x" * 5000, "²-3"])
def test_malformed_or_unknown_last_event_id_degrades_to_replay(
    server, make_user, session_cookie, bad
):
    user = make_user("cat")
    alarm = api.send_alarm(en("Still live"))
    with open_stream(server, session_cookie(user), **{"Last-Event-ID": bad}) as stream:
        assert [(e.event, e.json()["id"]) for e in received(stream)] == [("alarm", alarm.pk)]


def test_withdraw_retracts_and_edit_resends_same_id(server, make_user, session_cookie):
    user = make_user("dan")
    with open_stream(server, session_cookie(user)) as stream:
        alarm = api.send_alarm(en("Original"))
        assert stream.next_event(10).json()["title"] == "Original"
        translation = alarm.translations.get(language_code="en")
        translation.title = "Edited"
        translation.save()
        event = stream.next_event(10)
        assert (event.event, event.json()["id"], event.json()["title"]) == (
            "alarm",
            alarm.pk,
            "Edited",
        )
        api.withdraw([alarm])
        event = stream.next_event(10)
        assert (event.event, event.json()) == ("retract", {"id": alarm.pk})


def test_scheduled_alarm_appears_and_expires_without_a_write(server, make_user, session_cookie):
    user = make_user("eve")
    with open_stream(server, session_cookie(user)) as stream:
        stream.opened()  # so the alarm cannot come in the stream's opening
        now = timezone.now()
        alarm = api.send_alarm(
            en("Soon"), publish_at=now + timedelta(seconds=1), expires_at=now + timedelta(seconds=2)
        )
        # Not before its time: the check is on the clock at arrival, not on a
        # quiet window (on a busy machine the broker may read the row late).
        event = stream.next_event(10)
        assert (event.event, event.json()["id"]) == ("alarm", alarm.pk)
        assert timezone.now() >= alarm.publish_at
        event = stream.next_event(10)
        assert (event.event, event.json()["id"]) == ("retract", alarm.pk)
        assert timezone.now() >= alarm.expires_at


def test_nobody_receives_another_users_alarm(server, make_user, session_cookie):
    from django.contrib.auth.models import Group

    alice, bob, staff = make_user("alice"), make_user("bob"), make_user("sam", is_staff=True)
    night = Group.objects.create(name="Night")
    bob.groups.add(night)
    streams = {
        name: open_stream(server, session_cookie(user))
        for name, user in {"alice": alice, "bob": bob, "staff": staff}.items()
    }
    anonymous = open_stream(server)
    try:
        api.send_alarm(en("For alice"), users=[alice])
        api.send_alarm(en("For night"), groups=[night])
        api.send_alarm(en("For staff"), audience="staff")
        api.send_alarm(en("Signed in"), audience="authenticated")
        api.send_alarm(en("Everyone"), audience="everyone")
        received = before_marker(*streams.values(), anonymous)
        got = {
            name: sorted(e.json()["title"] for e in events)
            for name, events in zip([*streams, "anonymous"], received, strict=True)
        }
    finally:
        for s in [*streams.values(), anonymous]:
            s.close()
    assert got == {
        "alice": ["Everyone", "For alice", "Signed in"],
        "bob": ["Everyone", "For night", "Signed in"],
        "staff": ["Everyone", "For staff", "Signed in"],
        "anonymous": ["Everyone"],
    }


def test_dismiss_elsewhere_reaches_the_users_other_streams(server, make_user, session_cookie):
    user, other = make_user("fay"), make_user("gus")
    alarm = api.send_alarm(en("Both"))
    with (
        open_stream(server, session_cookie(user)) as mine,
        open_stream(server, session_cookie(other)) as theirs,
    ):
        assert mine.next_event(10).json()["id"] == alarm.pk
        assert theirs.next_event(10).json()["id"] == alarm.pk
        api.dismiss(user, [alarm.pk])
        event = mine.next_event(10)
        assert (event.event, event.json()) == ("dismiss", {"id": alarm.pk})
        assert before_marker(mine, theirs) == [[], []]


def test_language_override_and_fallback(server, make_user, session_cookie):
    user = make_user("hal")
    api.send_alarm(
        {"en": {"title": "Hello", "message": "m"}, "ar": {"title": "مرحبا", "message": "م"}}
    )
    cookie = session_cookie(user)
    with Stream(f"{server.url}/alarms/stream/?lang=ar", cookies=dict([cookie])) as stream:
        data = stream.next_event(10).json()
        assert (data["language"], data["dir"], data["title"]) == ("ar", "rtl", "مرحبا")
    # Japanese reader, no Japanese text: LANGUAGE_CODE.
    with open_stream(server, cookie, **{"Accept-Language": "ja"}) as stream:
        data = stream.next_event(10).json()
        assert (data["language"], data["dir"]) == ("en", "ltr")
    # An unknown ?lang= is ignored, not an error.
    with Stream(
        f"{server.url}/alarms/stream/?lang=xx-evil%0d%0a",
        cookies={"django_language": "ar", cookie[0]: cookie[1]},
    ) as stream:
        assert stream.status == 200
        assert stream.next_event(10).json()["language"] == "ar"


@pytest.mark.parametrize("tag", ["ko_KR", "KO-kr", "ko_kr"])
def test_underscore_and_any_case_tags_are_understood(server, tag):
    texts = {"en": {"title": "Hello", "message": "m"}, "ko": {"title": "안녕", "message": "ㅁ"}}
    api.send_alarm(texts, audience="everyone")
    with Stream(f"{server.url}/alarms/stream/?lang={tag}") as stream:
        assert stream.next_event(10).json()["language"] == "ko"


@pytest.mark.parametrize(
    ("headers", "cookies"),
    [
        # Django drops a whole header for one tag it does not parse, and serves English.
        ({"Accept-Language": "ko_KR"}, None),
        ({"Accept-Language": "fr, ko_KR;q=0.5, en;q=0.1"}, None),
        ({"Accept-Language": "en"}, {"django_language": "ko_kr"}),
    ],
)
def test_tags_django_drops_in_the_header_and_cookie_are_understood(server, headers, cookies):
    texts = {"en": {"title": "Hello", "message": "m"}, "ko": {"title": "안녕", "message": "ㅁ"}}
    api.send_alarm(texts, audience="everyone")
    with Stream(f"{server.url}/alarms/stream/", headers=headers, cookies=cookies) as stream:
        assert stream.headers["Content-Language"] == "ko"
        assert stream.next_event(10).json()["title"] == "안녕"
    # The page agrees, so the script it carries asks for the same language.
    if cookies:
        headers = {**headers, "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    status, _, body = http_request(server.port, "GET", "/", headers)
    assert status == 200
    assert '<html lang="ko"' in body.decode()


def test_disconnect_frees_the_stream(server_factory, make_user, session_cookie):
    server = server_factory(METRICS_TOKEN="t0ken")
    user = make_user("ida")
    streams = [open_stream(server, session_cookie(user)) for _ in range(5)]
    wait_for(lambda: metric(server, "alarms_streams_open") == 5)
    assert metric(server, "alarms_fan_out_seconds_total") == 0  # nothing broadcast yet
    api.send_alarm(en("Counted"))
    for stream in streams:
        stream.next_event(15)
    wait_for(lambda: metric(server, "alarms_fan_out_seconds_total") > 0)
    # The five arrived, so the server counts five written.
    assert metric(server, "alarms_events_delivered_total") == 5
    for stream in streams:
        stream.close()
    wait_for(lambda: metric(server, "alarms_streams_open") == 0)


def test_per_user_cap_closes_the_oldest(server_factory, make_user, session_cookie):
    server = server_factory(METRICS_TOKEN="t0ken", MAX_STREAMS_PER_USER=2)
    cookie = session_cookie(make_user("jo"))
    oldest, middle = open_stream(server, cookie), open_stream(server, cookie)
    newest = open_stream(server, cookie)
    try:
        with pytest.raises(EOFError):
            oldest.next_event(10)
        assert "closed: replaced" in oldest.parser.comments
        assert oldest.parser.retry >= 30_000  # it must not come straight back
        wait_for(lambda: metric(server, "alarms_streams_open") == 2)
    finally:
        for s in (oldest, middle, newest):
            s.close()


def test_process_cap_answers_503(server_factory):
    server = server_factory(MAX_STREAMS=1)
    with open_stream(server):
        full = Stream(f"{server.url}/alarms/stream/")
        assert full.status == 503
        assert int(full.headers["Retry-After"]) > 0
        full.close()


def test_lifetime_ends_the_stream_and_resume_loses_nothing(
    server_factory, make_user, session_cookie
):
    server = server_factory(MAX_LIFETIME=1)
    cookie = session_cookie(make_user("kim"))
    before = api.send_alarm(en("Before"))
    with open_stream(server, cookie) as stream:
        assert stream.next_event(10).json()["id"] == before.pk
        with pytest.raises(EOFError):
            stream.next_event(15)  # nothing more: the stream ends at its lifetime
        last_id = stream.last_event_id
    assert "closed: lifetime" in stream.parser.comments
    alarm = api.send_alarm(en("While away"))
    # As EventSource does: come back with the last id until the alarm is there. Every
    # stream of this server lives about a second, which a busy machine may spend
    # before its broker has read the new row; a resume must still lose nothing.
    got: list[int] = []
    for _ in range(20):
        with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
            try:
                got.append(stream.next_event(15).json()["id"])
                break
            except EOFError:
                continue  # ended before the alarm came: come back with the same id
    assert got == [alarm.pk]  # the one missed first, not the one seen before


def test_replay_after_server_restart(server, make_user, session_cookie):
    cookie = session_cookie(make_user("lee"))
    with open_stream(server, cookie) as stream:
        first = api.send_alarm(en("Before"))
        assert stream.next_event(10).json()["id"] == first.pk
        last_id = stream.last_event_id
    server.stop()
    during = api.send_alarm(en("While down"))
    server.start()
    with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
        assert [(e.event, e.json()["id"]) for e in received(stream)] == [("alarm", during.pk)]


def test_gzip_middleware_leaves_the_stream_alone(server_factory, tmp_path):
    # The test server with GZipMiddleware first in MIDDLEWARE.
    settings_file = tmp_path / "gzip_settings.py"
    settings_file.write_text(
        "from tests.e2e.server_settings import *\n"
        "MIDDLEWARE = ['django.middleware.gzip.GZipMiddleware', *MIDDLEWARE]\n"
    )
    path = os.pathsep.join([str(tmp_path), *sys.path])
    server = server_factory(settings="gzip_settings", env={"PYTHONPATH": path})
    status, headers, _ = http_request(server.port, "GET", "/", {"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")  # it is there, and at work
    alarm = api.send_alarm(en("Plain"), audience="everyone")
    with open_stream(server, **{"Accept-Encoding": "gzip"}) as stream:
        assert "Content-Encoding" not in stream.headers
        assert stream.next_event(10).json()["id"] == alarm.pk


def test_two_processes_and_a_command(server_factory, make_user, session_cookie):
    one, two = server_factory(), server_factory()
    cookie = session_cookie(make_user("max"))
    with open_stream(one, cookie) as a, open_stream(two, cookie) as b:
        a.opened()
        b.opened()
        one.manage("send_alarm", "--translation", "en", "From a command", "Sent elsewhere")
        assert a.next_event(10).json()["title"] == "From a command"
        assert b.next_event(10).json()["title"] == "From a command"
    assert Alarm.objects.count() == 1


def test_resume_never_names_another_users_alarm(server, make_user, session_cookie):
    me, other = make_user("mia"), make_user("oli")
    cookie = session_cookie(me)
    with open_stream(server, cookie) as stream:
        api.send_alarm(en("Mine"), users=[me])
        stream.next_event(10)
        last_id = stream.last_event_id
    theirs = api.send_alarm(en("Theirs"), users=[other])
    api.withdraw([theirs])
    mine = api.send_alarm(en("Mine too"), users=[me])
    with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
        got = [(e.event, e.json()["id"]) for e in received(stream)]
    assert got == [("alarm", mine.pk)]


def test_sigterm_ends_streams_with_a_retry_hint_and_nothing_is_lost(
    server, make_user, session_cookie
):
    import signal

    cookie = session_cookie(make_user("sig"))
    with open_stream(server, cookie) as stream:
        first = api.send_alarm(en("Before"))
        assert stream.next_event(10).json()["id"] == first.pk
        server.process.send_signal(signal.SIGTERM)
        assert stream.ends(15) == []  # a clean end of the response, not a reset or a hang
        last_id = stream.last_event_id
    assert "closed: shutdown" in stream.parser.comments
    assert stream.parser.retry <= 1000
    server.process.wait(10)
    during = api.send_alarm(en("While down"))
    server.start()
    with open_stream(server, cookie, **{"Last-Event-ID": last_id}) as stream:
        assert [(e.event, e.json()["id"]) for e in received(stream)] == [("alarm", during.pk)]

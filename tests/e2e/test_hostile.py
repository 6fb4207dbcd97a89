"""Hostile and bad input against the stream of a real daphne: headers, event ids, languages,
other users' alarms, alarm text, and too many streams from one user.

Each server's log must show no server-side error when the test ends: every
case here must end in a 4xx, a closed connection or a safe fallback.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from alarms import api
from alarms.models import AlarmChange
from tests.e2e.conftest import (
    Server,
    ServerFactory,
    before_marker,
    open_stream,
    received,
    send_marker,
)
from tests.helpers import SCRIPT_TITLE, en, hostile_message

# Tests marked one_database refuse or ignore input before any of it reaches the
# database (the ASGI server's request parsing, an anonymous stream's language); the
# others reach it (a resume's read of the journal, the rules that keep other users'
# alarms out, text stored and read back, a user's streams) and run on both databases.
pytestmark = [pytest.mark.e2e, pytest.mark.one_django]

LANGUAGES = {"en", "ko", "ja", "ar"}
# What a server-side failure leaves in daphne's output: a traceback, Django's
# and daphne's error lines, or a 5xx in the access log.
SERVER_ERROR = re.compile(
    r"Traceback \(most recent call last\)|Exception inside application|Internal Server Error"
    r'| (ERROR|CRITICAL) |" 5\d\d '
)


@pytest.fixture(autouse=True)
def no_server_side_errors(server_factory: ServerFactory) -> Iterator[None]:
    """Every server of the test (``server`` too) is stopped at its end, and its log
    must show no server-side error."""
    yield
    server_factory.stop_all()
    for server in server_factory.started:
        text = server.output()
        found = SERVER_ERROR.search(text)
        assert found is None, f"server-side error in {server.log.name}:\n{text[found.start() :]}"


def raw_request(server: Server, request: bytes) -> int | None:
    """Send bytes as they are; the status of the answer, or None if closed without one."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = b""
        try:
            sock.sendall(request)
            while b"\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: no answer
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


def get(server: Server, head: str) -> bytes:
    host = f"127.0.0.1:{server.port}"
    return f"GET /alarms/stream/ HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode()


def journal_head() -> int:
    return AlarmChange.objects.order_by("-id").values_list("id", flat=True).first() or 0


# -- huge and malformed headers --------------------------------------------------------------

# Twisted reads a request line by line: one line over 16 KiB (LineReceiver.MAX_LENGTH)
# closes the connection without an answer; more than 16 KiB of headers in all, or
# more than 500 headers, gets "400 Bad Request". Neither reaches Django.
HUGE_HEADERS = {
    "last-event-id-64k": ("Last-Event-ID: " + "1" * 65_536 + "\r\n", None),
    "accept-language-64k": ("Accept-Language: " + "en," * 21_846 + "\r\n", None),
    "cookie-1m": ("Cookie: a=" + "x" * 1_048_576 + "\r\n", None),
    "pad-1m": ("X-Pad: " + "x" * 1_048_576 + "\r\n", None),
    "twenty-1k-headers": ("".join(f"X-Pad-{i}: {'y' * 1000}\r\n" for i in range(20)), 400),
    "600-headers": ("".join(f"X-{i}: {i}\r\n" for i in range(600)), 400),
    "nul-in-last-event-id": ("Last-Event-ID: 1-2\0x\r\n", 400),
}


# one_database: refused by Twisted before Django; the snapshot after it is a plain connect.
@pytest.mark.one_database
@pytest.mark.parametrize(("head", "expected"), HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_huge_or_malformed_headers_are_refused_and_the_server_lives_on(
    server: Server, head: str, expected: int | None
) -> None:
    alarm = api.send_alarm(en("Still here"), audience="everyone")

    assert raw_request(server, get(server, head)) == expected

    assert server.process is not None and server.process.poll() is None
    with open_stream(server) as stream:
        assert [(e.event, e.json()["id"]) for e in received(stream)] == [("alarm", alarm.pk)]


@pytest.mark.one_database  # refused by Twisted before Django
def test_a_request_line_of_20_kib_is_refused(server: Server) -> None:
    host = f"127.0.0.1:{server.port}"
    request = f"GET /alarms/stream/?lang={'x' * 20_000} HTTP/1.1\r\nHost: {host}\r\n\r\n"

    assert raw_request(server, request.encode()) is None

    with open_stream(server):
        pass


# -- Last-Event-ID -------------------------------------------------------------------------------


BAD_EVENT_IDS: dict[str, Callable[[], str]] = {
    "letters": lambda: "abc",
    "negative": lambda: "-1-5",
    "two-dashes": lambda: "1--5",
    "huge-sequence": lambda: "99999999999999999999999-1",
    "sequence-over-int64": lambda: f"{2**63}-1",
    # A real sequence with a time no datetime can hold: the resume read the
    # journal, then failed converting the time (a 500) before parse_event_id
    # refused it.
    "time-past-year-9999": lambda: f"{journal_head()}-99999999999999999999",
    "time-just-past-year-9999": lambda: f"{journal_head()}-253402300800000",
    "arabic-indic-digits": lambda: "\u0661\u0662-\u0663",
    "emoji": lambda: "\U0001f600-1",
    "latin-1": lambda: "\u00e9-1",
    "future": lambda: f"{journal_head() + 1_000_000}-{int(time.time() * 1000)}",
    "long": lambda: "1-" + "2" * 5_000,
    "blank": lambda: "   ",
}


@pytest.mark.parametrize("make_id", BAD_EVENT_IDS.values(), ids=BAD_EVENT_IDS.keys())
@pytest.mark.parametrize("where", ["header", "query"])
def test_garbage_last_event_id_falls_back_to_a_snapshot(
    server: Server,
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
    make_id: Callable[[], str],
    where: str,
) -> None:
    cookie = session_cookie(make_user("cat"))
    alarm = api.send_alarm(en("Still live"))
    bad = make_id()
    if where == "header":
        stream = open_stream(server, cookie, **{"Last-Event-ID": bad})
    else:
        stream = open_stream(server, cookie, query=f"?last_event_id={quote(bad)}")
    with stream:
        assert [(e.event, e.json()["id"]) for e in received(stream)] == [("alarm", alarm.pk)]


# -- languages ------------------------------------------------------------------------------


GARBAGE_LANG = [
    "xx",
    "x" * 8_000,
    "%00",
    "ar%00",
    "en%0d%0aSet-Cookie:%20evil=1",
    "..%2F..%2Fetc%2Fpasswd",
    "%E2%80%AEar",
    "%FF%FE",
    "zz-Latn-x-private-" + "a" * 100,
    "ar&lang=" + "&lang=".join(["xx"] * 500),
]


# one_database: an anonymous stream's language comes from the request alone.
@pytest.mark.one_database
@pytest.mark.parametrize("lang", GARBAGE_LANG)
def test_garbage_lang_parameter_is_ignored(server: Server, lang: str) -> None:
    api.send_alarm(
        {"en": {"title": "Hello", "message": "m"}, "ko": {"title": "안녕", "message": "m"}},
        audience="everyone",
    )

    with open_stream(server, query=f"?lang={lang}", **{"Accept-Language": "ko"}) as stream:
        data = stream.next_event(10).json()
        assert stream.headers["Content-Language"] == data["language"]
        assert "evil" not in str(stream.headers)

    # Never the garbage, whatever it is: the reader's own language.
    assert data["language"] == "ko"


@pytest.mark.one_database  # an anonymous stream's language comes from the request alone
@pytest.mark.parametrize(
    ("accept_language", "expected"),
    [
        ("a" * 10_240, "en"),
        ("ko;q=0.9," * 1_200, "ko"),
        (",".join(f"x{i}-{i}" for i in range(1_120)), "en"),
        ("xx;q=2, *;q=-1, ;;;, \u00e9\u00e9, en-\x7f," * 340, "en"),
    ],
)
def test_accept_language_of_10_kib(server: Server, accept_language: str, expected: str) -> None:
    api.send_alarm(
        {"en": {"title": "Hello", "message": "m"}, "ko": {"title": "안녕", "message": "m"}},
        audience="everyone",
    )
    assert len(accept_language) >= 10_000

    with open_stream(server, **{"Accept-Language": accept_language}) as stream:
        data = stream.next_event(10).json()

    assert (stream.headers["Content-Language"], data["language"]) == (expected, expected)


# -- other users' alarms ------------------------------------------------------------------------


def test_another_users_alarms_never_reach_a_stream_not_even_by_id(
    server: Server,
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    night = Group.objects.create(name="Night")
    alice.groups.add(night)
    public = api.send_alarm(en("For all"))
    with (
        open_stream(server, session_cookie(alice)) as alices,
        open_stream(server, session_cookie(bob)) as bobs,
    ):
        assert bobs.next_event(10).json()["id"] == public.pk
        alices.next_event(10)
        resume_from = bobs.last_event_id

        # Every kind of event about alarms only alice may see, one at a time, each
        # seen to reach alice's stream (so it was broadcast): new, edited,
        # dismissed, withdrawn, expired.
        def alice_gets(kind: str, alarm_id: int) -> None:
            event = alices.next_event(10)
            assert (event.event, event.json()["id"]) == (kind, alarm_id)

        selected = api.send_alarm(en("For alice", "Secret"), users=[alice])
        alice_gets("alarm", selected.pk)
        grouped = api.send_alarm(en("For night"), groups=[night])
        alice_gets("alarm", grouped.pk)
        translation = selected.translations.get()
        translation.title = "For alice, edited"
        translation.save()
        alice_gets("alarm", selected.pk)
        api.dismiss(alice, [grouped.pk])
        alice_gets("dismiss", grouped.pk)
        api.withdraw([selected])
        alice_gets("retract", selected.pk)
        soon = timezone.now()
        expiring = api.send_alarm(
            en("For alice, briefly"),
            users=[alice],
            publish_at=soon,
            expires_at=soon + timedelta(seconds=1),
        )
        alice_gets("alarm", expiring.pk)
        alice_gets("retract", expiring.pk)
        marker = send_marker()
        assert alices.next_event(10).json()["id"] == marker.pk
        # Nothing of it came to bob before the marker.
        assert bobs.next_event(10).json()["id"] == marker.pk

    # Resuming from before all of it replays the marker, and nothing of alice's.
    with open_stream(server, session_cookie(bob), **{"Last-Event-ID": resume_from}) as resumed:
        got = received(resumed)
    assert [(e.event, e.json()["id"]) for e in got] == [("alarm", marker.pk)]
    assert not any("alice" in e.data or "night" in e.data for e in got)


# -- alarm text -----------------------------------------------------------------------------------


def test_hostile_text_reads_back_exactly_through_a_conforming_parser(
    server: Server,
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
) -> None:
    texts = {
        "en": {"title": SCRIPT_TITLE, "message": hostile_message()},
        "ar": {"title": "\u202e" + SCRIPT_TITLE[::-1], "message": hostile_message()[::-1]},
    }
    cookie = session_cookie(make_user("reader"))
    with (
        open_stream(server, cookie) as english,
        open_stream(server, cookie, query="?lang=ar") as ar,
    ):
        alarm = api.send_alarm(texts)
        en_event, ar_event = english.next_event(10), ar.next_event(10)
        # Nothing forged by the text: one event each, and the stream goes on.
        assert before_marker(english, ar) == [[], []]
        assert english.parser.retry == ar.parser.retry == 2000

    stored = {t.language_code: (t.title, t.message) for t in alarm.translations.all()}
    for event, code in ((en_event, "en"), (ar_event, "ar")):
        assert (event.event, event.id) != ("retract", "1-1")
        assert "\n" not in event.data  # one data line: JSON escapes every line end
        data = event.json()
        assert (data["id"], data["language"]) == (alarm.pk, code)
        assert (data["title"], data["message"]) == stored[code]
        assert (data["title"], data["message"]) == (texts[code]["title"], texts[code]["message"])


# -- too many streams from one user ------------------------------------------------------------


def test_too_many_streams_from_one_user_close_the_oldest(
    server_factory: ServerFactory,
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
) -> None:
    server = server_factory(MAX_STREAMS_PER_USER=2)
    cookie = session_cookie(make_user("greedy"))
    neighbour = open_stream(server, session_cookie(make_user("neighbour")))
    streams = [open_stream(server, cookie) for _ in range(6)]
    try:
        for stream in streams[:4]:
            assert stream.ends(15) == []
            assert "closed: replaced" in stream.parser.comments
            # Told to stay away long, or two tabs over the cap would keep evicting each other.
            assert stream.parser.retry is not None and stream.parser.retry >= 30_000
        alarm = api.send_alarm(en("After the storm"))
        for stream in [*streams[4:], neighbour]:
            assert stream.next_event(10).json()["id"] == alarm.pk
    finally:
        for stream in [*streams, neighbour]:
            stream.close()

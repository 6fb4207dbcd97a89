"""Clients that misbehave: one that stops reading, one address opening too many streams.

And what the operator reads about it: structured log records, and no log line
per heartbeat.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from alarms import api
from alarms.models import AlarmTranslation
from tests.e2e.conftest import KNOWN_ASGI_SERVERS, metric, open_stream
from tests.helpers import en, rss_kib, wait_for
from tests.sse import EventSource, Stream

# one_database: what these tests check is the server's side of a socket (flow
# control under each ASGI server, the per-address cap, the log records), all in
# the server process, ahead of the broker and the journal: the database changes none of it.
pytestmark = [pytest.mark.e2e, pytest.mark.one_django, pytest.mark.one_database]

ALARMS = 10
ROUNDS = 80
# 10,000 Hangul characters: 30 KB of UTF-8 per event.
BODY = "경" * 9_990


def stuck_client(server) -> socket.socket:
    """A stream whose client reads the request's answer never: a tiny window, no reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    # Connection: close, so that a stream the server ends (rather than aborts)
    # also ends the connection, as it would for a browser that navigated away.
    sock.sendall(
        b"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        b"Connection: close\r\n\r\n"
    )
    return sock


def dropped(server) -> float:
    return metric(server, "alarms_stalled_aborted_total") + metric(
        server, 'alarms_streams_closed_total{reason="slow"}'
    )


# Under each ASGI server whatever ALARMS_TEST_ASGI_SERVERS says: that narrows the
# stream tests, which run in every leg, while this one runs in one leg only.
@pytest.mark.parametrize("asgi_server", KNOWN_ASGI_SERVERS)
def test_a_client_that_stops_reading_is_dropped_without_holding_up_the_others(
    server_factory, monkeypatch, asgi_server
):
    # As in production: with DEBUG on, Django keeps a log of every query.
    monkeypatch.setenv("DJANGO_DEBUG", "0")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "e2e-" + "k" * 50)
    monkeypatch.setenv("DJANGO_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("DJANGO_SECURE_SSL_REDIRECT", "0")
    # POLL_INTERVAL: on SQLite the server polls for this process's writes, and a
    # poll that finds several rounds of rewrites sends each alarm once, not once a round.
    # QUEUE_SIZE bounds what the broker queues for the stuck stream: on a busy
    # machine it closes it as too slow before the socket's timeout runs out, and
    # the connection is then dropped all the same (flow_control's last write).
    server = server_factory(
        asgi_server=asgi_server,
        METRICS_TOKEN="t0ken",
        SLOW_CLIENT_TIMEOUT=2,
        QUEUE_SIZE=32,
        POLL_INTERVAL=0.05,
    )
    alarms = [
        api.send_alarm(en(f"Rewritten {i}", BODY), audience="everyone") for i in range(ALARMS)
    ]
    translations = list(AlarmTranslation.objects.filter(alarm__in=alarms))
    # The reader reconnects as a browser does: on a busy machine this test's
    # own process may read too slowly, be closed as too slow, and resume.
    reader = EventSource(f"{server.url}/alarms/stream/")

    def latest() -> dict[int, str]:
        found = {}
        for event in list(reader.events):
            if event.event == "alarm":
                data = event.json()
                found[data["id"]] = data["message"]
        return found

    def has_round(i: int) -> bool:
        last = list(reader.events)[-ALARMS:]
        return len(last) == ALARMS and all(e.json()["message"].startswith(f"{i} ") for e in last)

    def rewrite(rounds: int) -> None:
        # Each rewrite re-sends a 30 KB alarm to every stream. Each round
        # reaches the reader before the next is written: the broker reads each
        # on its own (it folds rewrites of one alarm between two reads into
        # one event), and what the server holds for the reader stays one round.
        for i in range(rounds):
            for translation in translations:
                translation.message = f"{i} {BODY}"
                translation.save()
            wait_for(lambda i=i: has_round(i), what=f"round {i} at the reader")

    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(latest()) == ALARMS)
        rewrite(ROUNDS // 2)  # the server's memory settles under this load first
        stuck = stuck_client(server)
        wait_for(lambda: metric(server, "alarms_streams_open") == 2)
        before, received = rss_kib(server.process.pid), len(reader.events)
        # Megabytes meant for a client that reads nothing: more than the
        # kernel's socket buffers take.
        rewrite(ROUNDS)
        # Dropped: by the socket's timeout (flow_control), or, when the busy
        # server's queue for it filled first, closed by the broker as too slow
        # (and then aborted all the same if its socket stays full: both count).
        wait_for(lambda: dropped(server) >= 1, timeout=60)
        # The reader has every alarm's last version: the stuck stream held nothing up.
        final = {t.alarm_id: f"{ROUNDS - 1} {BODY}" for t in translations}
        wait_for(lambda: latest() == final, timeout=60)
        after = rss_kib(server.process.pid)
        received = len(reader.events) - received
    finally:
        reader.stop()
        thread.join(5)
    # The stuck client was meant as much as the reader got, 30 KB an event:
    # without flow control, Twisted holds what the kernel's socket buffers (a few
    # MB) do not, until the stream ends. Measured on daphne, 24 MB meant: 21-28 MB
    # of growth without flow_control, 1.5-6 MB with it (the allocator's noise).
    meant = received * 30
    assert meant > 16_000, "too little was sent for the test to tell"
    assert after - before < meant // 2, f"RSS grew by {after - before} KiB of {meant} meant"
    wait_for(lambda: metric(server, "alarms_streams_open") == 0)
    # The server dropped the connection: what is left to read ends in EOF or a reset.
    stuck.settimeout(5)
    with pytest.raises((ConnectionResetError, EOFError)):
        while True:
            if not stuck.recv(65536):
                raise EOFError
    stuck.close()


def test_too_many_streams_from_one_address(server_factory):
    server = server_factory(METRICS_TOKEN="t0ken", MAX_STREAMS_PER_ADDRESS=3)
    streams = [open_stream(server) for _ in range(3)]
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/alarms/stream/", timeout=5)
        assert refused.value.code == 429
        assert 5 <= int(refused.value.headers["Retry-After"]) <= 30
        assert "Too many alarm streams from this address" in refused.value.read().decode()
        assert metric(server, 'alarms_streams_refused_total{reason="address"}') == 1
        streams.pop().close()
        wait_for(lambda: metric(server, "alarms_streams_open") == 2)
        streams.append(open_stream(server))
    finally:
        for stream in streams:
            stream.close()


def test_log_records_are_structured_and_quiet(server_factory, monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    server = server_factory(METRICS_TOKEN="t0ken", HEARTBEAT=0.1, MAX_STREAMS_PER_ADDRESS=1)
    with open_stream(server) as stream:
        stream.opened()
        stream.comments_until("", 10)  # heartbeats, a second's worth
        assert Stream(f"{server.url}/alarms/stream/").status == 429
    wait_for(lambda: metric(server, "alarms_streams_open") == 0)
    # Daphne's own access lines are not ours to format.
    lines = server.output().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    by_event = {r.get("event"): r for r in records if r.get("logger") == "alarms.stream"}
    opened, closed = by_event["stream_opened"], by_event["stream_closed"]
    assert opened["level"] == "INFO"
    assert opened["address"] == "127.0.0.1"
    assert opened["user"] is None
    assert opened["language"] == "en"
    assert closed["stream"] == opened["stream"]
    assert closed["reason"] == "client"
    assert closed["duration_s"] >= 1.0
    assert by_event["stream_refused"]["level"] == "WARNING"
    assert by_event["stream_refused"]["reason"] == "address"
    # Heartbeats, and no record for any of them.
    assert len([r for r in records if r.get("logger", "").startswith("alarms")]) <= 5

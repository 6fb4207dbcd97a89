"""The stream end to end: real daphne processes, real sockets, real sessions."""

from __future__ import annotations

import time

import pytest

from alarms import api
from tests.sse import Stream

pytestmark = pytest.mark.e2e

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ko": {"title": "소방 훈련", "message": "동쪽 계단으로 나가십시오."},
    "ja": {"title": "避難訓練", "message": "東階段から退出してください。"},
}


def open_stream(server, cookie=None, **headers) -> Stream:
    cookies = dict([cookie]) if cookie else None
    stream = Stream(f"{server.url}/alarms/stream/", cookies=cookies, headers=headers)
    assert stream.status == 200
    return stream


def test_headers_and_first_bytes(server):
    with open_stream(server) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert "no-cache" in stream.headers["Cache-Control"]
        assert stream.headers["X-Accel-Buffering"] == "no"
        assert stream.headers.get("Connection", "").lower() != "keep-alive"
        assert "Content-Encoding" not in stream.headers
        with pytest.raises(TimeoutError):
            stream.next_event(0.3)
        assert stream.parser.retry == 2000
        assert stream.parser.comments == ["alarms"]


def test_delivery_in_each_users_language(server, make_user, session_cookie):
    users = {lang: make_user(f"user-{lang}") for lang in TEXTS}
    streams = {
        lang: open_stream(server, session_cookie(user), **{"Accept-Language": lang})
        for lang, user in users.items()
    }
    try:
        time.sleep(0.2)
        sent = time.monotonic()
        alarm = api.send_alarm(TEXTS, level="warning")
        for lang, stream in streams.items():
            event = stream.next_event(3)
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

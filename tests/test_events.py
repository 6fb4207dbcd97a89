from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from alarms import events
from tests.sse import parse


def test_event_fields_lose_cr_lf_nul():
    raw = events.encode("x", event="al\r\narm\0", id="1\n2")
    assert raw == b"id: 12\nevent: alarm\ndata: x\n\n"


def test_multi_line_data_becomes_one_data_line_each():
    raw = events.encode("one\ntwo\r\nthree\rfour")
    assert raw == b"data: one\ndata: two\ndata: three\ndata: four\n\n"
    assert parse(raw.decode())[0].data == "one\ntwo\nthree\nfour"


def test_retry_and_comment():
    assert events.encode(retry=2000) == b"retry: 2000\n\n"
    assert events.comment("a\nb") == b": a b\n\n"


def test_alarm_payload_is_one_line_of_json_whatever_the_text():
    payload = {"id": 1, "title": "<img src=x onerror=alert(1)>", "message": "a\r\nb\0c\u2028"}
    raw = events.alarm(payload, "5-6")
    assert raw.count(b"\ndata: ") == 1
    (event,) = parse(raw.decode())
    assert (event.event, event.id) == ("alarm", "5-6")
    assert json.loads(event.data) == payload


@given(st.text(), st.text(), st.text())
def test_a_conforming_parser_reads_back_exactly_what_was_sent(title, message, event_id):
    payload = {"id": 7, "title": title, "message": message}
    (event,) = parse(events.alarm(payload, event_id).decode())
    assert event.json() == payload
    assert event.id == event_id.replace("\r", "").replace("\n", "").replace("\0", "")


@given(st.text())
def test_raw_data_round_trips_up_to_line_ends(text):
    (event,) = parse(events.encode(text, event="x").decode())
    expected = text.replace("\0", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")
    assert event.data == expected


def test_event_ids_parse_or_are_refused():
    assert events.parse_event_id(events.format_event_id(12, 345)) == (12, 345)
    for bad in (None, "", "12", "a-1", "1-b", "-1", "1-2-3", "²-3", "1" * 80 + "-1", " - "):
        assert events.parse_event_id(bad) is None

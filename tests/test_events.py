from __future__ import annotations

import json
import re

import pytest
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


def test_ids_are_ascii_digits_or_json_integers_within_a_signed_64_bit_integer():
    assert events.parse_id("42") == events.parse_id(42) == 42
    assert events.parse_id(str(2**63 - 1)) == events.parse_id(2**63 - 1) == 2**63 - 1
    assert events.parse_id("0", minimum=0) == 0
    assert events.parse_id("999", maximum=999) == 999
    for bad in ("\u0663", "\u00b2", "\u2460", "+1", " 1", "1_0", "1.0", "-1", "0", "", "1000"):
        with pytest.raises(events.InvalidId):
            events.parse_id(bad, maximum=999)
    for bad in (0, -1, 2**63, 1.0, True, None, [1]):
        with pytest.raises(events.InvalidId):
            events.parse_id(bad)


DIGITISH = st.text(alphabet="0123456789\u0663\u00b2\u2460+- _.", max_size=21)


@given(st.one_of(DIGITISH, st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_id_returns_the_number_or_refuses_in_our_words(raw):
    # At most 19 digits (2**63 - 1 has 19), so a long run of zeros is no id either.
    if type(raw) is str and re.fullmatch("[0-9]{1,19}", raw):
        expected = int(raw)
    else:
        expected = raw if type(raw) is int else None
    if expected is not None and 1 <= expected <= 2**63 - 1:
        assert events.parse_id(raw) == expected
    else:
        with pytest.raises(events.InvalidId) as refused:
            events.parse_id(raw)
        # Never Python's own text ("invalid literal ...") nor the input itself.
        assert str(refused.value) == (
            f"An id is a whole number from 1 to {2**63 - 1}, written in the digits 0-9."
        )

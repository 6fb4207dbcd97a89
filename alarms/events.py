"""The wire format: payload dicts in, Server-Sent Events bytes out, sanitised.

Field values (event, id) lose CR, LF and NUL, which would end or corrupt a
line; data is split into one ``data:`` line per line of text, so a conforming
parser reads back exactly the text that was sent (WHATWG HTML, 9.2.6).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

_FIELD_UNSAFE = re.compile(r"[\r\n\0]")
_LINES = re.compile(r"\r\n|\r|\n")


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    lines: list[str] = []
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    if id is not None:
        lines.append(f"id: {_FIELD_UNSAFE.sub('', id)}")
    if event is not None:
        lines.append(f"event: {_FIELD_UNSAFE.sub('', event)}")
    if data is not None:
        # NUL is legal in data, but some parsers and proxies choke on it.
        lines.extend(f"data: {line}" for line in _LINES.split(data.replace("\0", "\ufffd")))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str = "") -> bytes:
    return f": {_LINES.sub(' ', text)}\n\n".encode()


def dumps(payload: dict[str, Any]) -> str:
    # JSON escapes CR, LF and NUL inside strings, so a payload is one data line.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def alarm(payload: dict[str, Any], event_id: str) -> bytes:
    return encode(dumps(payload), event="alarm", id=event_id)


def retract(alarm_id: int, event_id: str) -> bytes:
    return encode(dumps({"id": alarm_id}), event="retract", id=event_id)


def dismiss(alarm_id: int, event_id: str) -> bytes:
    return encode(dumps({"id": alarm_id}), event="dismiss", id=event_id)


def test(payload: dict[str, Any]) -> bytes:
    """An operator's test of an alarm (``alarms.operator``): its own event type, so
    a client that does not know it shows nothing, and no ``id:`` line, so the
    stream's Last-Event-ID stays where the journal's real events put it. The
    payload is a reader payload with ``"test": true`` and a string id
    (``"test-<journal row>-<language>"``), which no alarm id can equal."""
    return encode(dumps(payload), event="test")


def format_event_id(seq: int, millis: int) -> str:
    return f"{seq}-{millis}"


def event_id(seq: int) -> str:
    """The id of an event sent now by a broker that has read the journal up to ``seq``.

    The clock part tells a resuming reader's broker since when it was away.
    """
    return format_event_id(seq, int(time.time() * 1000))


# A database id (an alarm's, a journal row's) is a signed 64-bit integer.
MAX_ID = 2**63 - 1


class InvalidId(ValueError):
    """Client input that is not an id. The message is ours, safe to show the client."""


def parse_id(raw: object, *, minimum: int = 1, maximum: int = MAX_ID) -> int:
    """The id a client sent: text of ASCII digits, or a JSON integer; else ``InvalidId``.

    Every id read from a request goes through here. ``str.isdigit()`` also takes
    "٣" (which ``int()`` reads as 3) and "²" (which ``int()`` refuses with its own
    message), and ``int()`` takes signs, spaces and underscores: none is an id.
    """
    value: int | None = None
    if isinstance(raw, str):
        # Length first: a megabyte of digits never reaches int().
        if 0 < len(raw) <= len(str(maximum)) and raw.isascii() and raw.isdigit():
            value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    if value is not None and minimum <= value <= maximum:
        return value
    raise InvalidId(
        f"An id is a whole number from {minimum} to {maximum}, written in the digits 0-9."
    )


def parse_ids(values: Sequence[object], *, limit: int) -> list[int]:
    """A client's list of ids, each through :func:`parse_id`; ``InvalidId`` names the
    position of the first bad one (never its value) or says the list is too long."""
    if len(values) > limit:
        raise InvalidId(f"At most {limit} ids per request.")
    ids = []
    for index, value in enumerate(values):
        try:
            ids.append(parse_id(value))
        except InvalidId as exc:
            raise InvalidId(f"ids[{index}] is not an alarm id. {exc}") from None
    return ids


# Beyond these a client's id cannot be ours: a journal id is a signed 64-bit
# integer, and a time past 9999-12-31 is no datetime (a resume would fail).
MAX_SEQUENCE = MAX_ID
MAX_MILLIS = 253_402_300_799_999


def parse_event_id(raw: str | None) -> tuple[int, int] | None:
    """``(journal sequence, unix milliseconds)`` from a Last-Event-ID, or None if malformed."""
    if not raw or len(raw) > 64:
        return None
    seq, sep, millis = raw.strip().partition("-")
    if not sep:
        return None
    try:
        # Sequence 0 is a broker's head before any journal row.
        return (
            parse_id(seq, minimum=0, maximum=MAX_SEQUENCE),
            parse_id(millis, minimum=0, maximum=MAX_MILLIS),
        )
    except InvalidId:
        return None

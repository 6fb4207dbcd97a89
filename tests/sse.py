"""A small, blocking Server-Sent Events client for tests, parsing as WHATWG HTML 9.2.6 says."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Parser:
    """Feed lines, get events: the dispatch rules of the spec, no network."""

    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _has_data: bool = False

    def feed_line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        event, data, has = self._event, self._data, self._has_data
        self._event, self._data, self._has_data = "", [], False
        if not has:
            return None
        return Event(event or "message", "\n".join(data), self.last_event_id)


def parse(text: str) -> list[Event]:
    """Every event in a complete stream body (CRLF, CR or LF line ends)."""
    parser = Parser()
    found = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        event = parser.feed_line(line)
        if event is not None:
            found.append(event)
    return found


class Stream:
    """One open ``text/event-stream`` response, read event by event."""

    def __init__(
        self,
        url: str,
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", path, headers=all_headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.parser = Parser()
        self.closed = False

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    def next_event(self, timeout: float = 5.0) -> Event:
        """The next event; TimeoutError if none comes in time, EOFError if the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event in time")
            self.conn.sock.settimeout(remaining)
            try:
                raw = self.response.readline()
            except TimeoutError:
                raise TimeoutError("no event in time") from None
            if not raw:
                self.closed = True
                raise EOFError("the server closed the stream")
            event = self.parser.feed_line(raw.decode().rstrip("\r\n"))
            if event is not None:
                return event

    def events(self, count: int, timeout: float = 5.0) -> list[Event]:
        return [self.next_event(timeout) for _ in range(count)]

    def drain(self, quiet: float = 0.5) -> list[Event]:
        """Every event until none comes for ``quiet`` seconds."""
        found = []
        while True:
            try:
                found.append(self.next_event(quiet))
            except TimeoutError:
                return found

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

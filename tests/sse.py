"""A small, blocking Server-Sent Events client for tests, parsing as WHATWG HTML 9.2.6 says."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
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

    def pending(self) -> bool:
        """Whether fields of an event not yet dispatched have been read."""
        return bool(self._event or self._has_data)

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
    """One open ``text/event-stream`` response over a raw socket, read event by event.

    A raw socket (not http.client) so that a read that times out leaves the
    stream usable, and the chunks are seen: the first holds the stream's opening.
    """

    def __init__(
        self,
        url: str,
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        all_headers = {"Host": parts.netloc, "Accept": "text/event-stream", **(headers or {})}
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
        self.sock.sendall(head.encode("utf-8") + b"\r\n")
        self._raw = bytearray()  # bytes off the socket, not yet de-chunked
        self._body = bytearray()  # de-chunked body, not yet parsed into lines
        self._eof = False
        while b"\r\n\r\n" not in self._raw:
            self._recv(time.monotonic() + timeout)
            if self._eof:
                raise EOFError("no response")
        head_bytes, _, rest = bytes(self._raw).partition(b"\r\n\r\n")
        self._raw = bytearray(rest)
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = http.client.HTTPMessage()
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip()] = value.strip()
        self.chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        self.parser = Parser()
        self.closed = False
        # Bytes of the first chunk (the view's opening) not yet read as lines;
        # None until it is in.
        self._opening_left: int | None = None

    def _recv(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no event in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no event in time") from None
        except OSError:
            data = b""
        if not data:
            self._eof = True
        self._raw += data

    def _dechunk(self) -> None:
        if not self.chunked:
            self._body += self._raw
            self._raw.clear()
            return
        while True:
            size_end = self._raw.find(b"\r\n")
            if size_end < 0:
                return
            size = int(bytes(self._raw[:size_end]).split(b";")[0], 16)
            if size == 0:
                self._eof = True
                return
            if len(self._raw) < size_end + 2 + size + 2:
                return
            start = size_end + 2
            self._body += self._raw[start : start + size]
            del self._raw[: start + size + 2]
            if self._opening_left is None:
                self._opening_left = size

    def _next_line(self, deadline: float) -> str:
        """The next line of the body; TimeoutError past ``deadline``, EOFError at its end."""
        while True:
            self._dechunk()
            newline = self._body.find(b"\n")
            if newline >= 0:
                line = bytes(self._body[:newline]).decode().rstrip("\r")
                del self._body[: newline + 1]
                if self._opening_left:
                    self._opening_left -= newline + 1
                return line
            if self._eof:
                self.closed = True
                raise EOFError("the server closed the stream")
            self._recv(deadline)

    @property
    def last_event_id(self) -> str:
        return self.parser.last_event_id

    def next_event(self, timeout: float = 15.0) -> Event:
        """The next event; TimeoutError if none comes in time, EOFError if the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.parser.feed_line(self._next_line(deadline))
            if event is not None:
                return event

    def opening(self, timeout: float = 15.0) -> list[Event]:
        """The events the stream opens with: the snapshot, or the replay of a resume.

        The view sends its ``retry:``, its ``: alarms`` comment and those events
        as one body message, which daphne writes as one chunk: what that chunk
        holds is all of them, known as soon as it is in, with no quiet window to
        wait out. Call it first, before any other read.
        """
        assert self.chunked, "the opening is known by its chunk"
        deadline = time.monotonic() + timeout
        while self._opening_left is None:
            self._dechunk()
            if self._eof:
                raise EOFError("the server closed the stream before its opening")
            if self._opening_left is None:
                self._recv(deadline)
        found = []
        while self._opening_left:
            event = self.parser.feed_line(self._next_line(deadline))
            if event is not None:
                found.append(event)
        assert self.parser.retry is not None, "the opening sets no retry"
        assert self.parser.comments[:1] == ["alarms"], self.parser.comments
        assert not self.parser.pending(), "the opening ends inside an event"
        return found

    def opened(self, timeout: float = 15.0) -> None:
        """Wait for the stream's opening, which must hold no event: the stream is live."""
        found = self.opening(timeout)
        assert found == [], f"the stream opened with {found}"

    def events(self, count: int, timeout: float = 15.0) -> list[Event]:
        return [self.next_event(timeout) for _ in range(count)]

    def read_until(self, last: Callable[[Event], bool], timeout: float = 15.0) -> list[Event]:
        """Every event up to the first for which ``last`` holds, that one included."""
        found = [self.next_event(timeout)]
        while not last(found[-1]):
            found.append(self.next_event(timeout))
        return found

    def comments_until(self, comment: str, count: int, timeout: float = 15.0) -> None:
        """Read until ``comment`` has come ``count`` times in all (``""``: heartbeats).

        An event meanwhile is an error."""
        deadline = time.monotonic() + timeout
        while self.parser.comments.count(comment) < count:
            event = self.parser.feed_line(self._next_line(deadline))
            assert event is None, f"an event while waiting for comments: {event}"

    def ends(self, timeout: float = 15.0) -> list[Event]:
        """Read to the stream's end (the server closes it); the events that came before it.

        TimeoutError if it does not end in time."""
        found = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                found.append(self.next_event(max(0.0, deadline - time.monotonic())))
            except EOFError:
                return found

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventSource:
    """A client that reconnects as a browser's ``EventSource`` does, for fault tests.

    When a stream ends it waits the last ``retry:`` the server sent and
    reconnects with ``Last-Event-ID``. Where a browser gives up (a refused
    connection, an answer other than 200) it tries again after the same delay,
    as the page's script does. Run :meth:`run` in a thread; :meth:`stop` ends it.
    """

    def __init__(
        self,
        url: str,
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry_ms: int = 3000,
    ) -> None:
        self.url = url
        self.cookies = cookies
        self.headers = headers or {}
        self.retry_ms = retry_ms  # until the server sends its own
        self.last_event_id = ""
        self.events: list[Event] = []
        self.connects = 0  # answers with status 200
        self.resumed_from: list[str] = []  # the Last-Event-ID each of them was asked with
        self.failures: list[str] = []  # refused connections, other statuses, resets
        self._stop = threading.Event()

    def alarm_ids(self) -> list[int]:
        return [e.json()["id"] for e in list(self.events) if e.event == "alarm"]

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.last_event_id:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                stream = Stream(self.url, cookies=self.cookies, headers=headers)
            except (OSError, EOFError) as exc:  # TimeoutError is an OSError
                self.failures.append(f"connect: {exc!r}")
                self._stop.wait(self.retry_ms / 1000)
                continue
            with stream:
                if stream.status != 200:
                    self.failures.append(f"HTTP {stream.status}")
                else:
                    self.connects += 1
                    self.resumed_from.append(headers.get("Last-Event-ID", ""))
                    stream.parser.last_event_id = self.last_event_id
                    self._read(stream)
            self._stop.wait(self.retry_ms / 1000)

    def _read(self, stream: Stream) -> None:
        try:
            while not self._stop.is_set():
                try:
                    event = stream.next_event(0.2)
                except TimeoutError:
                    continue
                finally:
                    if stream.parser.retry is not None:
                        self.retry_ms = stream.parser.retry
                self.last_event_id = event.id or ""
                self.events.append(event)
        except EOFError:
            pass  # the server ended the stream
        except OSError as exc:
            self.failures.append(f"read: {exc!r}")

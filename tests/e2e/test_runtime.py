"""The hooks of ``alarms/runtime.py`` that only a real server shows working.

The others are tested where their feature is: the shutdown chain in
``test_runserver.py`` and ``test_faults.py``, the session priming in
``tests/test_broker.py``, the collector hold in ``tests/test_broker.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Server
from tests.helpers import thread_count

# one_database: the hook lets Django's ASGI handler's per-request thread go; the
# threads a stream holds do not depend on the database behind it.
pytestmark = [pytest.mark.one_django, pytest.mark.one_database]

#: Streams held open at once. Without the hook each holds an idle OS thread.
STREAMS = 1000


async def open_streams(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` streams, each read up to its opening comment; their headers checked."""
    request = (
        b"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        # Served through Django's middleware chain, where the hook is needed.
        assert b"\r\nx-chain: 1" in head.lower(), head
        await reader.readuntil(b": alarms")
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


@pytest.mark.e2e
def test_threads_stay_flat_while_streams_are_open(
    server_factory: Callable[..., Server],
) -> None:
    """``runtime.release_request_thread``: Django's ASGI handler gives each request
    a thread of its own for thread-sensitive calls, kept as long as the request.
    A stream lets it go at its first body step, so the server's threads do not
    grow with the streams it holds."""
    server = server_factory(
        settings="tests.e2e.chain_settings", MAX_STREAMS_PER_ADDRESS=None, HEARTBEAT=600
    )
    assert server.process is not None
    pid = server.process.pid

    async def main() -> tuple[int, int]:
        first = await open_streams(server.port, 1)
        before = thread_count(pid)
        writers = first + await open_streams(server.port, STREAMS)
        during = thread_count(pid)
        for writer in writers:
            writer.close()
        return before, during

    before, during = asyncio.run(main())
    # A few threads may come and go (the database threads, a response's end);
    # one per stream would be a thousand.
    assert during - before < 50, (before, during)

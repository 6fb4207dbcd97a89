"""docs/alarms@.service, the systemd unit of docs/deployment.md, run as written.

No systemd here: the test starts the unit's ExecStart line itself (uvicorn from
this virtualenv, ``%i`` a free port, the test's settings) and stops it with the
unit's KillSignal, holding it to the unit's TimeoutStopSec.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from alarms import api
from alarms.conf import DEFAULTS
from tests.e2e.conftest import Unit, unit_exec_start, unit_service
from tests.helpers import en
from tests.sse import Stream

pytestmark = pytest.mark.e2e


@pytest.fixture
def unit(transactional_db: None) -> Iterator[Unit]:
    # The test database and settings, as every e2e server; a grace long enough
    # to see what a stream asked for in it gets.
    server = Unit({"SHUTDOWN_GRACE": 3})
    assert server.asgi_server == "uvicorn", server.command()  # as docs/deployment.md says
    server.start()
    yield server
    server.stop(signal.SIGKILL)


def test_the_unit_serves_streams_and_stops_within_its_timeout(unit: Unit) -> None:
    process, port = unit.process, unit.port
    assert process is not None
    settings = unit_service()
    with Stream(f"http://127.0.0.1:{port}/alarms/stream/") as stream:
        assert stream.status == 200
        alarm = api.send_alarm(en("Served by the unit"), audience="everyone")
        assert stream.next_event(15).json()["id"] == alarm.pk
        stopped = time.monotonic()
        process.send_signal(signal.Signals[settings["KillSignal"]])
        assert stream.ends(15) == []  # the stream ends cleanly, with a hint to come back soon
    assert "closed: shutdown" in stream.parser.comments
    assert stream.parser.retry is not None and stream.parser.retry <= 1000
    # Until the server stops, a new stream is refused, so a proxy passes it on to
    # another process (docs/nginx-alarms-locations.conf: proxy_next_upstream).
    with Stream(f"http://127.0.0.1:{port}/alarms/stream/") as late:
        assert late.status == 503
    process.wait(int(settings["TimeoutStopSec"]))  # else systemd would SIGKILL it
    took = time.monotonic() - stopped
    assert took < int(settings["TimeoutStopSec"]), took


def test_the_unit_listens_on_loopback_only_and_behind_a_proxy(unit: Unit) -> None:
    port = unit.port
    # The proxy headers are believed from 127.0.0.1: only the local nginx may
    # connect. Linux routes all of 127/8 to loopback, so another local address
    # shows whether the server listens beyond 127.0.0.1.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("this system has no 127.0.0.2")
        probe.settimeout(2)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.2", port))
    argv = unit_exec_start(port)
    assert "--proxy-headers" in argv
    assert argv[argv.index("--forwarded-allow-ips") + 1] == "127.0.0.1"


def test_the_units_limits_fit_the_apps_defaults() -> None:
    settings = unit_service()
    # A socket per stream, beyond the process cap's worth, with room for the rest.
    assert int(settings["LimitNOFILE"]) >= DEFAULTS["MAX_STREAMS"] + 1000
    # systemd waits this long after KillSignal: the grace, then the server's
    # own wait for requests still running, with room to spare.
    argv = unit_exec_start(0)
    graceful = int(argv[argv.index("--timeout-graceful-shutdown") + 1])
    assert int(settings["TimeoutStopSec"]) >= DEFAULTS["SHUTDOWN_GRACE"] + graceful + 5

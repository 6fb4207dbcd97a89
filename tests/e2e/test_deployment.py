"""docs/alarms@.service, the systemd unit of docs/deployment.md, run as written.

No systemd here: the test starts the unit's ExecStart line itself (daphne from
this virtualenv, ``%i`` a free port, the test's settings) and stops it with the
unit's KillSignal, holding it to the unit's TimeoutStopSec.
"""

from __future__ import annotations

import configparser
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alarms import api
from alarms.conf import DEFAULTS
from tests.e2e.conftest import ROOT, Server
from tests.helpers import en
from tests.sse import Stream

pytestmark = pytest.mark.e2e

UNIT = ROOT / "docs" / "alarms@.service"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def exec_start(port: int) -> list[str]:
    argv = shlex.split(service()["ExecStart"])
    assert Path(argv[0]).name == "daphne", argv
    return [sys.executable, "-m", "daphne", *(a.replace("%i", str(port)) for a in argv[1:])]


class Unit(Server):
    """A server started by the unit's ExecStart line instead of the harness's own."""

    def command(self) -> list[str]:
        return exec_start(self.port)


@pytest.fixture
def unit(transactional_db: None) -> Iterator[Unit]:
    # The test database and settings, as every e2e server; a grace long enough
    # to see what a stream asked for in it gets.
    server = Unit({"SHUTDOWN_GRACE": 3}).start()
    yield server
    server.stop(signal.SIGKILL)


def test_the_unit_serves_streams_and_stops_within_its_timeout(unit: Unit) -> None:
    process, port = unit.process, unit.port
    assert process is not None
    settings = service()
    with Stream(f"http://127.0.0.1:{port}/alarms/stream/") as stream:
        assert stream.status == 200
        alarm = api.send_alarm(en("Served by the unit"), audience="everyone")
        assert stream.next_event(15).json()["id"] == alarm.pk
        stopped = time.monotonic()
        process.send_signal(signal.Signals[settings["KillSignal"]])
        assert stream.ends(15) == []  # the stream ends cleanly, with a hint to come back soon
    assert "closed: shutdown" in stream.parser.comments
    assert stream.parser.retry is not None and stream.parser.retry <= 1000
    # Until daphne stops, a new stream is refused, so a proxy passes it on to
    # another process (docs/nginx-alarms-locations.conf: proxy_next_upstream).
    with Stream(f"http://127.0.0.1:{port}/alarms/stream/") as late:
        assert late.status == 503
    process.wait(int(settings["TimeoutStopSec"]))  # else systemd would SIGKILL it
    took = time.monotonic() - stopped
    assert took < int(settings["TimeoutStopSec"]), took


def test_the_unit_listens_on_loopback_only_and_behind_a_proxy(unit: Unit) -> None:
    port = unit.port
    # --proxy-headers trusts X-Forwarded-For from whoever connects: only the
    # local nginx may. Linux routes all of 127/8 to loopback, so another local
    # address shows whether daphne listens beyond 127.0.0.1.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("this system has no 127.0.0.2")
        probe.settimeout(2)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.2", port))
    assert "--proxy-headers" in exec_start(port)


def test_the_units_limits_fit_the_apps_defaults() -> None:
    settings = service()
    # A socket per stream, beyond the process cap's worth, with room for the rest.
    assert int(settings["LimitNOFILE"]) >= DEFAULTS["MAX_STREAMS"] + 1000
    # systemd waits this long after KillSignal: the grace and daphne's shutdown.
    assert int(settings["TimeoutStopSec"]) >= DEFAULTS["SHUTDOWN_GRACE"] + 10

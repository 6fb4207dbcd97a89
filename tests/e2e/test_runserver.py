"""Ctrl-C on ``manage.py runserver`` (daphne's) with a stream open.

On CPython before 3.11.8 this used to end in a segmentation fault: the stream's
tasks outlived the server and crashed the interpreter at exit (see
docs/runserver-segfault.md). Now the streams end first, each with its closing
comment and a short ``retry:``, and the server exits as it does without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from alarms import runtime
from tests.e2e.conftest import ARTIFACTS, ROOT, database_url, free_port, wait_listening
from tests.sse import Stream

pytestmark = pytest.mark.e2e

# How long the whole process group may take to be gone after Ctrl-C: the
# broker's SHUTDOWN_GRACE (1 s) plus daphne's own shutdown, with room to spare.
EXIT_WITHIN = 10.0


def _sigint_as_in_a_terminal() -> None:
    # A shell starts background jobs (scripts/test's legs) with SIGINT ignored,
    # and children inherit that; a developer's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Runserver:
    """``manage.py runserver`` in a process group of its own, as a terminal runs it."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = ARTIFACTS / f"runserver-{self.port}.log"
        self.log.write_bytes(b"")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", *args],
                cwd=ROOT,
                env={
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
                    "DATABASE_URL": database_url(),
                    "ALARMS_JSON": "{}",  # SHUTDOWN_GRACE as shipped
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONFAULTHANDLER": "1",  # a crash in any process of the group shows
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_sigint_as_in_a_terminal,
            )
        wait_listening(self.process, self.port, 30, "runserver", self.output)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """What Ctrl-C does: SIGINT to the foreground process group (reloader and server)."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait_gone(self, deadline: float) -> int:
        """The exit code of ``runserver``, once no process of its group is left."""
        code = self.process.wait(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return code
            time.sleep(0.05)
        raise AssertionError(f"runserver's processes still run: {self.output()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def runserver(transactional_db: None) -> Iterator[Callable[..., Runserver]]:
    started: list[Runserver] = []

    def start(*args: str) -> Runserver:
        server = Runserver(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.mark.parametrize("args", [["--noreload"], []], ids=["noreload", "autoreload"])
def test_ctrl_c_ends_streams_and_runserver_exits_cleanly(runserver, args):
    server = runserver(*args)
    with Stream(f"{server.url}/alarms/stream/") as stream:
        assert stream.status == 200
        stream.opened()  # the stream is live
        assert stream.parser.comments == ["alarms"]
        server.ctrl_c()
        deadline = time.monotonic() + EXIT_WITHIN
        # A clean end of the response, not a reset or a hang.
        assert stream.ends(EXIT_WITHIN) == []
    code = server.wait_gone(deadline)
    output = server.output()
    assert "Segmentation fault" not in output, output
    assert "Fatal Python error" not in output, output
    assert code == 0, output  # what runserver gives for Ctrl-C; -11 was the crash
    assert "closed: shutdown" in stream.parser.comments, output
    assert stream.parser.retry is not None and stream.parser.retry <= 1000


def test_runtime_hooks_work_on_this_interpreter():
    # The start-up probe of alarms.runtime: a hook that stopped working would
    # leave the test above failing with no word why.
    assert runtime.probe() == []

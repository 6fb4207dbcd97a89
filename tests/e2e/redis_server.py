"""A real Redis server for end-to-end tests: Debian's ``redis-server``.

For the tests of the Redis wake-up transport (``ALARMS["WAKE_URL"]``,
``tests/e2e/test_redis_wake.py``). Each :class:`RedisServer` runs as the current
user on a free port of 127.0.0.1 (``free_port``, which honours ALARMS_TEST_PORTS),
with nothing saved to disk. Locally a missing program skips the tests that need
it; where the run demands it (``ALARMS_REQUIRE_REDIS=1``, as under CI) it fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Self

import pytest

from tests.e2e.conftest import ARTIFACTS, free_port, stop_process, wait_listening

REDIS_SERVER = Path("/usr/bin/redis-server")


def require_redis() -> Path:
    """The redis-server program: else skip, or fail where the run demands it (CI)."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    message = f"{REDIS_SERVER} is missing (Debian: apt-get install redis-server)"
    if os.environ.get("ALARMS_REQUIRE_REDIS") == "1":
        pytest.fail(f"ALARMS_REQUIRE_REDIS=1 but {message}", pytrace=False)
    pytest.skip(message)


class RedisServer:
    """One redis-server on 127.0.0.1; :meth:`stop` and :meth:`start` keep its port."""

    def __init__(self) -> None:
        self.program = require_redis()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = ARTIFACTS / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        command = [
            str(self.program),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.process, self.port, 20, "redis-server", self.log.read_text)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

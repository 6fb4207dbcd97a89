"""Real monitoring programs for end-to-end tests: Debian's Prometheus and its promtool.

For the tests of ``/alarms/metrics/`` and of docs/prometheus.yml, docs/alerts.yml
and docs/alerts.test.yml (``tests/e2e/test_prometheus.py``), and for any other
test that needs a Prometheus of its own. Each :class:`Prometheus` runs as the
current user, on a free port of 127.0.0.1 (``free_port``, which honours
ALARMS_TEST_PORTS), with its configuration, storage and log in a directory of
its own. Locally a missing program skips the tests that need it; where the run
demands them (``ALARMS_REQUIRE_MONITORING=1``, as under CI) it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import pytest

from tests.e2e.conftest import ROOT, free_port, stop_process, wait_listening

__all__ = [
    "ALERT_RULES",
    "ALERT_TESTS",
    "PROMETHEUS",
    "PROMTOOL",
    "SCRAPE_CONFIG",
    "Program",
    "Prometheus",
    "docs_config",
    "free_port",
    "promtool",
    "replace_once",
    "require",
]

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
SCRAPE_CONFIG = ROOT / "docs" / "prometheus.yml"
ALERT_RULES = ROOT / "docs" / "alerts.yml"
ALERT_TESTS = ROOT / "docs" / "alerts.test.yml"


def require(program: Path) -> Path:
    """``program``, which must exist: else skip, or fail where the run demands it (CI)."""
    if program.exists():
        return program
    message = f"{program} is missing (Debian: apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("ALARMS_REQUIRE_MONITORING") == "1":
        pytest.fail(f"ALARMS_REQUIRE_MONITORING=1 but {message}", pytrace=False)
    pytest.skip(message)


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; the caller checks its exit status and output."""
    return subprocess.run(
        [str(require(PROMTOOL)), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def replace_once(text: str, old: str, new: str, where: Path | str) -> str:
    """``text`` with the line ``old`` replaced, which must be there exactly once."""
    assert text.count(old) == 1, f"{where} should hold {old!r} exactly once"
    return text.replace(old, new)


def docs_config(targets: Sequence[str], token_file: Path, interval: str = "1s") -> str:
    """docs/prometheus.yml scraping ``targets`` every ``interval``, the token in ``token_file``.

    Its other lines stay as they are, ``rule_files`` included: copy docs/alerts.yml
    next to the file written (:meth:`Prometheus.start` does).
    """
    text = SCRAPE_CONFIG.read_text()
    text = replace_once(
        text, "  scrape_interval: 15s\n", f"  scrape_interval: {interval}\n", SCRAPE_CONFIG
    )
    text = replace_once(
        text, "  evaluation_interval: 15s\n", f"  evaluation_interval: {interval}\n", SCRAPE_CONFIG
    )
    text = replace_once(
        text,
        "      credentials_file: /etc/prometheus/alarms-metrics-token\n",
        f"      credentials_file: {token_file}\n",
        SCRAPE_CONFIG,
    )
    return replace_once(
        text,
        '      - targets: ["127.0.0.1:8001", "127.0.0.1:8002"]\n',
        f"      - targets: {json.dumps(list(targets))}\n",
        SCRAPE_CONFIG,
    )


class Program:
    """A monitoring program (Prometheus, Alertmanager) on a free port of 127.0.0.1,
    run in ``directory`` with ``config`` written there as ``config_name``.

    A subclass names its ``program`` (the path :func:`require` finds) and its
    ``arguments``; it answers ``/-/ready`` once it serves.
    """

    name = "program"
    config_name = "config.yml"
    #: Seconds between two tries of a wait.
    poll = 0.2

    def __init__(self, directory: Path, config: str, files: Sequence[Path] = ()) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / self.config_name
        self.config.write_text(config)
        for path in files:
            shutil.copy(path, self.dir / path.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def program(self) -> Path:
        raise NotImplementedError

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def output(self) -> str:
        """Its log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _tail(self) -> str:
        return self.output()[-3000:]

    def start(self) -> Self:
        command = [str(require(self.program())), *self.arguments()]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT
            )
        wait_listening(self.process, self.port, 30, self.name, self._tail)
        self.wait_for(self._ready, 30, f"{self.name} ready")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate`` until it holds; return its value. A bound on a hang,
        not a speed claim: the program works on its own clock."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s\n{self._tail()}")
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self._tail()}")
            time.sleep(self.poll)
        return value


class Prometheus(Program):
    """One Prometheus server; ``config`` is its prometheus.yml, and ``files`` are
    copied next to it (the rule files it names)."""

    name = "prometheus"
    config_name = "prometheus.yml"

    def program(self) -> Path:
        return PROMETHEUS

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: its ``data``, which must be a success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def by_instance(self, expr: str) -> dict[str, float]:
        """``expr`` now, as ``{instance: value}``."""
        return {r["metric"]["instance"]: float(r["value"][1]) for r in self.query(expr)}

    def targets(self) -> list[dict[str, Any]]:
        """The active targets: ``labels``, ``health`` ("up", "down", "unknown"), ``lastError``..."""
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_for_query(
        self,
        expr: str,
        expected: dict[str, float] | Callable[[dict[str, float]], bool],
        timeout: float = 30.0,
    ) -> dict[str, float]:
        """Wait until ``expr`` by instance equals ``expected`` (or satisfies it); return it."""
        seen: list[dict[str, float]] = []

        def matches() -> bool:
            found = self.by_instance(expr)
            seen[:] = [found]
            return found == expected if isinstance(expected, dict) else expected(found)

        try:
            self.wait_for(matches, timeout, f"{expr} to be {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{expr}: last {seen}, expected {expected}\n{exc}") from None
        return seen[0]

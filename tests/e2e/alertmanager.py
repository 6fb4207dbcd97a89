"""A real Alertmanager for end-to-end tests and benchmarks: Debian's, with docs/alertmanager.yml.

Each :class:`Alertmanager` runs as the current user on a free port of 127.0.0.1
(``free_port``, which honours ALARMS_TEST_PORTS), without clustering, with its
configuration, storage and log in a directory of its own. The configuration is
docs/alertmanager.yml with its url, token file and timings replaced, each line
of which must be there exactly once. Alerts are posted to its own API
(``/api/v2/alerts``), as Prometheus posts them. Locally a missing program skips
the tests that need it; where the run demands it (``ALARMS_REQUIRE_MONITORING=1``,
as under CI) it fails them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ROOT
from tests.e2e.monitoring import Program, replace_once

__all__ = [
    "ALERTMANAGER",
    "AMTOOL",
    "CONFIG",
    "Alertmanager",
    "docs_config",
    "posted_alert",
    "rfc3339",
]

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
CONFIG = ROOT / "docs" / "alertmanager.yml"
HOOK_PATH = "/alarms/hooks/alertmanager/"


def docs_config(
    site: str,
    token_file: Path,
    *,
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1s",
) -> str:
    """docs/alertmanager.yml, posting to the site at ``site`` (``http://host:port``)
    with the token in ``token_file``, on the timings given."""
    text = CONFIG.read_text()
    for old, new in (
        ("  group_wait: 10s\n", f"  group_wait: {group_wait}\n"),
        ("  group_interval: 1m\n", f"  group_interval: {group_interval}\n"),
        ("  repeat_interval: 4h\n", f"  repeat_interval: {repeat_interval}\n"),
        (
            "      - url: https://alarms.example.com/alarms/hooks/alertmanager/\n",
            f"      - url: {site}{HOOK_PATH}\n",
        ),
        (
            "            credentials_file: /etc/alertmanager/alarms-token\n",
            f"            credentials_file: {token_file}\n",
        ),
    ):
        text = replace_once(text, old, new, CONFIG)
    return text


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def posted_alert(
    alertname: str,
    *,
    starts: datetime,
    ends: datetime | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An alert for Alertmanager's ``POST /api/v2/alerts``, as Prometheus sends one.

    Give the same ``starts`` to resolve it (``ends`` in the past): Alertmanager
    then merges it with the firing one instead of starting another incident.
    """
    alert: dict[str, Any] = {
        "labels": {"alertname": alertname, "severity": "critical", **(labels or {})},
        "annotations": annotations or {},
        "startsAt": rfc3339(starts),
        "generatorURL": f"http://prometheus.example.org:9090/graph?g0.expr={alertname}",
    }
    if ends is not None:
        alert["endsAt"] = rfc3339(ends)
    return alert


class Alertmanager(Program):
    """One Alertmanager on a free port of 127.0.0.1, in ``directory``, with ``config``."""

    name = "alertmanager"
    config_name = "alertmanager.yml"
    # Notifications come within milliseconds of a post: look often.
    poll = 0.05

    def program(self) -> Path:
        return ALERTMANAGER

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no peers, no gossip port
            "--log.level=debug",
        ]

    def post(self, alerts: Sequence[dict[str, Any]]) -> None:
        """``POST /api/v2/alerts``, which must take them all."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.read()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` (0 if none) whose labels include ``labels``."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        wanted = set(labels.items())
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and wanted <= set(sample.labels.items())
        )

    def notifications(self) -> tuple[float, float]:
        """Webhook notifications sent, and of those failed, so far."""
        return (
            self.metric("alertmanager_notifications_total", integration="webhook"),
            self.metric("alertmanager_notifications_failed_total", integration="webhook"),
        )

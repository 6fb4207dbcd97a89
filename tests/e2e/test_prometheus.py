"""Real Prometheus scraping real daphne processes, with docs/prometheus.yml and docs/alerts.yml.

One Prometheus (Debian's) and two daphne processes serve the whole module: the
scrape configuration is docs/prometheus.yml with its targets and token file
replaced, and a second job that bears a wrong token. The series are read back
through Prometheus's query API. promtool checks the same files, and runs the
unit tests of the alerting rules (docs/alerts.test.yml).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.e2e.conftest import Server, ServerFactory, open_stream
from tests.e2e.monitoring import (
    ALERT_RULES,
    ALERT_TESTS,
    PROMETHEUS,
    SCRAPE_CONFIG,
    Prometheus,
    docs_config,
    promtool,
    replace_once,
    require,
)
from tests.sse import Stream

# The first test runs on both databases: it reads the PostgreSQL listener's series
# (alarms_listener_up), which only PostgresBroker has. The others are marked
# one_database: a refused scrape, the rules' evaluation and promtool's checks do not
# depend on the database.
pytestmark = [pytest.mark.monitoring, pytest.mark.one_django]

TOKEN = "prom-t0ken"
CAP = 3  # MAX_STREAMS of the first server, so that it can be filled
WRONG_JOB = "alarms-wrong-token"


@pytest.fixture(scope="module")
def servers(django_db_setup: None, django_db_blocker: Any) -> Iterator[tuple[Server, Server]]:
    """Two daphne processes on the test database, for the whole module."""
    require(PROMETHEUS)
    factory = ServerFactory()
    try:
        with django_db_blocker.unblock():
            pair = factory(METRICS_TOKEN=TOKEN, MAX_STREAMS=CAP), factory(METRICS_TOKEN=TOKEN)
        yield pair
    finally:
        with django_db_blocker.unblock():
            factory.stop_all()


@pytest.fixture(scope="module")
def prometheus(
    servers: tuple[Server, Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping both servers every second, as docs/prometheus.yml says."""
    directory = tmp_path_factory.mktemp("prometheus")
    token, wrong = directory / "token", directory / "wrong-token"
    token.write_text(TOKEN)
    wrong.write_text(TOKEN + "x")
    config = docs_config([instance(server) for server in servers], token)
    # The same job once more, for the first server, bearing a wrong token.
    other = docs_config([instance(servers[0])], wrong)
    job = other[other.index("  - job_name: alarms\n") :]
    config += job.replace("job_name: alarms\n", f"job_name: {WRONG_JOB}\n", 1)
    server = Prometheus(directory / "run", config, files=[ALERT_RULES]).start()
    try:
        yield server
    finally:
        server.stop()


def instance(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


def open_streams(server: Server, count: int) -> list[Stream]:
    streams = []
    try:
        for _ in range(count):
            streams.append(open_stream(server))
            streams[-1].opened()
    except BaseException:
        close(streams)
        raise
    return streams


def close(streams: list[Stream]) -> None:
    for stream in streams:
        stream.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)  # the servers' database
def test_prometheus_reads_each_process_for_itself(
    servers: tuple[Server, Server], prometheus: Prometheus
) -> None:
    a, b = map(instance, servers)
    both = {a: 1.0, b: 1.0}
    prometheus.wait_for_query('up{job="alarms"}', both)
    # Fresh processes, no stream yet: the scrape started each broker.
    prometheus.wait_for_query('alarms_broker_running{job="alarms"}', both)
    if connection.vendor == "postgresql":
        prometheus.wait_for_query('alarms_listener_up{job="alarms"}', both)
    else:
        assert prometheus.query("alarms_listener_up") == []  # MemoryBroker: none
    assert prometheus.by_instance('alarms_streams_max{job="alarms"}') == {a: CAP, b: 20000}

    streams = open_streams(servers[0], 3) + open_streams(servers[1], 2)
    try:
        prometheus.wait_for_query('alarms_streams_open{job="alarms"}', {a: 3, b: 2})
        connects = prometheus.by_instance('alarms_connects_total{job="alarms"}')
        assert connects[a] >= 3 and connects[b] >= 2
    finally:
        close(streams)
    prometheus.wait_for_query('alarms_streams_open{job="alarms"}', {a: 0, b: 0})


@pytest.mark.e2e
@pytest.mark.one_database
@pytest.mark.django_db(transaction=True)  # the servers' database
def test_a_wrong_token_is_a_failed_scrape(
    servers: tuple[Server, Server], prometheus: Prometheus
) -> None:
    a = instance(servers[0])
    prometheus.wait_for_query(f'up{{job="{WRONG_JOB}"}}', {a: 0})
    prometheus.wait_for_query('up{job="alarms"}', lambda up: up.get(a) == 1)

    def refused() -> dict[str, Any] | None:
        for target in prometheus.targets():
            if target["labels"]["job"] == WRONG_JOB and "403" in target["lastError"]:
                return target
        return None

    target = prometheus.wait_for(refused, 30, "the wrong token's scrape refused with 403")
    assert target["health"] == "down"
    assert target["labels"]["instance"] == a


@pytest.mark.e2e
@pytest.mark.one_database
@pytest.mark.django_db(transaction=True)  # the servers' database
def test_the_alert_rules_run_on_the_real_series(
    servers: tuple[Server, Server], prometheus: Prometheus
) -> None:
    a = instance(servers[0])

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["health"] != "unknown" for rule in rules):
            return rules
        return None

    rules = prometheus.wait_for(evaluated, 30, "every rule evaluated")
    assert {rule["health"] for rule in rules} == {"ok"}, rules
    assert len(rules) == ALERT_RULES.read_text().count("- alert: ")

    # The first server full: its streams near the cap, its alert pending (for 5m).
    near = 'ALERTS{alertname="AlarmsStreamsNearCap", alertstate="pending"}'
    streams = open_streams(servers[0], CAP)
    try:
        prometheus.wait_for_query(near, {a: 1})
    finally:
        close(streams)
    prometheus.wait_for_query(near, {})


@pytest.mark.one_database
def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", ALERT_RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.one_database
def test_promtool_unit_tests_the_alert_rules() -> None:
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.one_database
def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    # As shipped but for its token file, which must exist (promtool opens it).
    token = tmp_path / "token"
    token.write_text(TOKEN)
    line = "      credentials_file: /etc/prometheus/alarms-metrics-token\n"
    config = replace_once(
        SCRAPE_CONFIG.read_text(), line, f"      credentials_file: {token}\n", SCRAPE_CONFIG
    )
    (tmp_path / SCRAPE_CONFIG.name).write_text(config)
    (tmp_path / ALERT_RULES.name).write_text(ALERT_RULES.read_text())
    result = promtool("check", "config", tmp_path / SCRAPE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

"""Fault tests against real processes: nothing lost, nothing left behind.

* PostgreSQL restarts under 100 open streams while alarms keep being written:
  every committed alarm reaches every client exactly once.
* 100,000 connect/disconnect cycles: the server's memory, threads, streams and
  database connections come back to where they were.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections

from alarms import api
from alarms.models import Alarm
from tests.e2e.conftest import Server
from tests.sse import EventSource

TOKEN = "fault-t0ken"


def en(title: str) -> dict[str, dict[str, str]]:
    return {"en": {"title": title, "message": "Body"}}


def metrics(server: Server) -> dict[str, float]:
    request = urllib.request.Request(
        f"{server.url}/alarms/metrics/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


# ---------------------------------------------------------------------------
# PostgreSQL restarted under 100 open streams
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The PostgreSQL cluster the tests run on, as scripts/lib.sh's pg_start exports it."""

    data: str
    pg_ctl: str
    user: str
    log: str

    @classmethod
    def from_environment(cls) -> Cluster:
        names = ("ALARMS_TEST_PG_DATA", "ALARMS_TEST_PG_CTL", "ALARMS_TEST_PG_USER")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            reason = (
                f"restarting PostgreSQL needs {', '.join(missing)}, which scripts/test and "
                "scripts/postgres export for the cluster they start; a PostgreSQL given "
                "from outside is not restarted"
            )
            if is_ci():
                # CI always starts its own cluster through scripts/test.
                pytest.fail(f"under CI the cluster must be restartable: {reason}")
            pytest.skip(reason)
        data = os.environ["ALARMS_TEST_PG_DATA"]
        log = os.environ.get("ALARMS_TEST_PG_LOG") or str(Path(data).parent / "server.log")
        cluster = cls(
            data, os.environ["ALARMS_TEST_PG_CTL"], os.environ["ALARMS_TEST_PG_USER"], log
        )
        cluster.check_it_is_ours()
        return cluster

    def check_it_is_ours(self) -> None:
        # Variables left over from another cluster would restart the wrong one.
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            (served,) = cursor.fetchone()
        assert os.path.realpath(served) == os.path.realpath(self.data), (
            f"ALARMS_TEST_PG_DATA is {self.data}, but the test database is served from {served}"
        )

    def restart(self) -> None:
        # -l again: without it the restarted server would write into our pipes.
        command = [self.pg_ctl, "restart", "-D", self.data, "-m", "fast", "-w", "-t", "60"]
        command += ["-l", self.log]
        if pwd.getpwuid(os.getuid()).pw_name != self.user:
            # As root: the cluster belongs to an ordinary user (initdb refuses root).
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"pg_ctl restart failed: {result.stdout}{result.stderr}"


class Writer(threading.Thread):
    """Writes an alarm every ``interval`` seconds on its own connection, retrying
    through the outage. The database, read afterwards, says which ones committed:
    a commit whose answer was lost is neither known good nor known bad here."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="alarm-writer", daemon=True)
        self.interval = interval
        self.acknowledged: list[int] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        n = 0
        try:
            while not self.done.is_set():
                n += 1
                try:
                    alarm = api.send_alarm(en(f"Written {n}"), audience="everyone")
                except DatabaseError as exc:
                    self.errors.append(f"{n}: {exc}".strip())
                    with contextlib.suppress(DatabaseError):
                        connection.close()  # this thread's own; a fresh one next time
                else:
                    self.acknowledged.append(alarm.pk)
                self.done.wait(self.interval)
        finally:
            with contextlib.suppress(DatabaseError):
                connection.close()


STREAMS = 100
RETRY_MS = 300


class DeliveredTwice(AssertionError):
    """Every client got every alarm, but some more than once."""


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.xfail(
    raises=DeliveredTwice,  # a lost alarm, or anything else, still fails
    strict=True,
    reason="a stream resuming with Last-Event-ID gets alarms twice when the broker fans "
    "them out while the stream's journal read (read_missed) is awaited: they are queued "
    "and replayed both (fix pending in alarms/broker/base.py)",
)
def test_postgres_restart_under_100_streams_loses_nothing(
    server_factory: Callable[..., Server],
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], tuple[str, str]],
    settings: Any,
) -> None:
    cluster = Cluster.from_environment()
    # Storm control would (rightly) hold back a writer this busy.
    settings.ALARMS = {**settings.ALARMS, "STORM_LIMIT": None}
    server = server_factory(
        METRICS_TOKEN=TOKEN,
        RETRY_MS=RETRY_MS,
        # Short lives: streams end and resume with Last-Event-ID throughout,
        # the outage included.
        MAX_LIFETIME=1.5,
        MAX_STREAMS_PER_ADDRESS=None,
        STORM_LIMIT=None,
    )
    url = f"{server.url}/alarms/stream/"
    languages = ["en", "ko", "ja", "ar"]
    clients = []
    for i in range(STREAMS):
        headers = {"Accept-Language": languages[i % len(languages)]}
        if i % 2:
            clients.append(EventSource(url, headers=headers))
        else:
            cookie = session_cookie(make_user(f"fault{i}"))
            clients.append(EventSource(url, cookies=dict([cookie]), headers=headers))
    threads = [threading.Thread(target=c.run, name=f"sse-{i}") for i, c in enumerate(clients)]
    writer = Writer(interval=0.05)
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: metrics(server)["alarms_streams_open"] == STREAMS, 30, "streams open")

        before = [api.send_alarm(en(f"Before {n}"), audience="everyone").pk for n in range(3)]
        wait_until(
            lambda: all(set(before) <= set(c.alarm_ids()) for c in clients), 30, "before delivered"
        )

        writer.start()
        wait_until(lambda: len(writer.acknowledged) >= 20, 30, "writer started")
        acknowledged_before_restart = len(writer.acknowledged)
        started = time.monotonic()
        cluster.restart()
        restart_s = time.monotonic() - started
        # The restart cut this thread's connection too.
        connections.close_all()
        wait_until(
            lambda: len(writer.acknowledged) >= acknowledged_before_restart + 40,
            60,
            "writer resumed",
        )
        writer.done.set()
        writer.join(30)
        assert not writer.is_alive()

        after = [api.send_alarm(en(f"After {n}"), audience="everyone").pk for n in range(3)]
        committed = set(Alarm.objects.values_list("pk", flat=True))
        assert set(before) | set(writer.acknowledged) | set(after) <= committed

        def everyone_has_everything() -> bool:
            return all(committed <= set(c.alarm_ids()) for c in clients)

        with contextlib.suppress(AssertionError):
            wait_until(everyone_has_everything, 60, "delivery")
    finally:
        writer.done.set()
        for client in clients:
            client.stop()
        for thread in threads:
            thread.join(10)
        connections.close_all()

    failed = [f for c in clients for f in c.failures]
    print(
        f"\nrestart {restart_s:.1f} s; {len(committed)} alarms committed, "
        f"{len(writer.errors)} writes failed; {sum(c.connects for c in clients)} connects, "
        f"{len(failed)} refused or failed: {Counter(failed).most_common(3)}"
    )
    # The fault really happened mid-stream: the writer saw it, streams resumed.
    assert writer.errors, "the writer never saw the database go away"
    assert sum(c.connects for c in clients) > STREAMS, "no stream ever resumed"
    assert all(c.retry_ms == RETRY_MS for c in clients)
    lost, twice = {}, {}
    for i, client in enumerate(clients):
        got = Counter(client.alarm_ids())
        missing, unknown = sorted(committed - set(got)), sorted(set(got) - committed)
        if missing or unknown:
            lost[i] = {"missing": missing, "unknown": unknown, "resumed from": client.resumed_from}
        # With the event ids they came under: which path sent the second copy.
        copies = {
            a: [e.id for e in client.events if e.event == "alarm" and e.json()["id"] == a]
            for a, n in sorted(got.items())
            if n > 1
        }
        if copies:
            twice[i] = {"copies": copies, "resumed from": client.resumed_from}
    assert not lost, (
        f"{len(lost)} of {STREAMS} clients missed some of the {len(committed)} committed "
        f"alarms (or got others): {dict(list(lost.items())[:5])}"
    )
    if twice:
        raise DeliveredTwice(
            f"{len(twice)} of {STREAMS} clients got some of the {len(committed)} committed "
            f"alarms more than once: {dict(list(twice.items())[:5])}"
        )

"""Real Alertmanager posting to a real daphne, with docs/alertmanager.yml: alerts become toasts.

Each test runs its own Alertmanager (Debian's; it starts in a tenth of a second)
and its own daphne process, so that no alert of one test fires into another's
database. Alerts are posted to Alertmanager's own API, as Prometheus posts them;
what reaches the reader is read off a real stream. The timings of
docs/alertmanager.yml are shortened (group_wait 0 s, group_interval 1 s), so
that resolutions and resends come within a second or two.

``bench/alertmanager.py`` runs :func:`test_each_alert_reaches_the_stream` with
``ALARMS_ALERTMANAGER_TRIES=20``: the time from the alert posted to Alertmanager
to its alarm on the stream, p50 and max.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from alarms import tokens
from alarms.models import Alarm, AlarmToken, TokenScope
from tests.e2e.alertmanager import (
    ALERTMANAGER,
    AMTOOL,
    CONFIG,
    Alertmanager,
    docs_config,
    posted_alert,
    rfc3339,
)
from tests.e2e.conftest import Server, ServerFactory, before_marker, open_stream
from tests.e2e.monitoring import require
from tests.helpers import wait_for
from tests.sse import Event, Stream

# one_database: these check what Alertmanager posts and resends (grouping, repeats,
# its handling of a 429); what the webhook writes on each database (the upsert by
# external id, the storm limit's lock) is tested in tests/test_alertmanager.py and
# tests/test_storm.py, which run on both.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.monitoring,
    pytest.mark.one_django,
    pytest.mark.one_database,
]

TRIES = int(os.environ.get("ALARMS_ALERTMANAGER_TRIES", "3"))
BOTH = (TokenScope.PUBLISH, TokenScope.WITHDRAW)
KOREAN = {
    "summary": "Disk almost full",
    "description": "db1: 3% of /var left.",
    "summary_ko": "디스크가 거의 찼습니다",
    "description_ko": "db1: /var 의 3% 가 남았습니다.",
    "runbook_url": "https://runbooks.example.org/disk-full",
}


@dataclass
class Hook:
    """A daphne process and the token Alertmanager will use against it."""

    server: Server
    token: AlarmToken
    secret: str
    dir: Path
    started: list[Alertmanager] = field(default_factory=list)

    def alertmanager(self, **timings: str) -> Alertmanager:
        """An Alertmanager on docs/alertmanager.yml, posting to this server."""
        token_file = self.dir / "alarms-token"
        token_file.write_text(self.secret)
        config = docs_config(self.server.url, token_file, **timings)
        manager = Alertmanager(self.dir / f"am-{len(self.started)}", config)
        self.started.append(manager)
        return manager.start()


@pytest.fixture
def hook(server_factory: ServerFactory, tmp_path: Path) -> Iterator[Hook]:
    require(ALERTMANAGER)
    server = server_factory(STORM_LIMIT=None)
    token, secret = tokens.create_token("alertmanager", scopes=BOTH)
    made = Hook(server, token, secret, tmp_path)
    try:
        yield made
    finally:
        for manager in made.started:
            manager.stop()


def alarm_events(stream: Stream, count: int, timeout: float = 30.0) -> list[Event]:
    events = stream.events(count, timeout)
    assert [e.event for e in events] == ["alarm"] * count, events
    return events


def now() -> datetime:
    return datetime.now(UTC)


def test_the_shipped_configuration_is_valid() -> None:
    result = subprocess.run(
        [str(require(AMTOOL)), "check-config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_an_alert_reaches_a_reader_in_their_language_and_resolving_it_retracts_it(
    hook: Hook, make_user: Callable[..., Any], session_cookie: Callable[[Any], tuple[str, str]]
) -> None:
    manager = hook.alertmanager()
    reader = make_user("min-ji")
    with open_stream(hook.server, session_cookie(reader), **{"Accept-Language": "ko"}) as stream:
        stream.opened()
        started = now()
        manager.post([posted_alert("DiskFull", starts=started, annotations=KOREAN)])
        [event] = alarm_events(stream, 1)
        data = event.json()
        assert data["language"] == "ko"
        assert (data["title"], data["message"]) == (KOREAN["summary_ko"], KOREAN["description_ko"])
        assert data["level"] == "critical"
        assert data["url"] == KOREAN["runbook_url"]
        alarm = Alarm.objects.get(pk=data["id"])
        assert alarm.created_by_token == hook.token
        assert alarm.translations.get(language_code="en").title == KOREAN["summary"]

        # Resolved: the same alert (and start) with an end in the past.
        manager.post([posted_alert("DiskFull", starts=started, ends=now(), annotations=KOREAN)])
        retract = stream.next_event(30)
        assert (retract.event, retract.json()) == ("retract", {"id": data["id"]})

        # Firing again later is another incident: a new alarm, the old one stays down.
        manager.post([posted_alert("DiskFull", starts=now(), annotations=KOREAN)])
        [again] = alarm_events(stream, 1)
        assert again.json()["id"] != data["id"]
        assert again.json()["title"] == KOREAN["summary_ko"]
        assert before_marker(stream) == [[]]
    assert Alarm.objects.get(pk=data["id"]).status == "withdrawn"


def test_a_group_of_three_is_three_alarms_and_its_repeats_add_none(
    hook: Hook, make_user: Callable[..., Any], session_cookie: Callable[[Any], tuple[str, str]]
) -> None:
    # group_wait: time for the three alerts of one post to make one notification.
    manager = hook.alertmanager(group_wait="500ms", repeat_interval="1s")
    started = now()
    alerts = [
        posted_alert(
            "NodeDown",
            starts=started,
            labels={"instance": name, "severity": "warning"},
            annotations={"summary": f"{name} is down"},
        )
        for name in ("web1", "web2", "web3")
    ]
    with open_stream(hook.server, session_cookie(make_user("ops"))) as stream:
        stream.opened()
        manager.post(alerts)
        events = alarm_events(stream, 3)
        assert sorted(e.json()["title"] for e in events) == [
            "web1 is down",
            "web2 is down",
            "web3 is down",
        ]
        assert {e.json()["level"] for e in events} == {"warning"}
        # A notification carried all three: the first, unless a loaded machine
        # let the group flush between them, else the next.
        wait_for(
            lambda: 'group {}:{alertname="NodeDown"}: 3 alerts: {' in hook.server.output(),
            what="the group's notification in the server's log",
        )

        # Alertmanager repeats the group every second: a repeat comes, and nothing with it.
        wait_for(
            lambda: "\"NodeDown\"}: 3 alerts: {'unchanged': 3}" in hook.server.output(),
            what="a repeated notification",
        )
        assert before_marker(stream) == [[]]
        assert manager.notifications()[1] == 0

        # Two resolved: two retracts, the third stays.
        ended = now()
        manager.post(
            [{**alerts[0], "endsAt": rfc3339(ended)}, {**alerts[1], "endsAt": rfc3339(ended)}]
        )
        retracts = stream.events(2, 30)
        assert {(e.event, e.json()["id"]) for e in retracts} == {
            ("retract", events_id(events, "web1 is down")),
            ("retract", events_id(events, "web2 is down")),
        }
        assert before_marker(stream) == [[]]
    assert Alarm.objects.filter(external_id__startswith="alertmanager:").count() == 3


def test_a_group_beyond_the_storm_limit_arrives_whole_once_the_limit_allows(
    hook: Hook, make_user: Callable[..., Any], session_cookie: Callable[[Any], tuple[str, str]]
) -> None:
    """What docs/alertmanager.md says of a 429: Alertmanager 0.25 does not retry
    it (nor read Retry-After), and sends the whole group again at its next
    group_interval; the alerts already written are then no-ops."""
    hook.token.storm_limit = 2
    hook.token.save()
    manager = hook.alertmanager(group_wait="500ms", repeat_interval="1h")
    started = now()
    alerts = [posted_alert("Flood", starts=started, labels={"instance": f"n{i}"}) for i in range(3)]
    with open_stream(hook.server, session_cookie(make_user("ops"))) as stream:
        stream.opened()
        manager.post(alerts)
        first = alarm_events(stream, 2)
        # Refused twice: once, and again a group_interval later, one attempt each.
        manager.wait_for(lambda: manager.notifications()[1] >= 2, 30, "two failed notifications")
        refusals = [line for line in manager.output().splitlines() if "status code 429" in line]
        assert len(refusals) >= 2
        assert all("unrecoverable error after 1 attempts" in line for line in refusals)
        assert before_marker(stream) == [[]]  # the third is held back

        hook.token.storm_limit = 3
        hook.token.save()
        [third] = alarm_events(stream, 1)
        assert third.json()["id"] not in {e.json()["id"] for e in first}
        assert before_marker(stream) == [[]]  # the first two not again
    wait_for(
        lambda: "3 alerts: {'unchanged': 2, 'published': 1}" in hook.server.output(),
        what="the whole group sent again",
    )
    assert Alarm.objects.filter(external_id__startswith="alertmanager:").count() == 3


def test_each_alert_reaches_the_stream(
    hook: Hook, make_user: Callable[..., Any], session_cookie: Callable[[Any], tuple[str, str]]
) -> None:
    """One alert after another, each its own group: the time from the post to
    Alertmanager to the alarm on the stream. Printed, not asserted."""
    manager = hook.alertmanager(group_wait="0s", repeat_interval="1h")
    times: list[float] = []
    with open_stream(hook.server, session_cookie(make_user("reader"))) as stream:
        stream.opened()
        for i in range(TRIES):
            alert = posted_alert(f"Latency{i}", starts=now(), annotations={"summary": f"#{i}"})
            posted = time.monotonic()
            manager.post([alert])
            [event] = alarm_events(stream, 1)
            times.append(time.monotonic() - posted)
            assert event.json()["title"] == f"#{i}"
    p50, worst = statistics.median(times) * 1000, max(times) * 1000
    print(
        f"\nAlertmanager to stream, {TRIES} alerts one after another, on {connection.vendor}\n"
        f"{'':32}{'p50':>8}{'max':>8}\n"
        f"{'alert posted -> alarm event':32}{p50:>5.0f} ms{worst:>5.0f} ms"
    )


def events_id(events: list[Event], title: str) -> int:
    [found] = [e.json()["id"] for e in events if e.json()["title"] == title]
    return int(found)

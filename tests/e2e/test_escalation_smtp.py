"""Escalation end to end: real ``manage.py escalate_alarms`` processes racing over one
database, a real SMTP server on loopback (aiosmtpd), a real daphne for the link.

The SMTP server holds one message unanswered, the test kills the process that
sent it (SIGKILL, mid-pass, mid-SMTP) and starts another: every email still
arrives exactly once. The held message was never accepted (the server answers
451 once its sender is dead), so its claim is taken over after the lease.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth.models import User
from django.urls import reverse

from alarms import api
from alarms.escalation import make_token
from alarms.models import AlarmEscalation, AlarmReceipt, Preferences
from tests.e2e.conftest import (
    ARTIFACTS,
    ROOT,
    Server,
    ServerFactory,
    database_url,
    end_database_sessions,
    free_port,
    open_stream,
    stop_process,
)
from tests.factories import ago, make_alarm, make_user
from tests.helpers import en

pytestmark = [pytest.mark.e2e, pytest.mark.one_django]

LANGUAGES = ("en", "ko", "ja", "ar")
MESSAGE_ID = re.compile(r"<alarm-(\d+)\.user-(\d+)\.escalation@")
# Seconds a claim is held before another process may send it; EMAIL_TIMEOUT below it.
LEASE = 5
HOLD_AT = 5  # the SMTP server holds the 5th message


class Mailbox:
    """An aiosmtpd handler: the messages it accepted, and one it holds unanswered."""

    def __init__(self, hold_at: int) -> None:
        self.accepted: list[EmailMessage] = []
        self.changed = threading.Condition()
        self.hold_at = hold_at
        self.received = 0
        self.held: EmailMessage | None = None
        self.holding = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.changed:
            self.received += 1
            number = self.received
        if number == self.hold_at:
            self.held = message
            self._loop, self._release = asyncio.get_running_loop(), asyncio.Event()
            self.holding.set()
            await self._release.wait()  # its sender is killed meanwhile
            return "451 4.3.0 Try again later"
        with self.changed:
            self.accepted.append(message)
            self.changed.notify_all()
        return "250 OK"

    def release(self) -> None:
        """Answer the held message (from the test's thread)."""
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def keys(self) -> list[tuple[int, int]]:
        with self.changed:
            return [key(m) for m in self.accepted]

    def wait_for(self, expected: set[tuple[int, int]], timeout: float) -> None:
        with self.changed:
            done = self.changed.wait_for(
                lambda: {key(m) for m in self.accepted} >= expected, timeout
            )
        assert done, f"{len(self.keys())} of {len(expected)} emails arrived"


def key(message: EmailMessage) -> tuple[int, int]:
    """(alarm id, user id) of an escalation email, from its Message-ID."""
    found = MESSAGE_ID.match(str(message["Message-ID"]))
    assert found, message["Message-ID"]
    return int(found[1]), int(found[2])


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox(HOLD_AT)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        mailbox.release()
        controller.stop()


class Escalators:
    """``manage.py escalate_alarms --loop`` processes on the test database."""

    def __init__(self, server: Server, smtp_port: int) -> None:
        self.server = server
        self.smtp_port = smtp_port
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        application_name = f"alarms-escalate-{name}-{self.server.port}"
        env = {
            **self.server.env(),
            "DATABASE_URL": database_url(application_name),
            "EMAIL_URL": f"smtp://127.0.0.1:{self.smtp_port}",
            "EMAIL_TIMEOUT": str(LEASE - 1),
        }
        self.logs[name] = ARTIFACTS / f"escalate-{name}-{self.server.port}.log"
        with self.logs[name].open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "escalate_alarms",
                    "--loop",
                    "0.2",
                    "-v",
                    "2",
                    "--skip-checks",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[name] = process
        return process

    def wait_started(self, name: str, timeout: float = 60) -> None:
        """Until the process has run a pass (it prints one at -v 2): its SIGTERM
        handler is in place."""
        deadline = time.monotonic() + timeout
        while "escalation email" not in self.logs[name].read_text():
            assert self.running[name].poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        stop_process(self.running.pop(name), signal.SIGKILL)
        end_database_sessions(f"alarms-escalate-{name}-{self.server.port}")

    def stop_all(self) -> dict[str, int]:
        """SIGTERM each, as systemd stops a service: their exit codes."""
        codes = {}
        for name, process in list(self.running.items()):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                # Stuck: its stack goes to its log (faulthandler), then it is killed.
                process.send_signal(signal.SIGUSR1)
                stop_process(process, signal.SIGKILL)
            codes[name] = process.returncode
            end_database_sessions(f"alarms-escalate-{name}-{self.server.port}")
        self.running.clear()
        return codes

    def output(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in self.logs.items())


def readers(count: int) -> list[User]:
    users = []
    for i in range(count):
        language = LANGUAGES[i % len(LANGUAGES)]
        user = make_user(f"reader{i}", email=f"reader{i}@example.com")
        Preferences.objects.create(user=user, language=language, time_zone="Asia/Tokyo")
        users.append(user)
    make_user("no-address")
    make_user("inactive", email="inactive@example.com", is_active=False)
    return users


def test_two_processes_and_a_restart_send_each_email_exactly_once(
    server_factory: ServerFactory, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, smtp_port = smtp
    port = free_port()
    escalate = {"AFTER": 1, "BASE_URL": f"http://127.0.0.1:{port}", "LEASE": LEASE}
    server = Server({"ESCALATE": escalate}, port=port)
    server_factory.started.append(server)
    server.start()
    users = readers(12)
    alarms = [
        make_alarm(LANGUAGES, level="critical", audience="authenticated", publish_at=ago(minutes=5))
        for _ in range(2)
    ]
    expected = {(a.pk, u.pk) for a in alarms for u in users}
    escalators = Escalators(server, smtp_port)
    try:
        first, second = escalators.start("a"), escalators.start("b")

        assert mailbox.holding.wait(60), escalators.output()
        assert mailbox.held is not None
        alarm_id, user_id = key(mailbox.held)
        holder = AlarmEscalation.objects.get(alarm_id=alarm_id, user_id=user_id).claimed_by
        pid = int(holder.split(":")[1])
        victim = {first.pid: "a", second.pid: "b"}[pid]
        escalators.kill(victim)  # mid-pass, inside the SMTP exchange
        mailbox.release()
        escalators.start(f"{victim}-again")

        mailbox.wait_for(expected, timeout=90)
        escalators.wait_started(f"{victim}-again")
        codes = escalators.stop_all()
    finally:
        escalators.stop_all()
        print(escalators.output())

    assert set(codes.values()) == {0}, codes
    counts = Counter(mailbox.keys())
    assert set(counts) == expected
    assert set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1]
    rows = AlarmEscalation.objects.all()
    assert {(r.alarm_id, r.user_id) for r in rows if r.sent_at is not None} == expected
    # The held email was taken over from the dead process, by another.
    taken_over = rows.get(alarm_id=alarm_id, user_id=user_id)
    # Two processes took part: the held email's sender died and another took it
    # over. Which of them sent the others is timing's choice, so nothing more is
    # asserted of the claimers (one process may send every other email).
    assert taken_over.attempts >= 2 and taken_over.claimed_by != holder

    # The reader's language, and the link clicked with a real HTTP client.
    korean = next(
        m
        for m in mailbox.accepted
        if m["To"] == "reader1@example.com" and key(m)[0] == alarms[0].pk
    )
    assert korean["Subject"] == "[긴급] 서버 재시작"
    text = korean.get_body(("plain",))
    assert text is not None
    [url] = re.findall(r"http://127\.0\.0\.1:\d+/alarms/email/[^\s/]+/", text.get_content())

    with urllib.request.urlopen(url, timeout=10) as page:
        html = page.read().decode()
    assert 'data-state="ask"' in html and "서버 재시작" in html
    assert not AlarmReceipt.objects.filter(user=users[1]).exists()

    body = urllib.parse.urlencode({"action": "seen"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as page:
        assert page.status == 200
        assert 'data-state="seen"' in page.read().decode()
    receipt = AlarmReceipt.objects.get(user=users[1], alarm=alarms[0])
    assert receipt.seen_at is not None
    assert receipt.language == "ko"


def test_dismissing_from_the_emailed_link_closes_the_toast_on_open_pages(
    server: Server, make_user: Any, session_cookie: Any
) -> None:
    """The link's "dismiss" goes through alarms.api, whose journal row reaches the
    reader's open stream; the click itself comes from a browser not signed in."""
    ann = make_user("ann", email="ann@example.com")
    alarm = api.send_alarm(en("Disk full"), level="critical")
    url = f"{server.url}{reverse('alarms:email_seen', args=[make_token(ann.pk, alarm.pk)])}"
    with open_stream(server, session_cookie(ann)) as stream:
        event = stream.next_event(15)
        assert (event.event, event.json()["id"]) == ("alarm", alarm.pk)

        body = urllib.parse.urlencode({"action": "dismiss"}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as page:
            assert 'data-state="dismissed"' in page.read().decode()

        event = stream.next_event(15)
        assert (event.event, event.json()) == ("dismiss", {"id": alarm.pk})
    assert AlarmReceipt.objects.get(user=ann, alarm=alarm).dismissed_at is not None

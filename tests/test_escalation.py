"""Escalation by email (``alarms.escalation``), through Django's locmem mail backend.

The end-to-end test against a real SMTP server, with processes racing, is
tests/e2e/test_escalation_smtp.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import django
import pytest
from django.contrib.auth.models import Group, User
from django.core import mail, signing
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse

from alarms import rules
from alarms.checks import check_settings
from alarms.escalation import (
    MAX_ATTEMPTS,
    SALT,
    SMTP_BACKEND,
    Escalator,
    mail_connection,
    make_token,
    read_token,
)
from alarms.models import Alarm, AlarmChange, AlarmEscalation, AlarmReceipt, Preferences
from alarms.querysets import audience_users
from alarms.signals import alarm_escalated
from tests.factories import ago, ahead, make_alarm, make_user

BASE_URL = "https://alarms.example.com"
ESCALATE = {"AFTER": 10, "BASE_URL": BASE_URL, "LEASE": 60}
SETTINGS = {"POLL_INTERVAL": 0.2, "SHUTDOWN_GRACE": 0, "ESCALATE": ESCALATE}


def escalate(**changes: Any) -> Any:
    return override_settings(ALARMS={**SETTINGS, "ESCALATE": {**ESCALATE, **changes}})


@pytest.fixture(autouse=True)
def _escalation_on(db: None) -> Iterator[None]:
    with escalate():
        yield


def smtp(**options: Any) -> Any:
    """The default mailer as SMTP with these options (host, port, timeout): MAILERS
    on Django 6.1, the EMAIL_* settings before."""
    if django.VERSION >= (6, 1):
        return override_settings(MAILERS={"default": {"BACKEND": SMTP_BACKEND, "OPTIONS": options}})
    email = {f"EMAIL_{key.upper()}": value for key, value in options.items()}
    return override_settings(EMAIL_BACKEND=SMTP_BACKEND, **email)


def critical(**fields: Any) -> Alarm:
    fields.setdefault("publish_at", ago(minutes=11))
    fields.setdefault("audience", "authenticated")
    return make_alarm(("en", "ko", "ja", "ar"), level="critical", **fields)


def reader(name: str, **fields: Any) -> User:
    fields.setdefault("email", f"{name}@example.com")
    return make_user(name, **fields)


def run(**changes: Any) -> list[mail.EmailMessage]:
    """One pass; the emails it sent."""
    before = len(mail.outbox)
    with escalate(**changes):
        Escalator().run_once()
    return mail.outbox[before:]


def recipients_of(messages: list[mail.EmailMessage]) -> list[str]:
    return sorted(address for m in messages for address in m.to)


def html_of(message: Any) -> str:
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return str(html)


# -- who ----------------------------------------------------------------------


def test_every_signed_in_user_with_an_address_gets_one() -> None:
    reader("ann")
    reader("bob")
    critical()

    assert recipients_of(run()) == ["ann@example.com", "bob@example.com"]


def test_everyone_means_user_accounts() -> None:
    reader("ann")
    critical(audience="everyone")

    assert recipients_of(run()) == ["ann@example.com"]


def test_staff_alarms_reach_staff_only() -> None:
    reader("ann")
    reader("boss", is_staff=True)
    critical(audience="staff")

    assert recipients_of(run()) == ["boss@example.com"]


def test_selected_users_and_groups() -> None:
    ops = Group.objects.create(name="ops")
    db_team = Group.objects.create(name="db")
    reader("ann")
    bob = reader("bob")
    reader("cat", groups=[ops, db_team])  # in both groups: one email
    reader("dan", is_staff=True)  # staff see no one else's selected alarm
    critical(audience="selected", users=[bob], groups=[ops, db_team])

    messages = run()

    assert recipients_of(messages) == ["bob@example.com", "cat@example.com"]


def test_audience_sql_agrees_with_rules_can_see() -> None:
    ops = Group.objects.create(name="ops")
    users = [
        reader("plain"),
        reader("staff", is_staff=True),
        reader("member", groups=[ops]),
        reader("named"),
    ]
    for audience in (*rules.AUDIENCES, "unknown"):
        alarm = critical(audience=audience, users=[users[3]], groups=[ops])
        found = set(audience_users(alarm).values_list("pk", flat=True))
        expected = {
            u.pk
            for u in users
            if rules.can_see(
                audience,
                {users[3].pk},
                {ops.pk},
                user_id=u.pk,
                is_staff=u.is_staff,
                viewer_group_ids={g.pk for g in u.groups.all()},
            )
        }
        assert found == expected, audience


def test_never_to_inactive_users_or_users_without_an_address() -> None:
    reader("ann")
    reader("gone", is_active=False)
    reader("mute", email="")
    critical()

    assert recipients_of(run()) == ["ann@example.com"]
    # Not even claimed (Django itself would drop an empty address silently).
    assert list(AlarmEscalation.objects.values_list("user__username", flat=True)) == ["ann"]


@pytest.mark.parametrize("field", ["seen_at", "dismissed_at"])
def test_not_to_users_who_saw_or_dismissed_it(field: str) -> None:
    ann = reader("ann")
    reader("bob")
    alarm = critical()
    AlarmReceipt.objects.create(user=ann, alarm=alarm, **{field: ago(minutes=1)})

    assert recipients_of(run()) == ["bob@example.com"]


def test_a_receipt_without_seen_or_dismissed_does_not_count() -> None:
    ann = reader("ann")
    alarm = critical()
    AlarmReceipt.objects.create(user=ann, alarm=alarm)

    assert recipients_of(run()) == ["ann@example.com"]


def test_muted_levels_are_not_escalated_but_critical_always_is() -> None:
    quiet = reader("quiet")
    Preferences.objects.create(user=quiet, mute_below="critical")
    reader("loud")
    make_alarm(level="error", audience="authenticated", publish_at=ago(minutes=11))
    critical()

    messages = run(LEVELS=["error", "critical"])

    assert sorted((m.to[0], m.subject.split("]")[0]) for m in messages) == [
        ("loud@example.com", "[Critical"),
        ("loud@example.com", "[Error"),
        ("quiet@example.com", "[Critical"),
    ]


def test_only_the_configured_levels() -> None:
    reader("ann")
    make_alarm(level="error", audience="authenticated", publish_at=ago(minutes=11))

    assert run() == []
    assert len(run(LEVELS=["error"])) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"withdrawn_at": ago(minutes=1)},
        {"expires_at": ago(minutes=1)},
        {"publish_at": ahead(minutes=5)},
    ],
    ids=["withdrawn", "expired", "scheduled"],
)
def test_never_an_alarm_that_is_not_live(fields: dict[str, Any]) -> None:
    reader("ann")
    critical(**fields)

    assert run() == []


def test_only_after_the_threshold() -> None:
    reader("ann")
    alarm = critical(publish_at=ago(minutes=9))

    assert run() == []
    Alarm.objects.filter(pk=alarm.pk).update(publish_at=ago(minutes=10, seconds=5))
    assert recipients_of(run()) == ["ann@example.com"]
    # AFTER is the operator's: a longer one holds it back again for a new reader.
    reader("bob")
    assert run(AFTER=30) == []


# -- once ---------------------------------------------------------------------


def test_once_per_alarm_and_user() -> None:
    reader("ann")
    critical()

    assert len(run()) == 1
    assert run() == []
    escalation = AlarmEscalation.objects.get()
    assert escalation.sent_at is not None
    assert escalation.attempts == 1


def test_two_escalators_never_claim_the_same_email() -> None:
    ann = reader("ann")
    alarm = critical()
    first, second = Escalator(), Escalator()

    assert [c.user_id for c in first.claim(alarm, [ann.pk])] == [ann.pk]
    assert second.claim(alarm, [ann.pk]) == []
    # And the second's pass finds nothing to do while the first holds it.
    assert second.run_once().sent == 0
    assert mail.outbox == []


def test_a_claim_whose_sender_died_is_taken_over_after_the_lease() -> None:
    ann = reader("ann")
    alarm = critical()
    AlarmEscalation.objects.create(
        alarm=alarm, user=ann, claimed_by="dead:1:x", claimed_at=ago(seconds=30), attempts=1
    )

    assert run() == []  # within the lease (60 s): its holder may still be sending

    AlarmEscalation.objects.update(claimed_at=ago(seconds=61))
    assert recipients_of(run()) == ["ann@example.com"]
    escalation = AlarmEscalation.objects.get()
    assert escalation.sent_at is not None
    assert escalation.attempts == 2
    assert escalation.claimed_by != "dead:1:x"


def test_a_sender_whose_claim_was_taken_over_does_not_send() -> None:
    ann = reader("ann")
    alarm = critical()
    slow, other = Escalator(), Escalator()
    [claim] = slow.claim(alarm, [ann.pk])
    # The slow one's lease ran out and another process took the email over.
    AlarmEscalation.objects.update(claimed_at=ago(seconds=61))
    [taken] = other.claim(alarm, [ann.pk])

    assert slow.deliver(claim, alarm, mail_connection()) == "lost"
    assert mail.outbox == []
    assert other.deliver(taken, alarm, mail_connection()) == "sent"
    assert len(mail.outbox) == 1


def test_a_sent_email_is_never_taken_over() -> None:
    ann = reader("ann")
    alarm = critical()
    AlarmEscalation.objects.create(
        alarm=alarm, user=ann, claimed_by="dead:1:x", claimed_at=ago(days=1), sent_at=ago(days=1)
    )

    assert run() == []


def test_an_email_is_given_up_after_max_attempts() -> None:
    ann = reader("ann")
    alarm = critical()
    AlarmEscalation.objects.create(
        alarm=alarm, user=ann, claimed_by="x", claimed_at=ago(days=1), attempts=MAX_ATTEMPTS
    )

    assert run() == []


def test_the_batch_bounds_a_pass() -> None:
    for name in ("ann", "bob", "cat"):
        reader(name)
    critical()

    assert len(run(BATCH=2)) == 2
    assert len(run(BATCH=2)) == 1
    assert run(BATCH=2) == []


def test_a_stop_releases_the_claims_not_tried() -> None:
    reader("ann")
    reader("bob")
    critical()

    class StopsAfterOne(Escalator):
        def deliver(self, *args: Any) -> str:
            outcome = super().deliver(*args)
            self.stop.set()  # as SIGTERM would, between two emails
            return outcome

    assert StopsAfterOne().run_once().sent == 1
    assert recipients_of(mail.outbox) == ["ann@example.com"]
    bob = AlarmEscalation.objects.get(user__username="bob")
    assert (bob.claimed_by, bob.sent_at, bob.attempts) == ("", None, 0)
    # Free at once for the next pass, not only after the lease.
    assert recipients_of(run()) == ["bob@example.com"]


def test_seen_between_claim_and_send_is_not_sent() -> None:
    ann = reader("ann")
    alarm = critical()
    escalator = Escalator()
    [claim] = escalator.claim(alarm, [ann.pk])
    AlarmReceipt.objects.create(user=ann, alarm=alarm, seen_at=ago(seconds=1))

    assert escalator.deliver(claim, alarm, mail_connection()) == "dropped"
    assert mail.outbox == []
    assert not AlarmEscalation.objects.exists()


def test_a_mail_server_that_is_down_ends_the_pass_and_releases_the_claims() -> None:
    reader("ann")
    critical()

    # Port 9 (discard): nothing listens there.
    with smtp(host="127.0.0.1", port=9, timeout=10), pytest.raises(OSError):
        Escalator().run_once()
    assert AlarmEscalation.objects.get().claimed_by == ""
    assert AlarmEscalation.objects.get().sent_at is None


def test_the_signal_is_sent_after_the_commit(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    ann = reader("ann")
    alarm = critical()
    got: list[tuple[int, int]] = []

    def receive(sender: Any, alarm: Alarm, user: Any, **kwargs: Any) -> None:
        got.append((alarm.pk, user.pk))

    alarm_escalated.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            Escalator().run_once()
        assert got == []
        for callback in callbacks:
            callback()
    finally:
        alarm_escalated.disconnect(receive)
    assert got == [(alarm.pk, ann.pk)]


# -- the email ----------------------------------------------------------------


def test_the_email_is_in_the_users_language_and_time_zone() -> None:
    ko = reader("ko")
    Preferences.objects.create(user=ko, language="ko", time_zone="Asia/Seoul")
    reader("plain")
    critical(publish_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))

    messages = {m.to[0]: m for m in run()}

    korean = messages["ko@example.com"]
    assert korean.subject == "[긴급] 서버 재시작"
    assert korean.extra_headers["Content-Language"] == "ko"
    assert "서버가 정오에 재시작됩니다." in korean.body
    assert "12:04" in korean.body and "Asia/Seoul" in korean.body  # 03:04 UTC
    assert '<html lang="ko" dir="ltr">' in html_of(korean)
    plain = messages["plain@example.com"]
    assert plain.subject == "[Critical] Server restart"
    assert "3:04" in plain.body and "(UTC)" in plain.body


def test_arabic_is_right_to_left_and_an_unknown_zone_falls_back() -> None:
    user = reader("ar")
    Preferences.objects.create(user=user, language="ar", time_zone="Mars/Olympus")
    critical(publish_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))

    [message] = run()

    assert message.subject == "[حرج] إعادة تشغيل الخادم"
    assert '<html lang="ar" dir="rtl">' in html_of(message)
    assert "(UTC)" in message.body


def test_the_alarm_text_is_escaped_in_the_html_part() -> None:
    reader("ann")
    alarm = critical(title='<script>alert("x")</script>')
    alarm.translations.filter(language_code="en").update(message="a & b <img src=x onerror=y>")

    [message] = run()

    html = html_of(message)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "a &amp; b &lt;img src=x onerror=y&gt;" in html
    # The text part is plain text: the words as written, not entities.
    assert "a & b <img src=x onerror=y>" in message.body
    assert message.subject == '[Critical] <script>alert("x")</script>'


def test_the_email_has_both_parts_the_links_and_a_stable_message_id() -> None:
    ann = reader("ann")
    alarm = critical(url="/status/")

    [message] = run()

    # The token is signed with the time (to the second) it was made: read it back
    # from the email rather than make another, which may be a second later.
    prefix = BASE_URL + reverse("alarms:email_seen", args=["TOKEN"]).split("TOKEN")[0]
    found = re.search(re.escape(prefix) + r"([^/\s]+)/", message.body)
    assert found, message.body
    assert read_token(found.group(1), timedelta(days=1)) == (ann.pk, alarm.pk)
    seen_url = found.group(0)
    assert seen_url in html_of(message)
    assert f"{BASE_URL}/status/" in message.body
    assert f"{BASE_URL}{reverse('alarms:centre')}" in message.body
    parsed = message_from_bytes(message.message().as_bytes())
    assert parsed["Message-ID"] == f"<alarm-{alarm.pk}.user-{ann.pk}.escalation@alarms.example.com>"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert message.from_email == "webmaster@localhost"
    assert run(FROM="alarms@example.com") == []  # sent already


def test_from_address() -> None:
    reader("ann")
    critical()

    [message] = run(FROM="alarms@example.com")

    assert message.from_email == "alarms@example.com"


# -- the link -----------------------------------------------------------------


def link(user: User, alarm: Alarm) -> str:
    return reverse("alarms:email_seen", args=[make_token(user.pk, alarm.pk)])


def test_the_link_asks_on_get_and_records_on_post() -> None:
    ann = reader("ann")
    alarm = critical()
    client = Client()

    page = client.get(link(ann, alarm))

    assert page.status_code == 200
    assert b'name="action" value="seen"' in page.content
    assert b"Server restart" in page.content
    assert page["X-Robots-Tag"] == "noindex"
    assert not AlarmReceipt.objects.exists()  # a link scanner's GET records nothing

    done = client.post(link(ann, alarm), {"action": "seen"})

    assert done.status_code == 200
    assert b'data-state="seen"' in done.content
    receipt = AlarmReceipt.objects.get(user=ann, alarm=alarm)
    assert receipt.seen_at is not None and receipt.dismissed_at is None
    # Seen: no email for it any more.
    assert run() == []


def test_the_link_page_is_in_the_readers_language() -> None:
    ann = reader("ann")
    Preferences.objects.create(user=ann, language="ja")
    alarm = critical()

    page = Client().get(link(ann, alarm))

    assert "サーバー再起動".encode() in page.content
    assert b'<html lang="ja"' in page.content


def test_the_link_can_dismiss_and_the_journal_carries_it() -> None:
    ann = reader("ann")
    alarm = critical()

    done = Client().post(link(ann, alarm), {"action": "dismiss"})

    assert b'data-state="dismissed"' in done.content
    assert AlarmReceipt.objects.get(user=ann, alarm=alarm).dismissed_at is not None
    assert AlarmChange.objects.filter(kind="dismiss", alarm_id=alarm.pk, user_id=ann.pk).exists()


def test_a_post_without_an_action_is_refused() -> None:
    ann = reader("ann")
    alarm = critical()

    assert Client().post(link(ann, alarm), {"action": "delete"}).status_code == 400
    assert not AlarmReceipt.objects.exists()


def test_a_tampered_link_is_refused() -> None:
    ann = reader("ann")
    bob = reader("bob")
    alarm = critical()
    token = make_token(ann.pk, alarm.pk)
    rest = token.partition(":")[2]
    forged = make_token(bob.pk, alarm.pk).partition(":")[0] + ":" + rest

    for bad in (forged, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "nonsense"):
        url = reverse("alarms:email_seen", args=[bad])
        assert Client().post(url, {"action": "seen"}).status_code == 404
    assert not AlarmReceipt.objects.exists()


def test_an_expired_link_is_refused() -> None:
    ann = reader("ann")
    alarm = critical()

    class Old(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 8 * 86400)

    token = Old(salt=SALT).sign_object([ann.pk, alarm.pk])
    url = reverse("alarms:email_seen", args=[token])

    response = Client().post(url, {"action": "seen"})

    assert response.status_code == 410
    assert b'data-state="expired"' in response.content
    assert not AlarmReceipt.objects.exists()
    # Within LINK_DAYS it is good.
    with escalate(LINK_DAYS=9):
        assert Client().post(url, {"action": "seen"}).status_code == 200
    assert AlarmReceipt.objects.filter(user=ann, seen_at__isnull=False).exists()


def test_another_users_link_while_signed_in_is_refused() -> None:
    ann = reader("ann")
    bob = reader("bob")
    alarm = critical()
    client = Client()
    client.force_login(bob)

    response = client.post(link(ann, alarm), {"action": "seen"})

    assert response.status_code == 403
    assert not AlarmReceipt.objects.exists()
    # Their own link works while signed in.
    assert client.post(link(bob, alarm), {"action": "seen"}).status_code == 200
    assert list(AlarmReceipt.objects.values_list("user__username", flat=True)) == ["bob"]


def test_a_link_for_an_ended_alarm_records_nothing() -> None:
    ann = reader("ann")
    alarm = critical(withdrawn_at=ago(seconds=1))

    response = Client().post(link(ann, alarm), {"action": "seen"})

    assert response.status_code == 410
    assert not AlarmReceipt.objects.exists()


def test_a_link_to_an_alarm_no_longer_for_its_reader_shows_nothing_of_it() -> None:
    ann = reader("ann")
    alarm = critical(audience="selected")
    alarm.users.add(ann)
    url = link(ann, alarm)
    assert b"Server restart" in Client().get(url).content
    alarm.users.remove(ann)  # taken out of the audience since the email

    response = Client().get(url)

    assert response.status_code == 404
    assert b"Server restart" not in response.content
    assert Client().post(url, {"action": "seen"}).status_code == 404
    assert not AlarmReceipt.objects.exists()


def test_read_token_refuses_other_signed_values() -> None:
    with pytest.raises(signing.BadSignature):
        read_token(signing.dumps({"u": 1}, salt=SALT), timedelta(days=1))
    with pytest.raises(signing.BadSignature):
        read_token(signing.dumps([1, 2]), timedelta(days=1))  # another salt
    assert read_token(make_token(3, 4), timedelta(days=1)) == (3, 4)


# -- the command --------------------------------------------------------------


def test_the_command_runs_one_pass(capsys: pytest.CaptureFixture[str]) -> None:
    reader("ann")
    reader("bob")
    critical()

    call_command("escalate_alarms")

    assert capsys.readouterr().out.strip() == "Sent 2 escalation emails."
    assert len(mail.outbox) == 2


def test_the_command_refuses_when_off() -> None:
    with override_settings(ALARMS={}), pytest.raises(CommandError, match="Escalation is off"):
        call_command("escalate_alarms")


@pytest.mark.parametrize("args", [["--loop", "0"], ["--limit", "0"]])
def test_the_command_refuses_bad_options(args: list[str]) -> None:
    with pytest.raises(CommandError):
        call_command("escalate_alarms", *args)


# -- the check ----------------------------------------------------------------


def check_ids(value: Any) -> list[str]:
    with override_settings(ALARMS={**SETTINGS, "ESCALATE": value}):
        return [m.id for m in check_settings()]


def test_a_sound_setting_passes_the_check() -> None:
    assert check_ids(ESCALATE) == []
    assert check_ids(None) == []


@pytest.mark.parametrize(
    "value",
    [
        True,
        "yes",
        {"AFTER": 10},  # no BASE_URL
        {**ESCALATE, "BASE_URL": "alarms.example.com"},
        {**ESCALATE, "BASE_URL": "https://alarms.example.com/?x=1"},
        {**ESCALATE, "AFTER": -1},
        {**ESCALATE, "AFTER": "10"},
        {**ESCALATE, "BATCH": 0},
        {**ESCALATE, "BATCH": 1.5},
        {**ESCALATE, "LEVELS": []},
        {**ESCALATE, "LEVELS": ["urgent"]},
        {**ESCALATE, "LEVELS": "critical"},
        {**ESCALATE, "FROM": "nobody"},
        {**ESCALATE, "LEASE": None},
        {**ESCALATE, "AFTRE": 5},
    ],
)
def test_e008_a_malformed_setting(value: Any) -> None:
    assert "alarms.E008" in check_ids(value)


def test_w004_no_smtp_timeout_below_the_lease() -> None:
    with smtp():
        assert check_ids(ESCALATE) == ["alarms.W004"]
    with smtp(timeout=60):
        assert check_ids(ESCALATE) == ["alarms.W004"]
    with smtp(timeout=59):
        assert check_ids(ESCALATE) == []
    # A backend that does not wait on a network (the tests' locmem): no warning.
    assert check_ids(ESCALATE) == []


def test_the_admin_lists_escalations_read_only() -> None:
    ann = reader("ann")
    alarm = critical()
    AlarmEscalation.objects.create(
        alarm=alarm, user=ann, claimed_at=ago(minutes=1), attempts=2, error="SMTPDataError(451)"
    )
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))

    page = client.get(reverse("admin:alarms_alarmescalation_changelist"))

    assert page.status_code == 200
    assert b"SMTPDataError(451)" in page.content
    assert client.get(reverse("admin:alarms_alarmescalation_add")).status_code == 403

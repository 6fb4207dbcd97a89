from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command, get_commands
from django.test import override_settings
from django.utils import timezone

from alarms.models import Alarm, AlarmChange, AlarmTranslation, Audience, Level
from tests.demo import demo_project  # noqa: F401  (the fixture)
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def send(*args: str) -> Alarm:
    out = StringIO()
    call_command("send_alarm", *args, stdout=out)
    return Alarm.objects.get(pk=int(out.getvalue().strip()))


# -- send_alarm ---------------------------------------------------------------


def test_send_alarm_prints_the_id_of_a_live_alarm() -> None:
    alarm = send(
        "--translation", "en", "Disk full", "Clean up /tmp.",
        "--translation", "ko", "디스크 가득 참", "/tmp를 정리하세요.",
        "--level", "error",
        "--url", "/status/",
    )  # fmt: skip

    assert alarm.status == "live"
    assert (alarm.level, alarm.audience, alarm.url) == (
        Level.ERROR,
        Audience.AUTHENTICATED,
        "/status/",
    )
    assert dict(alarm.translations.values_list("language_code", "title")) == {
        "en": "Disk full",
        "ko": "디스크 가득 참",
    }


def test_send_alarm_to_users_and_groups() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    night = Group.objects.create(name="Night shift")

    alarm = send(
        "--translation", "en", "T", "M",
        "--user", "alice", "--user", "bob", "--group", "Night shift",
    )  # fmt: skip

    assert alarm.audience == Audience.SELECTED
    assert set(alarm.users.all()) == {alice, bob}
    assert list(alarm.groups.all()) == [night]


def test_send_alarm_schedule_and_expiry() -> None:
    alarm = send(
        "--translation", "en", "T", "M",
        "--publish-at", "2031-02-03T04:05:06+09:00",
        "--expires-in", "3600",
    )  # fmt: skip

    assert alarm.publish_at == datetime(2031, 2, 2, 19, 5, 6, tzinfo=UTC)
    assert alarm.expires_at - alarm.publish_at == timedelta(hours=1)
    assert alarm.status == "scheduled"


@override_settings(TIME_ZONE="Asia/Seoul")
def test_send_alarm_naive_time_is_in_the_current_time_zone() -> None:
    alarm = send("--translation", "en", "T", "M", "--publish-at", "2031-02-03 09:00")

    assert alarm.publish_at == datetime(2031, 2, 3, 0, 0, tzinfo=UTC)


def test_send_alarm_expires_in_from_now() -> None:
    before = timezone.now()
    alarm = send("--translation", "en", "T", "M", "--expires-in", "90")

    assert before <= alarm.publish_at <= timezone.now()
    assert alarm.expires_at - alarm.publish_at == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("args", "message"),
    (
        ((), "Give at least one --translation"),
        (("--translation", "ko", "T", "M"), "A translation in the default language 'en'"),
        (("--translation", "xx", "T", "M"), "Unknown language 'xx'"),
        (("--translation", "en", "T", "M", "--translation", "en", "T", "M"), "given twice"),
        (("--translation", "en", "  ", "M"), "needs both a title and a message"),
        (("--translation", "en", "T", "M", "--level", "loud"), "Unknown level 'loud'"),
        (("--translation", "en", "T", "M", "--audience", "cats"), "Unknown audience 'cats'"),
        (("--translation", "en", "T", "M", "--user", "nobody"), "Unknown user(s): nobody"),
        (("--translation", "en", "T", "M", "--group", "Nobody"), "Unknown group 'Nobody'"),
        (("--translation", "en", "T", "M", "--publish-at", "soon"), "not an ISO 8601"),
        (("--translation", "en", "T", "M", "--expires-in", "0"), "must be a positive number"),
        (("--translation", "en", "T", "M", "--url", "javascript:x()"), "Unsafe link"),
        (
            ("--translation", "en", "T", "M", "--audience", "selected"),
            'The audience "selected" needs at least one user or group',
        ),
    ),
)
def test_send_alarm_bad_input(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("send_alarm", *args, stdout=StringIO())

    assert message in str(excinfo.value)
    assert not Alarm.objects.exists()


def test_send_alarm_exit_codes_from_the_command_line() -> None:
    # Real exit statuses, in a process of its own: 0 on success, 1 with the error on stderr.
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    bad = subprocess.run(
        [sys.executable, "manage.py", "send_alarm", "--translation", "en", "T", "M",
         "--publish-at", "not-a-date"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "CommandError: --publish-at 'not-a-date' is not an ISO 8601" in bad.stderr


def test_send_alarm_expires_at() -> None:
    alarm = send("--translation", "en", "T", "M", "--expires-at", "2099-01-31T09:00:00+02:00")

    assert alarm.expires_at == datetime(2099, 1, 31, 7, tzinfo=UTC)


def test_send_alarm_expires_at_and_in_together_is_refused() -> None:
    with pytest.raises(CommandError, match="not both"):
        call_command(
            "send_alarm", "--translation", "en", "T", "M",
            "--expires-at", "2099-01-01T00:00", "--expires-in", "60", stdout=StringIO(),
        )  # fmt: skip


def test_send_alarm_dry_run_writes_nothing() -> None:
    out = StringIO()
    call_command("send_alarm", "--translation", "en", "T", "M", "--dry-run", stdout=out)

    assert "Dry run: all checks passed; this would create a new alarm" in out.getvalue()
    assert not Alarm.objects.exists()
    assert not AlarmChange.objects.exists()


@override_settings(ALARMS={"STORM_LIMIT": 1, "STORM_WINDOW": 60})
def test_send_alarm_dry_run_meets_storm_control() -> None:
    send("--translation", "en", "T", "M")

    with pytest.raises(CommandError, match="Storm control"):
        call_command("send_alarm", "--translation", "en", "T", "M", "--dry-run", stdout=StringIO())
    assert Alarm.objects.count() == 1


def test_send_alarm_external_id_updates_the_same_alarm_and_json_says_so() -> None:
    def send_json(*args: str) -> dict[str, object]:
        out = StringIO()
        call_command("send_alarm", "--external-id", "backup-nightly", "--json", *args, stdout=out)
        loaded: dict[str, object] = json.loads(out.getvalue())
        return loaded

    first = send_json("--translation", "en", "Backup failed", "Retrying.")
    again = send_json("--translation", "en", "Backup failed", "Retrying.")
    worse = send_json("--translation", "en", "Backup failed", "Gave up.", "--level", "error")

    alarm = Alarm.objects.get()
    assert first["id"] == again["id"] == worse["id"] == alarm.pk
    assert (first["created"], first["changed"]) == (True, True)
    assert (again["created"], again["changed"]) == (False, False)
    assert (worse["created"], worse["changed"]) == (False, True)
    assert (worse["status"], worse["level"], worse["external_id"]) == (
        "live",
        "error",
        "backup-nightly",
    )
    assert alarm.translations.get().message == "Gave up."


# -- withdraw_alarm -------------------------------------------------------------


def test_withdraw_alarm_by_id_and_external_id() -> None:
    first = send("--translation", "en", "A", "M")
    second = send("--translation", "en", "B", "M", "--external-id", "k2")
    kept = send("--translation", "en", "C", "M")
    out = StringIO()

    call_command("withdraw_alarm", str(first.pk), "--external-id", "k2", stdout=out)

    assert out.getvalue().splitlines() == [
        f"Withdrew alarm {first.pk}.",
        f"Withdrew alarm {second.pk}.",
    ]
    assert set(Alarm.objects.withdrawn().values_list("pk", flat=True)) == {first.pk, second.pk}
    assert Alarm.objects.get(pk=kept.pk).withdrawn_at is None


def test_withdraw_alarm_again_and_json() -> None:
    alarm = send("--translation", "en", "A", "M")
    call_command("withdraw_alarm", str(alarm.pk), stdout=StringIO())
    out = StringIO()

    call_command("withdraw_alarm", str(alarm.pk), "--json", stdout=out)

    line = json.loads(out.getvalue())
    assert (line["id"], line["status"], line["withdrawn_now"]) == (alarm.pk, "withdrawn", False)


@pytest.mark.parametrize(
    ("args", "message"),
    (
        ((), "Give at least one alarm id or --external-id"),
        (("PK", "999"), "No alarm 999: nothing was withdrawn"),
        (("PK", "--external-id", "nope"), "No alarm 'nope': nothing was withdrawn"),
    ),
)
def test_withdraw_alarm_refuses_what_it_cannot_find(args: tuple[str, ...], message: str) -> None:
    alarm = send("--translation", "en", "A", "M")

    with pytest.raises(CommandError, match=message):
        call_command(
            "withdraw_alarm", *(str(alarm.pk) if a == "PK" else a for a in args), stdout=StringIO()
        )
    assert Alarm.objects.get().withdrawn_at is None


# -- demo (a command of the demo project, config/demo/, not of the app) --------


def snapshot() -> dict[str, object]:
    return {
        "users": sorted(User.objects.values_list("username", "password", "is_superuser")),
        "groups": sorted(User.groups.through.objects.values_list("user__username", "group__name")),
        "alarms": sorted(
            Alarm.objects.values_list(
                "pk", "level", "audience", "publish_at", "expires_at", "withdrawn_at", "updated_at"
            )
        ),
        "translations": AlarmTranslation.objects.count(),
        "changes": AlarmChange.objects.count(),
    }


@pytest.mark.usefixtures("demo_project")
def test_demo_creates_users_groups_and_alarms() -> None:
    out = StringIO()
    call_command("demo", stdout=out)

    operator = User.objects.get(username="operator")
    assert operator.is_superuser
    assert operator.check_password("alarms-demo")
    for name in ("alice", "bob", "carol", "dana"):
        assert User.objects.get(username=name).check_password("alarms-demo")
    assert set(Group.objects.values_list("name", flat=True)) >= {"Night shift", "Engineering"}
    alarms = Alarm.objects.all()
    assert alarms.count() >= 5
    for alarm in alarms:
        assert set(alarm.translations.values_list("language_code", flat=True)) == {
            "en",
            "ko",
            "ja",
            "ar",
        }
    assert {a.status for a in alarms} == {"live", "scheduled", "expired", "withdrawn"}
    assert set(alarms.values_list("level", flat=True)) == set(Level.values)
    assert set(alarms.values_list("audience", flat=True)) == set(Audience.values)
    text = out.getvalue()
    assert "http://127.0.0.1:8000/admin/" in text
    assert "http://127.0.0.1:8000/accounts/login/" in text
    assert "operator" in text
    assert "alarms-demo" in text


@pytest.mark.usefixtures("demo_project")
def test_demo_twice_changes_nothing() -> None:
    call_command("demo", stdout=StringIO())
    first = snapshot()
    out = StringIO()

    call_command("demo", stdout=out)

    assert snapshot() == first
    assert "nothing changed" in out.getvalue()


@pytest.mark.usefixtures("demo_project")
def test_demo_leaves_existing_users_alone() -> None:
    carol = make_user("carol")  # password "pw"

    call_command("demo", stdout=StringIO())

    carol.refresh_from_db()
    assert carol.check_password("pw")
    assert User.objects.filter(username="carol").count() == 1


@pytest.mark.usefixtures("demo_project")
def test_demo_does_not_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connection

    monkeypatch.setattr(connection.introspection, "table_names", lambda *a, **k: [])

    with pytest.raises(CommandError, match=r"run `manage\.py migrate` first"):
        call_command("demo", stdout=StringIO())
    assert not User.objects.exists()


@pytest.mark.usefixtures("demo_project")
def test_demo_is_the_demo_projects_command() -> None:
    assert get_commands()["demo"] == "config.demo"


def test_the_app_has_no_demo_command() -> None:
    # The tests' lean project installs the app without the demo: no command
    # there may create users with a known password.
    assert "demo" not in get_commands()

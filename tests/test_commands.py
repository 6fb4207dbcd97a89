from __future__ import annotations

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

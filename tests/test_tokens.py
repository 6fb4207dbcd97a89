"""alarms.tokens (made, checked, revoked) and ``manage.py create_alarm_token``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.utils import timezone

from alarms import tokens
from alarms.models import AlarmToken, Audience, TokenScope
from tests.factories import ago, ahead

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


# -- create_token ------------------------------------------------------------------


def test_a_token_keeps_a_digest_and_a_prefix_never_the_secret() -> None:
    _, secret = tokens.create_token("ci", scopes=["read", "publish", "read"])

    assert secret.startswith("alm_") and len(secret) == 44
    stored = AlarmToken.objects.get()
    assert stored.digest == tokens.digest(secret) != secret
    assert secret.startswith(stored.prefix) and len(stored.prefix) < len(secret) // 2
    assert secret not in {str(v) for v in AlarmToken.objects.values().get().values()}
    assert stored.scopes == "publish read"
    assert stored.scope_set == {"publish", "read"}
    assert tokens.create_token("other")[1] != secret


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scopes": []}, "scope"),
        ({"scopes": ["admin"]}, "scope"),
        ({"audience": "nobody"}, "audience"),
        ({"expires_at": ago(seconds=1)}, "future"),
    ],
)
def test_create_token_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tokens.create_token("ci", **options)
    assert not AlarmToken.objects.exists()


# -- parse_authorization -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        ("Bearer alm_x", "alm_x"),
        ("bearer alm_x", "alm_x"),
        ("  Bearer   alm_x  ", "alm_x"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic alm_x", None),
        ("Bearer alm_x extra", None),
        ("alm_x", None),
        ("", None),
    ],
)
def test_parse_authorization(header: str, secret: str | None) -> None:
    assert tokens.parse_authorization(header) == secret


# -- authenticate --------------------------------------------------------------------


def test_authenticate_finds_the_token_by_its_secret_only() -> None:
    token, secret = tokens.create_token("ci")

    assert tokens.authenticate(secret) == token
    for wrong in (None, "", secret[:-1], secret + "x", "alm_" + "x" * 300, secret.upper()):
        assert tokens.authenticate(wrong) is None


def test_a_revoked_token_is_refused_at_once() -> None:
    token, secret = tokens.create_token("ci")
    assert tokens.authenticate(secret) is not None

    tokens.revoke(token)

    assert tokens.authenticate(secret) is None
    revoked_at = AlarmToken.objects.get().revoked_at
    assert revoked_at is not None
    # Revoking again keeps the first time.
    tokens.revoke(AlarmToken.objects.get())
    assert AlarmToken.objects.get().revoked_at == revoked_at


def test_an_expired_token_is_refused() -> None:
    _, secret = tokens.create_token("ci", expires_at=ahead(hours=1))
    assert tokens.authenticate(secret) is not None

    AlarmToken.objects.update(expires_at=ago(seconds=1))

    assert tokens.authenticate(secret) is None


def test_last_used_is_written_at_most_once_a_minute() -> None:
    _, secret = tokens.create_token("ci")

    tokens.authenticate(secret)
    first = AlarmToken.objects.get().last_used_at
    tokens.authenticate(secret)
    assert AlarmToken.objects.get().last_used_at == first

    AlarmToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    tokens.authenticate(secret)
    assert first is not None
    assert AlarmToken.objects.get().last_used_at >= first


# -- manage.py create_alarm_token -----------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_alarm_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_the_secret_once_and_alone() -> None:
    out, err = run("ci", "--scope", "publish", "--scope", "read")

    secret = out.strip()
    token = AlarmToken.objects.get()
    assert tokens.authenticate(secret) == token
    assert (token.name, token.scope_set) == ("ci", {"publish", "read"})
    assert "shown this once" in err and secret not in err


def test_the_command_takes_every_option_and_says_so_in_json() -> None:
    Group.objects.create(name="ops")

    out, _ = run(
        "pager",
        "--scope",
        "publish",
        "--audience",
        "selected",
        "--group",
        "ops",
        "--storm-limit",
        "5",
        "--expires-at",
        "2099-01-01T00:00:00+00:00",
        "--json",
    )

    printed = json.loads(out)
    token = AlarmToken.objects.get()
    assert tokens.authenticate(printed["secret"]) == token
    assert printed == {
        "name": "pager",
        "prefix": token.prefix,
        "scopes": ["publish"],
        "audience": "selected",
        "groups": ["ops"],
        "storm_limit": 5,
        "expires_at": "2099-01-01T00:00:00+00:00",
        "secret": printed["secret"],
    }
    assert (token.audience, [g.name for g in token.groups.all()]) == (Audience.SELECTED, ["ops"])
    assert token.scope_set == {TokenScope.PUBLISH}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ci"], "exists already"),
        (["new", "--group", "ghosts"], "Unknown group"),
        (["new", "--audience", "selected"], "needs at least one --group"),
        (["new", "--expires-at", "2001-01-01T00:00"], "future"),
        (["new", "--expires-at", "soon"], "ISO 8601"),
        (["new", "--storm-limit", "-1"], "0 or more"),
        ([" "], "name"),
    ],
)
def test_the_command_refuses_bad_input(args: list[str], message: str) -> None:
    tokens.create_token("ci")

    with pytest.raises(CommandError, match=message):
        run(*args)
    assert AlarmToken.objects.count() == 1


def test_the_command_refuses_an_unknown_scope_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "create_alarm_token", "x", "--scope", "admin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode != 0
    assert "invalid choice: 'admin'" in result.stderr

"""config.settings read from the environment, each case in a fresh interpreter."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SHOW = """
import json
import django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "debug": settings.DEBUG,
    "hosts": settings.ALLOWED_HOSTS,
    "db": {k: str(db.get(k)) for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")},
    "options": db.get("OPTIONS", {}),
    "languages": [code for code, _name in settings.LANGUAGES],
    "language_code": settings.LANGUAGE_CODE,
    "use_tz": settings.USE_TZ,
    "asgi": settings.ASGI_APPLICATION,
    "apps": settings.INSTALLED_APPS,
    "middleware": settings.MIDDLEWARE,
    "static": settings.STORAGES["staticfiles"]["BACKEND"],
}))
"""


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: only what the case sets, so the caller's DATABASE_URL
    # or DJANGO_DEBUG cannot leak in.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def show(**env: str) -> dict[str, Any]:
    result = run(["-c", SHOW], **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def production(**env: str) -> dict[str, str]:
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "alarms.example.com",
        **env,
    }


def test_database_url_is_parsed() -> None:
    config = show(
        DJANGO_DEBUG="1", DATABASE_URL="postgres://alarm:s3cret@db.example.com:6543/alarms"
    )

    assert config["db"] == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "alarms",
        "USER": "alarm",
        "PASSWORD": "s3cret",
        "HOST": "db.example.com",
        "PORT": "6543",
    }
    assert "init_command" not in config["options"]


def test_sqlite_by_default_in_the_project() -> None:
    config = show(DJANGO_DEBUG="1", DATABASE_URL=f"sqlite:///{ROOT / 'db.sqlite3'}")
    default = show(DJANGO_DEBUG="1")

    assert default["db"] == config["db"]
    assert default["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert default["db"]["NAME"] == str(ROOT / "db.sqlite3")
    assert "journal_mode=WAL" in default["options"]["init_command"]


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = production()
    del env["DJANGO_SECRET_KEY"]

    result = run(["-c", SHOW], **env)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_debug_off_is_the_default() -> None:
    result = run(["-c", SHOW])

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_development_has_a_key_and_local_hosts() -> None:
    config = show(DJANGO_DEBUG="1")

    assert config["debug"] is True
    assert "127.0.0.1" in config["hosts"]


def test_production_settings() -> None:
    config = show(**production(DJANGO_ALLOWED_HOSTS="a.example.com,b.example.com"))

    assert config["debug"] is False
    assert config["hosts"] == ["a.example.com", "b.example.com"]
    assert config["static"] == "alarms.storage.CompressedManifestStaticFilesStorage"


def test_site_language_and_serving() -> None:
    config = show(DJANGO_DEBUG="1")

    assert config["language_code"] == "en"
    assert {"en", "ko", "ja", "ar"} <= set(config["languages"])
    assert config["use_tz"] is True
    assert config["asgi"] == "config.asgi.application"
    apps = config["apps"]
    assert apps.index("daphne") < apps.index("django.contrib.staticfiles")
    assert "alarms.middleware.LocaleMiddleware" in config["middleware"]
    assert any("WhiteNoiseMiddleware" in name for name in config["middleware"])
    assert apps.index("alarms") < apps.index("config.demo")


def test_the_demo_command_is_the_demo_projects() -> None:
    # scripts/demo runs `manage.py demo`: the demo project's own app has it, not `alarms`
    # (tests/test_pluggable.py: a project with the app alone has no such command).
    result = run(["manage.py", "help", "demo"], DJANGO_DEBUG="1")

    assert result.returncode == 0, result.stderr
    assert "Create demo users, groups and sample alarms" in " ".join(result.stdout.split())


def test_check_deploy_is_clean_in_production() -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **production())

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stderr


def test_check_deploy_flags_debug() -> None:
    # The same check does catch a real problem: DEBUG on in "production".
    env = production(DJANGO_DEBUG="1")

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env)

    assert result.returncode != 0
    assert "security.W018" in result.stderr


PROBE = """
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1:8001")
token = {"Authorization": "Bearer the-token"}
print(client.get("/alarms/metrics/", headers=token).status_code,
      client.get("/alarms/metrics/").status_code,
      client.get("/", headers=token).status_code)
"""


def test_metrics_answer_over_plain_http_on_loopback_with_the_token() -> None:
    # A scraper calls each daphne process directly, without X-Forwarded-Proto:
    # the metrics answer (the token from the environment) while pages still
    # redirect to HTTPS.
    env = production(DJANGO_ALLOWED_HOSTS="127.0.0.1", ALARMS_METRICS_TOKEN="the-token")
    result = run(["-c", PROBE], **env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "403", "301"]


TOKEN_SETTING = """
import django
django.setup()
from django.conf import settings
print(repr(settings.ALARMS["METRICS_TOKEN"]))
"""


def test_no_metrics_token_unless_set() -> None:
    # Unset or empty, the variable gives no token at all (None), not an empty one.
    for env in ({"DJANGO_DEBUG": "1"}, {"DJANGO_DEBUG": "1", "ALARMS_METRICS_TOKEN": ""}):
        setting = run(["-c", TOKEN_SETTING], **env)
        assert setting.returncode == 0, setting.stderr
        assert setting.stdout.strip() == "None"

        result = run(["-c", PROBE], **env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:2] == ["403", "403"]

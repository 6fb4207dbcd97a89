"""The app in a project of its own: no demo, no PostgreSQL driver (``tests/minimal_settings.py``).

Each case runs in a fresh interpreter on a SQLite file of its own, with psycopg
made unimportable, as for a SQLite user who installed ``django-live-alarms``
without the ``postgres`` extra; an attempt to import it is recorded and fails
the case even where the app would have caught the ``ImportError``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent

# Runs `django-admin ARGS...` (or, with --script, the script that follows) in
# tests.minimal_settings with psycopg unimportable, then fails if anything tried
# to import it or the PostgreSQL broker.
RUNNER = """
import sys

tried = []


class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg", "psycopg2", "psycopg_binary", "psycopg_c"):
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoPsycopg())
try:
    if sys.argv[1] == "--script":
        import django

        django.setup()
        exec(sys.argv[2])
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["django-admin", *sys.argv[1:]])
finally:
    loaded = sorted(name for name in sys.modules if name == "alarms.broker.postgres")
    if tried or loaded:
        print(f"psycopg imported: {tried}, PostgreSQL broker loaded: {loaded}", file=sys.stderr)
        sys.exit(9)
"""


def django(database: Path, *args: str, settings: str = "tests.minimal_settings", **env: str):
    # A clean environment: the caller's DATABASE_URL or DJANGO_SETTINGS_MODULE cannot leak in.
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": settings,
            "DATABASE_URL": f"sqlite:///{database}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal project's database, migrated (which is the first case)."""
    path = tmp_path_factory.mktemp("pluggable") / "db.sqlite3"
    result = django(path, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    assert "Applying alarms.0001_initial... OK" in result.stdout
    return path


def test_migrate_and_check_pass(database: Path) -> None:
    result = django(database, "check", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout

    result = django(database, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_demo_command_and_no_users(database: Path) -> None:
    # Installing the app must not give a project a command that makes users
    # with a known password: `manage.py demo` belongs to the demo project.
    result = django(database, "help", "--commands")

    assert result.returncode == 0, result.stderr
    commands = result.stdout.split()
    assert {"send_alarm", "prune_alarms"} <= set(commands)
    assert "demo" not in commands

    result = django(database, "--script", "from django.contrib.auth.models import User\n"
                    "assert not User.objects.exists(), list(User.objects.all())")  # fmt: skip
    assert result.returncode == 0, result.stderr


SERVE = """
from django.contrib.auth.models import User
from django.test import Client

from alarms import api
from alarms.broker import get_broker

assert type(get_broker()).__name__ == "MemoryBroker", get_broker()
api.send_alarm({"en": {"title": "Disk full", "message": "Clean up."}}, audience="everyone")
client = Client()
client.force_login(User.objects.create_user("reader"))
response = client.get("/alarms/")
assert response.status_code == 200, response.status_code
assert "Disk full" in response.content.decode()
"""


def test_the_app_serves_without_the_postgresql_driver(database: Path) -> None:
    result = django(database, "--script", SERVE)

    assert result.returncode == 0, result.stderr


def test_the_runner_does_catch_a_psycopg_import(database: Path) -> None:
    # The cases above would pass unseen if the guard saw nothing.
    result = django(database, "--script", "import alarms.broker.postgres")

    assert result.returncode == 9
    assert "psycopg imported: ['psycopg']" in result.stderr


def test_startproject_language_code_passes_the_checks(database: Path, tmp_path: Path) -> None:
    (tmp_path / "en_us_settings.py").write_text(
        "from tests.minimal_settings import *\nLANGUAGE_CODE = 'en-us'\n"
    )
    result = django(
        database, "check", "--fail-level", "WARNING", settings="en_us_settings",
        PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}",
    )  # fmt: skip

    assert "alarms.E001" not in result.stderr
    assert result.returncode == 0, result.stderr


@override_settings(LANGUAGE_CODE="en-us")
def test_startproject_language_code_is_served_as_its_variant(db: None) -> None:
    """With ``LANGUAGE_CODE = "en-us"`` and Django's ``LANGUAGES`` (``en``, no ``en-us``),
    the default language every alarm needs, and every reader falls back to, is ``en``."""
    from alarms import api
    from alarms.translation import choose_language, default_language

    assert default_language() == "en"
    alarm = api.send_alarm({"en": {"title": "Hello", "message": "World"}})
    assert alarm.default_translation().language_code == "en"
    assert choose_language("ko", ["ar", "en"]) == "en"
    with pytest.raises(ValueError, match="default language 'en'"):
        api.send_alarm({"ar": {"title": "t", "message": "m"}})

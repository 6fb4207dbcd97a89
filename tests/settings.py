"""Settings of the app's tests: a lean project of the contrib apps and ``alarms``, no demo.

What a project that adds the app has (README, "Adding the app to another project"),
plus the test database. The tests about the demo project itself put the demo's
settings in place for themselves (``tests/demo.py``); the end-to-end servers run
on the demo's (``tests/e2e/server_settings.py``).

The end-to-end tests start real server processes that must see the rows a test
commits, so the SQLite test database is a file, not memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import django
import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# The end-to-end servers inherit this environment and read their key from it: a
# session this process signs (a signed-in test user) is then valid there too.
SECRET_KEY = os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-" + "k" * 50)
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "alarms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "alarms.middleware.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A signed-in user's stored language and time zone (alarms.preferences).
    "alarms.middleware.PreferencesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite unless DATABASE_URL says otherwise (scripts/test's PostgreSQL legs).
DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'test-artifacts' / 'tests.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # As the demo: WAL lets the servers' reads run beside this process's writes;
    # IMMEDIATE transactions wait for a writer rather than fail (config/settings.py).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / "test-artifacts" / f"test-{os.getpid()}.sqlite3")
    }
elif os.environ.get("ALARMS_TEST_LEG"):
    # Legs of scripts/test that share one PostgreSQL server each get a test database.
    name = DATABASES["default"]["NAME"]
    DATABASES["default"]["TEST"] = {"NAME": f"test_{name}_{os.environ['ALARMS_TEST_LEG']}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The languages the multilingual tests write and read in, one right to left.
LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", _("English")),
    ("ko", _("Korean")),
    ("ja", _("Japanese")),
    ("ar", _("Arabic")),
]
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"

STATIC_URL = "static/"

if django.VERSION >= (6, 1):
    # The default mailer (the tests swap in the locmem backend): Django 6.1
    # deprecates the EMAIL_* settings and get_connection() that stand for it.
    MAILERS: dict[str, dict[str, object]] = {"default": {}}

# No SIGTERM handler in the test process itself.
ALARMS = {"POLL_INTERVAL": 0.2, "SHUTDOWN_GRACE": 0}

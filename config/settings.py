"""Settings for the demo site, read from the environment (and an optional .env)."""

from __future__ import annotations

from pathlib import Path

import django
import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# ---------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off "
            "(set DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne before staticfiles: `manage.py runserver` then serves ASGI.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "alarms",
    # The demo project's own app: `manage.py demo` (users, groups, sample alarms).
    "config.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, reading pt_BR and legacy iw in Accept-Language and the cookie.
    "alarms.middleware.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A signed-in user's stored language and time zone (alarms.preferences).
    "alarms.middleware.PreferencesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# ---------------------------------------------------------------------------
# Database: SQLite file by default, PostgreSQL through DATABASE_URL.
# ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the stream's reads run beside the admin's writes; the timeout
    # rides out the short write locks of a second process (send_alarm). IMMEDIATE:
    # a transaction takes the write lock at BEGIN, so one that reads, then writes
    # (a withdrawal, a receipt) waits for a writer instead of failing with
    # "database is locked" when another connection committed in between.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI each request runs its synchronous code (middleware, a view such as
    # the receipts' POST) on a thread made for it, so without a pool every request
    # opens a new PostgreSQL connection, a new server process included. The pool
    # keeps them; its size also caps the requests in a database at once (others
    # wait up to the timeout, then fail with 500), which a dismissal storm needs.
    # The brokers' own threads hold a connection each from it for their lifetime.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "pool",
        {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", 4),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", 12),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", 20.0),
        },
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# ---------------------------------------------------------------------------
# Internationalisation
# ---------------------------------------------------------------------------
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
LOCALE_PATHS = [BASE_DIR / "locale"]

# ---------------------------------------------------------------------------
# Static files (whitenoise serves them under daphne too)
# ---------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Decided from the environment here, not from the DEBUG the test runner forces
# off: in development whitenoise serves the finders' files, no collectstatic.
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "alarms.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# ---------------------------------------------------------------------------
# Security (production defaults; behind a TLS-terminating proxy)
# ---------------------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Scrapers and health checks call each daphne process on loopback, over
    # plain HTTP and past nginx (which redirects everything else to HTTPS).
    SECURE_REDIRECT_EXEMPT = [r"^alarms/(health|metrics)/$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a hard-to-undo commitment for every subdomain, so it
        # stays opt-in (DJANGO_SECURE_HSTS_PRELOAD=1); declining it is no flaw.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# ---------------------------------------------------------------------------
# Content-Security-Policy: strict. Scripts and styles come from this origin,
# or carry the response's nonce ({% alarms_toasts %} puts it on its tags);
# no inline script, event handler or style attribute, no eval, no plugins,
# no framing. Django 6 sends it with its own middleware; Django 5.2 has none,
# so there django-csp does (requirements.txt installs it where pip picks 5.2).
# A page that uses the alarms of another origin ({% alarms_toasts origin=... %})
# must add that origin to connect-src.
# DJANGO_CSP_ALLOW_EVAL=1 adds 'unsafe-eval' and nothing else, for a browser
# tool that evaluates strings in the page (the tests need none: they pass
# functions). Inline code stays blocked either way.
# ---------------------------------------------------------------------------
csp_allow_eval = env.bool("DJANGO_CSP_ALLOW_EVAL", default=False)


def _csp_directives(nonce: object) -> dict[str, list[object]]:
    # ``nonce``: the library's marker, replaced by each response's nonce.
    return {
        "default-src": ["'self'"],
        "script-src": ["'self'", nonce, *(["'unsafe-eval'"] if csp_allow_eval else [])],
        "style-src": ["'self'", nonce],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }


if django.VERSION >= (6, 0):
    from django.utils import csp as django_csp

    MIDDLEWARE.insert(1, "django.middleware.csp.ContentSecurityPolicyMiddleware")
    # {{ csp_nonce }} in templates, as the admin's own {% csp_nonce_attr %} reads it.
    TEMPLATES[0]["OPTIONS"]["context_processors"].append("django.template.context_processors.csp")
    SECURE_CSP = _csp_directives(django_csp.CSP.NONCE)
else:
    from csp import constants as csp_constants

    MIDDLEWARE.insert(1, "csp.middleware.CSPMiddleware")
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _csp_directives(csp_constants.NONCE)}

# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------
# LOG_FORMAT=json writes one JSON object per line (alarms.logs.JSONFormatter),
# with the structured fields of the app's stream records.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "alarms.logs.JSONFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"alarms": {"level": env("ALARMS_LOG_LEVEL", default="INFO")}},
}

# ---------------------------------------------------------------------------
# Email (the escalation of unseen alarms, docs/escalation.md)
# ---------------------------------------------------------------------------
# EMAIL_URL=smtp+tls://user:password@mail.example.com:587 (unset: Django's
# defaults); EMAIL_TIMEOUT in seconds, below ALARMS["ESCALATE"]["LEASE"] (alarms.W004).
if email_url := env.str("EMAIL_URL", default=""):
    _email = {
        key: value
        for key, value in env.email_url_config(email_url).items()
        if value not in (None, "")
    }
    _email["EMAIL_TIMEOUT"] = env.int("EMAIL_TIMEOUT", default=30)
    if django.VERSION >= (6, 1):
        # Django 6.1 replaces the EMAIL_* settings with MAILERS.
        _backend = _email.pop("EMAIL_BACKEND")
        _options = {
            "EMAIL_HOST": "host",
            "EMAIL_PORT": "port",
            "EMAIL_HOST_USER": "username",
            "EMAIL_HOST_PASSWORD": "password",
            "EMAIL_USE_TLS": "use_tls",
            "EMAIL_USE_SSL": "use_ssl",
            "EMAIL_TIMEOUT": "timeout",
        }
        MAILERS = {
            "default": {
                "BACKEND": _backend,
                # Only SMTP takes these; the other backends refuse options they do not know.
                "OPTIONS": {_options[k]: v for k, v in _email.items() if k in _options}
                if _backend == "django.core.mail.backends.smtp.EmailBackend"
                else {},
            }
        }
    else:
        vars().update(_email)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")

# ---------------------------------------------------------------------------
# Alarms (see alarms/conf.py for every key and its default)
# ---------------------------------------------------------------------------
ALARMS: dict[str, object] = {
    # Bearer token for /alarms/metrics/ and /alarms/health/ besides staff users.
    "METRICS_TOKEN": env.str("ALARMS_METRICS_TOKEN", default="") or None,
    # The alarm centre inside the demo's own layout (templates/base.html).
    "BASE_TEMPLATE": "base.html",
}
if escalate_base_url := env.str("ALARMS_ESCALATE_BASE_URL", default=""):
    # Email critical alarms unseen after ALARMS_ESCALATE_AFTER minutes; run
    # `manage.py escalate_alarms` from a timer (docs/escalation.md).
    ALARMS["ESCALATE"] = {
        "BASE_URL": escalate_base_url,
        "AFTER": env.float("ALARMS_ESCALATE_AFTER", default=10),
    }

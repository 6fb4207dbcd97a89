"""System checks for configurations that would break streaming (listed in the README)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.template import TemplateDoesNotExist, TemplateSyntaxError, engines
from django.template.backends.django import DjangoTemplates
from django.utils.module_loading import import_string

from alarms.conf import get_config
from alarms.translation import default_language


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from alarms.broker import broker_path
    from alarms.broker.base import BaseBroker

    messages: list[Any] = []
    codes = [code for code, _name in settings.LANGUAGES]
    if default_language() not in codes:
        messages.append(
            Error(
                f"LANGUAGE_CODE {settings.LANGUAGE_CODE!r} is not in LANGUAGES (nor is a "
                "variant Django would serve for it).",
                hint="Alarms need a translation in LANGUAGE_CODE as the last fallback; "
                "add it to LANGUAGES.",
                id="alarms.E001",
            )
        )
    config = get_config()
    path = broker_path()
    try:
        broker_class = import_string(path)
    except ImportError as exc:
        messages.append(
            Error(
                f"ALARMS['BROKER'] {path!r} cannot be imported: {exc}.",
                hint="Use 'alarms.broker.postgres.PostgresBroker' or "
                "'alarms.broker.memory.MemoryBroker', or a subclass of BaseBroker.",
                id="alarms.E002",
            )
        )
    else:
        if not (isinstance(broker_class, type) and issubclass(broker_class, BaseBroker)):
            messages.append(
                Error(f"ALARMS['BROKER'] {path!r} is not a BaseBroker subclass.", id="alarms.E002")
            )
        else:
            messages.extend(broker_class.check())
            messages.extend(wake_url_errors(config, broker_class))
    alias = config["DATABASE"]
    if alias not in settings.DATABASES:
        messages.append(
            Error(f"ALARMS['DATABASE'] {alias!r} is not in DATABASES.", id="alarms.E003")
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Warning(
                "ASGI_APPLICATION is not set: the alarm stream needs an ASGI server.",
                hint="Under WSGI every open stream holds a worker thread and a database "
                "connection. Serve the site with daphne (add 'daphne' to INSTALLED_APPS "
                "and set ASGI_APPLICATION).",
                id="alarms.W001",
            )
        )
    if config["_unknown"]:
        messages.append(
            Warning(
                f"Unknown ALARMS keys: {', '.join(config['_unknown'])}.",
                hint="The keys the app reads are listed under Settings in the README.",
                id="alarms.W002",
            )
        )
    for key in ("HEARTBEAT", "MAX_LIFETIME", "POLL_INTERVAL"):
        value = config[key]
        if not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"ALARMS[{key!r}] must be a positive number, not {value!r}.", id="alarms.E004"
                )
            )
    for key in ("GC_PAUSE", "RECEIPTS_YIELD"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            messages.append(
                Error(
                    f"ALARMS[{key!r}] must be 0 or more seconds, not {value!r}.", id="alarms.E004"
                )
            )
    nice = config["RECEIPTS_NICE"]
    if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
        messages.append(
            Error(
                f"ALARMS['RECEIPTS_NICE'] must be a whole number from 0 to 19, not {nice!r}.",
                id="alarms.E004",
            )
        )
    for key in ("DB_THREADS", "RECEIPT_THREADS"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            messages.append(
                Error(
                    f"ALARMS[{key!r}] must be a whole number of threads, 1 or more, not {value!r}.",
                    id="alarms.E004",
                )
            )
    messages.extend(cors_origin_errors(config["CORS_ALLOWED_ORIGINS"]))
    messages.extend(base_template_errors(config["BASE_TEMPLATE"]))
    messages.extend(escalate_errors(config["ESCALATE"]))
    messages.extend(sqlite_transaction_warnings(settings.DATABASES))
    return messages


def wake_url_errors(config: dict[str, Any], broker_class: type[Any]) -> list[Error]:
    """alarms.E009: a WAKE_URL that nothing would hear. Writers that publish on
    Redis send no NOTIFY, so a broker that does not subscribe (SQLite's, or a
    BROKER set by hand) would miss every write of another process."""
    if not config["WAKE_URL"]:
        return []
    alias = config["DATABASE"]
    engine = str(settings.DATABASES.get(alias, {}).get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        problem = f"ALARMS['WAKE_URL'] needs PostgreSQL; {alias!r} is {engine or 'not set'}."
    else:
        from alarms.broker.redis import RedisBroker

        if issubclass(broker_class, RedisBroker):
            return []  # RedisBroker.check says what is wrong with the URL itself
        problem = (
            f"ALARMS['WAKE_URL'] is set, but ALARMS['BROKER'] {broker_class.__name__} "
            "does not subscribe to it."
        )
    return [
        Error(
            problem,
            hint="Leave ALARMS['BROKER'] unset (RedisBroker is chosen on PostgreSQL), "
            "or unset WAKE_URL.",
            id="alarms.E009",
        )
    ]


def sqlite_transaction_warnings(databases: dict[str, Any]) -> list[Warning]:
    """alarms.W005: a SQLite database whose transactions start DEFERRED. One that
    reads, then writes (a withdrawal, a receipt) fails at once with "database is
    locked" when another connection commits in between (the broker's presence
    rows, a second process): WAL cannot upgrade a stale read, and the busy
    timeout does not apply. IMMEDIATE takes the write lock at BEGIN and waits."""
    messages: list[Warning] = []
    for alias, database in databases.items():
        if database.get("ENGINE") != "django.db.backends.sqlite3":
            continue
        mode = str((database.get("OPTIONS") or {}).get("transaction_mode") or "").upper()
        if mode not in ("IMMEDIATE", "EXCLUSIVE"):
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite with {mode or 'DEFERRED'} transactions: "
                    "a write that follows a read can fail with 'database is locked'.",
                    hint='Set DATABASES[...]["OPTIONS"]["transaction_mode"] = "IMMEDIATE" '
                    "(and a timeout); see the README.",
                    id="alarms.W005",
                )
            )
    return messages


@register(Tags.compatibility)
def check_runtime(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The hooks into other libraries' internals (``alarms.runtime``) still hold."""
    from alarms import runtime

    return [
        Warning(problem, hint="See alarms/runtime.py; please report it.", id="alarms.W003")
        for problem in runtime.probe()
    ]


def base_template_errors(name: Any) -> list[Error]:
    """``BASE_TEMPLATE`` must name a template the alarm pages can extend (None: their own)."""
    if name is None or name == "":
        return []
    if not isinstance(name, str):
        return [
            Error(
                f"ALARMS['BASE_TEMPLATE'] must be a template name or None, not {name!r}.",
                id="alarms.E007",
            )
        ]
    # {% extends %} looks in the Django engine that renders the app's own templates.
    for engine in engines.all():
        if not isinstance(engine, DjangoTemplates):
            continue
        try:
            engine.get_template(name)
        except TemplateDoesNotExist:
            continue
        except TemplateSyntaxError:
            pass  # found: rendering reports the error with its line
        return []
    return [
        Error(
            f"ALARMS['BASE_TEMPLATE'] {name!r} cannot be found: the alarm centre would answer 500.",
            hint="Name a template of the project that has a 'content' block (e.g. 'base.html'), "
            "or set None to use the app's own standalone page.",
            id="alarms.E007",
        )
    ]


def escalate_errors(value: Any) -> list[Error | Warning]:
    """``ESCALATE`` is None or a dict of known keys with sound values (alarms.E008),
    and the mail server cannot hold a claim past its lease (alarms.W004)."""
    from urllib.parse import urlsplit

    from alarms.conf import ESCALATE_DEFAULTS
    from alarms.models import Level

    if value is None:
        return []
    hint = "See docs/escalation.md for the keys of ALARMS['ESCALATE'] and their meaning."
    if not isinstance(value, dict):
        return [
            Error(
                f"ALARMS['ESCALATE'] must be None (off) or a dict, not {value!r}.",
                hint=hint,
                id="alarms.E008",
            )
        ]
    config = {**ESCALATE_DEFAULTS, **value}
    problems = []
    unknown = sorted(set(value) - set(ESCALATE_DEFAULTS))
    if unknown:
        problems.append(f"unknown keys {', '.join(map(repr, unknown))}")

    def number(key: str, *, whole: bool) -> None:
        v = config[key]
        kinds = int if whole else int | float
        if isinstance(v, bool) or not isinstance(v, kinds) or v < (1 if whole else 0):
            what = "a whole number of 1 or more" if whole else "a number of 0 or more"
            problems.append(f"{key!r} must be {what}, not {v!r}")

    number("AFTER", whole=False)
    number("BATCH", whole=True)
    number("LEASE", whole=False)
    number("LINK_DAYS", whole=False)
    levels = config["LEVELS"]
    known = [level.value for level in Level]
    if (
        not isinstance(levels, list | tuple)
        or not levels
        or any(level not in known for level in levels)
    ):
        problems.append(f"'LEVELS' must be a non-empty list of {known}, not {levels!r}")
    sender = config["FROM"]
    if sender is not None and (not isinstance(sender, str) or "@" not in sender):
        problems.append(f"'FROM' must be an email address or None, not {sender!r}")
    base = config["BASE_URL"]
    parts = urlsplit(base) if isinstance(base, str) else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.query
        or parts.fragment
    ):
        problems.append(
            f"'BASE_URL' must be the site's address the email links start with, such as "
            f"'https://alarms.example.com', not {base!r}"
        )
    if problems:
        return [
            Error(f"ALARMS['ESCALATE']: {problem}.", hint=hint, id="alarms.E008")
            for problem in problems
        ]
    from alarms.escalation import SMTP_BACKEND, mail_backend

    backend, timeout = mail_backend()
    try:
        smtp = issubclass(import_string(backend), import_string(SMTP_BACKEND))
    except ImportError:
        smtp = False  # Django's own check reports it at the first send
    lease = config["LEASE"]
    if smtp and (timeout is None or timeout >= lease):
        return [
            Warning(
                f"The SMTP timeout is {timeout!r}, not shorter than "
                f"ALARMS['ESCALATE']['LEASE'] ({lease!r} seconds).",
                hint="An SMTP exchange that hangs past the lease lets another process send "
                "the same email again. Set EMAIL_TIMEOUT (or the default mailer's "
                "OPTIONS['timeout']) below the lease.",
                id="alarms.W004",
            )
        ]
    return []


def cors_origin_errors(origins: Any) -> list[Error]:
    """``CORS_ALLOWED_ORIGINS`` must list exact origins: credentials rule out ``"*"``."""
    from alarms.cors import normalise_origin

    hint = (
        "List each origin as the browser sends it in the Origin header: scheme://host[:port], "
        "e.g. 'https://app.example.com', with no path and no trailing slash."
    )
    if not isinstance(origins, list | tuple):
        return [
            Error(
                f"ALARMS['CORS_ALLOWED_ORIGINS'] must be a list of origins, not {origins!r}.",
                hint=hint,
                id="alarms.E006",
            )
        ]
    errors = []
    for origin in origins:
        if isinstance(origin, str) and "*" in origin:
            errors.append(
                Error(
                    f"ALARMS['CORS_ALLOWED_ORIGINS'] may not contain wildcards: {origin!r}.",
                    hint="The stream and the receipts are read with credentials (the session "
                    "cookie), which browsers never allow for '*'. List each origin.",
                    id="alarms.E006",
                )
            )
        elif normalise_origin(origin) is None:
            errors.append(
                Error(
                    f"ALARMS['CORS_ALLOWED_ORIGINS'] has an entry that is not an origin: "
                    f"{origin!r}.",
                    hint=hint,
                    id="alarms.E006",
                )
            )
    return errors

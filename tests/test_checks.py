from __future__ import annotations

import sys
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings

from alarms.checks import check_settings, sqlite_transaction_warnings


def ids() -> list[str]:
    return [message.id for message in check_settings()]


def test_the_test_settings_pass() -> None:
    assert ids() == []


@override_settings(LANGUAGE_CODE="fr")
def test_e001_language_code_not_in_languages() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E001"]
    assert "'fr' is not in LANGUAGES" in messages[0].msg


@override_settings(LANGUAGE_CODE="fr")
def test_checks_are_registered() -> None:
    assert "alarms.E001" in [m.id for m in run_checks()]


@override_settings(ALARMS={"BROKER": "alarms.broker.nowhere.Broker"})
def test_e002_broker_cannot_be_imported() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E002"]
    assert "'alarms.broker.nowhere.Broker' cannot be imported" in messages[0].msg


@override_settings(ALARMS={"BROKER": "django.contrib.auth.models.User"})
def test_e002_broker_is_not_a_broker() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E002"]
    assert "is not a BaseBroker subclass" in messages[0].msg


@override_settings(ALARMS={"DATABASE": "elsewhere"})
def test_e003_unknown_database() -> None:
    assert "alarms.E003" in ids()


@pytest.mark.parametrize("key", ("HEARTBEAT", "MAX_LIFETIME", "POLL_INTERVAL"))
@pytest.mark.parametrize("value", (0, -1, "15"))
def test_e004_bad_numbers(key: str, value: Any) -> None:
    with override_settings(ALARMS={key: value}):
        messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E004"]
    assert key in messages[0].msg


@override_settings(ALARMS={"GC_PAUSE": 0, "RECEIPTS_YIELD": 0.5})
def test_waits_of_zero_or_more_seconds_pass() -> None:
    assert "alarms.E004" not in ids()


BAD_WAITS = (-1, "2", None, True)  # 0 or more seconds
BAD_THREAD_COUNTS = (0, -1, 1.5, "2", True)  # a whole number, 1 or more


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *((key, value) for key in ("GC_PAUSE", "RECEIPTS_YIELD") for value in BAD_WAITS),
        *((key, value) for key in ("DB_THREADS", "RECEIPT_THREADS") for value in BAD_THREAD_COUNTS),
        *(("RECEIPTS_NICE", value) for value in (-1, 20, 2.5, "10", True, None)),
    ],
)
def test_e004_bad_waits_and_thread_counts(key: str, value: Any) -> None:
    with override_settings(ALARMS={key: value}):
        messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E004"]
    assert key in messages[0].msg


@override_settings(ALARMS={"DB_THREADS": 3, "RECEIPT_THREADS": 8})
def test_thread_counts_that_are_whole_numbers_pass() -> None:
    assert "alarms.E004" not in ids()


@pytest.mark.parametrize("nice", (0, 19))
def test_nice_values_from_0_to_19_pass(nice: int) -> None:
    with override_settings(ALARMS={"RECEIPTS_NICE": nice}):
        assert "alarms.E004" not in ids()


@override_settings(ALARMS={"BROKER": "alarms.broker.postgres.PostgresBroker"})
def test_e005_postgres_broker_needs_postgres() -> None:
    expected = [] if connection.vendor == "postgresql" else ["alarms.E005"]

    assert ids() == expected


@override_settings(ALARMS={"WAKE_URL": "redis://127.0.0.1:6379/0"})
def test_e009_wake_url_needs_postgres_and_the_broker_that_subscribes() -> None:
    messages = check_settings()

    if connection.vendor == "postgresql":
        assert messages == []  # RedisBroker is chosen by itself
    else:
        assert [m.id for m in messages] == ["alarms.E009"]
        assert "needs PostgreSQL" in messages[0].msg


@pytest.mark.postgres
@override_settings(
    ALARMS={
        "WAKE_URL": "redis://127.0.0.1:6379/0",
        "BROKER": "alarms.broker.postgres.PostgresBroker",
    }
)
def test_e009_a_broker_set_by_hand_must_subscribe() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E009"]
    assert "PostgresBroker does not subscribe" in messages[0].msg


@pytest.mark.postgres
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", 6379])
def test_e009_wake_url_must_be_a_redis_url(url: Any) -> None:
    with override_settings(ALARMS={"WAKE_URL": url}):
        messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E009"]
    assert "must be a redis://, rediss:// or unix:// URL" in messages[0].msg


@pytest.mark.postgres
@override_settings(ALARMS={"WAKE_URL": "redis://127.0.0.1:6379/0"})
def test_e009_wake_url_needs_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E009"]
    assert "needs the redis package" in messages[0].msg


@override_settings(ASGI_APPLICATION=None)
def test_w001_no_asgi() -> None:
    assert ids() == ["alarms.W001"]


@override_settings(ALARMS={"HEARTBAET": 5, "POLL_INTERVAL": 1})
def test_w002_unknown_key() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.W002"]
    assert "HEARTBAET" in messages[0].msg
    assert "POLL_INTERVAL" not in messages[0].msg


@override_settings(ALARMS={"BASE_TEMPLATE": "admin/base.html"})
def test_base_template_is_a_known_key_and_found() -> None:
    assert ids() == []


@pytest.mark.parametrize("value", (None, ""))
def test_no_base_template_means_the_apps_own_page(value: Any) -> None:
    with override_settings(ALARMS={"BASE_TEMPLATE": value}):
        assert ids() == []


@override_settings(ALARMS={"BASE_TEMPLATE": "site/nowhere.html"})
def test_e007_base_template_not_found() -> None:
    messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E007"]
    assert "'site/nowhere.html' cannot be found" in messages[0].msg


@pytest.mark.parametrize("value", (5, ["base.html"]))
def test_e007_base_template_is_not_a_name(value: Any) -> None:
    with override_settings(ALARMS={"BASE_TEMPLATE": value}):
        messages = check_settings()

    assert [m.id for m in messages] == ["alarms.E007"]
    assert "must be a template name or None" in messages[0].msg


def test_e007_looks_where_the_centre_renders(tmp_path: Any) -> None:
    # A template only a non-Django engine finds is no base for {% extends %}.
    (tmp_path / "layout.html").write_text("{{ x }}", encoding="utf-8")
    engines = [
        {"BACKEND": "django.template.backends.dummy.TemplateStrings", "DIRS": [tmp_path]},
        {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True},
    ]
    with override_settings(TEMPLATES=engines, ALARMS={"BASE_TEMPLATE": "layout.html"}):
        assert ids() == ["alarms.E007"]


def test_w005_sqlite_without_immediate_transactions() -> None:
    sqlite = "django.db.backends.sqlite3"
    found = sqlite_transaction_warnings(
        {
            "default": {"ENGINE": sqlite, "OPTIONS": {"timeout": 20}},
            "immediate": {"ENGINE": sqlite, "OPTIONS": {"transaction_mode": "IMMEDIATE"}},
            "pg": {"ENGINE": "django.db.backends.postgresql", "OPTIONS": {}},
            "bare": {"ENGINE": sqlite},
        }
    )
    assert [(m.id, m.msg.split("]")[0]) for m in found] == [
        ("alarms.W005", "DATABASES['default'"),
        ("alarms.W005", "DATABASES['bare'"),
    ]
    assert "DEFERRED transactions" in found[0].msg

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

(Path(__file__).resolve().parent.parent / "test-artifacts").mkdir(exist_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked "postgres" need PostgreSQL. Where it is required (the
    # PostgreSQL leg of the test script, and so CI) its absence is a failure of
    # the whole run; elsewhere those tests are skipped with the reason.
    on_postgres = connection.vendor == "postgresql"
    if os.environ.get("ALARMS_REQUIRE_POSTGRES") == "1" and not on_postgres:
        pytest.exit(
            "ALARMS_REQUIRE_POSTGRES=1 but DATABASE_URL is not a PostgreSQL database.", returncode=3
        )
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)
    # Tests marked "client" drive the browser client through behaviour the server's
    # database and Django version leave alone: scripts/test runs them in one leg and
    # leaves them out of the others (ALARMS_TEST_CLIENT=0). Tests marked "one_django"
    # vary what sits beside Django (the ASGI server, the proxy, the monitoring
    # programs, mail, the browser's pages); the Django 6 leg leaves them out
    # (ALARMS_TEST_ONE_DJANGO=0) and keeps the unit tests and the end-to-end tests of
    # what Django's version can change (the stream through its handler, sessions and
    # access, runserver, CSP, the admin). Tests marked "one_database" do not depend on
    # the database (what they check sits in front of the broker and the journal: the
    # ASGI server, the proxy, the monitoring programs, parsing a request): scripts/test
    # runs them in one database's leg and leaves them out of the other
    # (ALARMS_TEST_ONE_DATABASE=0). A client test goes by the first rule alone.
    client_off = os.environ.get("ALARMS_TEST_CLIENT") == "0"
    one_django_off = os.environ.get("ALARMS_TEST_ONE_DJANGO") == "0"
    one_database_off = os.environ.get("ALARMS_TEST_ONE_DATABASE") == "0"

    def left_out(item: pytest.Item) -> bool:
        if "client" in item.keywords:
            return client_off
        return (one_django_off and "one_django" in item.keywords) or (
            one_database_off and "one_database" in item.keywords
        )

    dropped = [item for item in items if left_out(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not left_out(item)]

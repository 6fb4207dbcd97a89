"""Test settings: the project's own, in debug, with a file SQLite test database.

The end-to-end tests start real server processes that must see the rows a
test commits, so the SQLite test database is a file, not memory.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from config.settings import *  # noqa: F403
from config.settings import BASE_DIR, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / "test-artifacts" / f"test-{os.getpid()}.sqlite3")
    }
elif os.environ.get("ALARMS_TEST_LEG"):
    # Legs of scripts/test that share one PostgreSQL server each get a test database.
    name = DATABASES["default"]["NAME"]
    DATABASES["default"]["TEST"] = {"NAME": f"test_{name}_{os.environ['ALARMS_TEST_LEG']}"}

# No SIGTERM handler in the test process itself.
ALARMS = {"POLL_INTERVAL": 0.2, "SHUTDOWN_GRACE": 0}

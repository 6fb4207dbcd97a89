"""Settings of the daphne processes the end-to-end tests start.

The test process passes the test database as DATABASE_URL and the ALARMS dict
as JSON, so each test can run servers configured its own way.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from config.settings import *  # noqa: F403

# On SQLite a server sees the test process's writes by polling the journal: at
# a tenth of the shipped interval, a test waits a tenth as long for each.
ALARMS = {"POLL_INTERVAL": 0.1, **json.loads(os.environ.get("ALARMS_JSON", "{}"))}
LOGGING["loggers"]["alarms"]["level"] = "DEBUG"  # noqa: F405

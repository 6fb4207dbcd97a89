"""Settings for benchmark servers: the project's, production-like, plus the naive view."""

from __future__ import annotations

import json
import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES

ROOT_URLCONF = "bench.urls"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECURE_SSL_REDIRECT = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Wall-clock stamps, so a run's server logs line up with the client's clock.
    "formatters": {"stamped": {"format": "%(created).3f %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "stamped"}},
    "loggers": {
        "alarms.broker": {"handlers": ["console"], "level": "INFO"},
        # A 500 in a run must leave its traceback in the server's log.
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}

if os.environ.get("BENCH_POOL"):
    # The naive view holds a connection per stream; a pool at least keeps it alive.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": int(os.environ["BENCH_POOL"]),
        "timeout": 30,
    }

# Every bench client connects from 127.0.0.1, and the soak sends an alarm a
# second to everyone: the per-address cap and storm control would refuse both.
# e.g. BENCH_ALARMS='{"HEARTBEAT": 30}' to measure one setting's effect.
ALARMS = {
    "MAX_STREAMS_PER_ADDRESS": None,
    "STORM_LIMIT": None,
    **json.loads(os.environ.get("BENCH_ALARMS", "{}")),
}

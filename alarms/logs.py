"""A JSON log formatter: one object per line, with the fields the app logs in ``extra``.

    LOGGING = {..., "formatters": {"json": {"()": "alarms.logs.JSONFormatter"}}}

The app's records (``alarms.stream``, ``alarms.broker``) carry an ``event`` name
("stream_opened", "stream_closed", "stream_slow", "stream_stalled",
"stream_refused", ...) and fields such as ``stream``, ``user``, ``address``,
``reason`` and ``duration_s``, so a log pipeline can count and filter them
without parsing messages. Nothing is logged per heartbeat or per event.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)

"""The process-wide broker (see ``base``), created lazily from ``ALARMS['BROKER']``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

_lock = threading.Lock()
_broker: BaseBroker | None = None


def get_broker() -> BaseBroker:
    global _broker
    with _lock:
        if _broker is None:
            from alarms.broker.base import broker_path

            _broker = import_string(broker_path())()
        return _broker


def wake_local() -> None:
    """Wake this process's broker, if it runs (after a commit made here)."""
    if _broker is not None:
        _broker.wake()


def reset_broker() -> None:
    """Forget the broker (tests; a new event loop)."""
    global _broker
    with _lock:
        _broker = None

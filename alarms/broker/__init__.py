"""The process-wide broker, created lazily from ``ALARMS['BROKER']``.

Its parts, each a module here:

- ``base``: the broker itself: start and stop, the read loop, authorisation
  that follows the user; ``memory``, ``postgres`` and ``redis`` say what wakes it;
- ``cache``: the alarms it holds in memory and who a stream reads as;
- ``subscribers``: the open streams, their queues and indexes;
- ``reads`` and ``sessions``: every query it makes, in ``threads``;
- ``fanout``: what each stream is sent when something changes;
- ``connect``: opening a stream, with its snapshot or replay;
- ``counters``: what ``/alarms/metrics/`` reports.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from alarms.conf import get_config

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

_lock = threading.Lock()
_broker: BaseBroker | None = None


def get_broker() -> BaseBroker:
    global _broker
    with _lock:
        if _broker is None:
            _broker = import_string(broker_path())()
        return _broker


def current_broker() -> BaseBroker | None:
    """This process's broker if one was made, without making one."""
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


def broker_path() -> str:
    """The broker class to use: ``ALARMS['BROKER']``, else one for the database."""
    path = get_config()["BROKER"]
    if path:
        return str(path)
    from django.conf import settings

    alias = get_config()["DATABASE"]
    engine = settings.DATABASES.get(alias, {}).get("ENGINE", "")
    if "postgresql" in engine or "postgis" in engine:
        if get_config()["WAKE_URL"]:
            return "alarms.broker.redis.RedisBroker"
        return "alarms.broker.postgres.PostgresBroker"
    return "alarms.broker.memory.MemoryBroker"

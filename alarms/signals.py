"""Signals for the host project: sent once per change, after its commit.

Each is sent by the service layer (``alarms.api``, which the admin, the HTTP API,
the webhooks and the management commands all use), never for a write that rolls
back, and once per alarm. Receivers run after the commit, outside its
transaction; one that raises does not undo the change (the exception reaches
the caller, as with any ``on_commit`` callback)::

    from django.dispatch import receiver
    from alarms.signals import alarm_created

    @receiver(alarm_created)
    def page_on_call(sender, alarm, **kwargs):
        if alarm.level == "critical":
            ...

========================  ==========================================================
signal                    arguments (``sender`` is always ``Alarm``)
========================  ==========================================================
``alarm_created``         ``alarm``
``alarm_updated``         ``alarm`` (content, audience or times changed)
``alarm_withdrawn``       ``alarm``
``alarm_deleted``         ``alarm_id``, ``external_id``
``alarm_dismissed``       ``alarm_id``, ``user``
``alarm_escalated``       ``alarm``, ``user`` (emailed to them: ``alarms.escalation``)
========================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import Signal

__all__ = [
    "alarm_created",
    "alarm_deleted",
    "alarm_dismissed",
    "alarm_escalated",
    "alarm_updated",
    "alarm_withdrawn",
    "send_on_commit",
]

alarm_created = Signal()
alarm_updated = Signal()
alarm_withdrawn = Signal()
alarm_deleted = Signal()
alarm_dismissed = Signal()
alarm_escalated = Signal()


def send_on_commit(signal: Signal, *, using: str, **kwargs: Any) -> None:
    """Send ``signal`` (sender ``Alarm``) once the transaction on ``using`` commits."""
    from alarms.models import Alarm

    transaction.on_commit(lambda: signal.send(sender=Alarm, **kwargs), using=using)

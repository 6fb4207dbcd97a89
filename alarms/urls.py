from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import path

from alarms.cors import cors
from alarms.hooks import alertmanager
from alarms.http_api.urls import api as http_api
from alarms.views import (
    centre,
    escalation,
    health,
    metrics,
    payloads,
    preferences,
    receipts,
    stream,
)

app_name = "alarms"


def outside_atomic_requests(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an async view non-atomic for every database.

    Django refuses to run an async view inside ``ATOMIC_REQUESTS``'s
    transaction (a RuntimeError, so a 500) unless it is marked; these views
    write nothing in the request's own connection anyway.
    """
    for alias in settings.DATABASES:
        view = transaction.non_atomic_requests(using=alias)(view)
    return view


urlpatterns = [
    path("", centre.centre, name="centre"),
    path("preferences/", preferences.page, name="preferences"),
    path("preferences/time-zone/", preferences.detected_time_zone, name="preferences_time_zone"),
    path("stream/", outside_atomic_requests(cors("GET")(stream.stream)), name="stream"),
    path("seen/", cors("POST")(receipts.seen), name="seen"),
    path("dismiss/", cors("POST")(receipts.dismiss), name="dismiss"),
    path("email/<str:token>/", escalation.seen, name="email_seen"),
    path("payloads/", cors("GET")(payloads.payloads), name="payloads"),
    path("metrics/", outside_atomic_requests(metrics.metrics), name="metrics"),
    path("health/", outside_atomic_requests(health.health), name="health"),
    path("hooks/alertmanager/", outside_atomic_requests(alertmanager.receive), name="alertmanager"),
    path("api/v1/", http_api.urls),
]

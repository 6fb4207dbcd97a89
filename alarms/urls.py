from __future__ import annotations

from django.urls import path

from alarms.cors import cors
from alarms.views import centre, health, metrics, payloads, receipts, stream

app_name = "alarms"

urlpatterns = [
    path("", centre.centre, name="centre"),
    path("stream/", cors("GET")(stream.stream), name="stream"),
    path("seen/", cors("POST")(receipts.seen), name="seen"),
    path("dismiss/", cors("POST")(receipts.dismiss), name="dismiss"),
    path("payloads/", cors("GET")(payloads.payloads), name="payloads"),
    path("metrics/", metrics.metrics, name="metrics"),
    path("health/", health.health, name="health"),
]

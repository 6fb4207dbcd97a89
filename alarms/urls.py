from __future__ import annotations

from django.urls import path

from alarms.views import centre, metrics, receipts, stream

app_name = "alarms"

urlpatterns = [
    path("", centre.centre, name="centre"),
    path("stream/", stream.stream, name="stream"),
    path("seen/", receipts.seen, name="seen"),
    path("dismiss/", receipts.dismiss, name="dismiss"),
    path("metrics/", metrics.metrics, name="metrics"),
]

from __future__ import annotations

from django.urls import include, path

from bench.naive import naive_stream

urlpatterns = [
    path("alarms/", include("alarms.urls")),
    path("naive/stream/", naive_stream),
]

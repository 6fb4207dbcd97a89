"""URLs of the tests' lean project (tests/settings.py): the admin, sign-in, languages, the app."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("alarms/", include("alarms.urls")),
]

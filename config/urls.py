from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from alarms.views import preferences

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # Django's set_language, storing a signed-in user's choice (alarms.preferences).
    path("i18n/setlang/", preferences.set_language, name="set_language"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("alarms/", include("alarms.urls")),
]

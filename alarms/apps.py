from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AlarmsConfig(AppConfig):
    name = "alarms"
    verbose_name = _("Alarms")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alarms import checks, journal  # noqa: F401  (registers checks and receivers)

        journal.connect_audience_signals()
        journal.connect_access_signals()

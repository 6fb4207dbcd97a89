from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo project's own app: ``manage.py demo`` and its data (no models)."""

    name = "config.demo"
    label = "demo"
    verbose_name = "Demo"

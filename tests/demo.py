"""The demo project (``config/``) in the tests' process, for the tests that are about it.

The tests run on ``tests/settings.py``, a lean project of the app alone. A test of
the demo's own pages, layout or ``manage.py demo`` takes the ``demo_project``
fixture: for that test the demo's apps, middleware, URLs, templates, translations
and layout are in place, as ``scripts/demo`` runs them (debug on). The database,
the secret key and the tests' ``ALARMS`` stay the tests'.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

# What makes the demo project the demo, as against the tests' lean project.
DEMO_SETTINGS = (
    "INSTALLED_APPS",
    "MIDDLEWARE",
    "ROOT_URLCONF",
    "TEMPLATES",
    "LOCALE_PATHS",
    "STATICFILES_DIRS",
    "LANGUAGE_CODE",
    "LANGUAGES",
    "LOGIN_URL",
    "LOGIN_REDIRECT_URL",
    "LOGOUT_REDIRECT_URL",
    "X_FRAME_OPTIONS",
    # Its Content-Security-Policy: Django 6's setting, or django-csp's on 5.2.
    "SECURE_CSP",
    "CONTENT_SECURITY_POLICY",
)


def demo_settings() -> dict[str, Any]:
    """The demo's values of :data:`DEMO_SETTINGS`, read from ``config.settings`` in debug."""
    os.environ.setdefault("DJANGO_DEBUG", "1")
    demo = importlib.import_module("config.settings")
    values = {name: getattr(demo, name) for name in DEMO_SETTINGS if hasattr(demo, name)}
    values["BASE_TEMPLATE"] = demo.ALARMS["BASE_TEMPLATE"]
    return values


@pytest.fixture
def demo_project(settings: Any) -> Any:
    """The demo project's settings for one test (pytest-django restores the tests' after)."""
    values = demo_settings()
    settings.ALARMS = {**settings.ALARMS, "BASE_TEMPLATE": values.pop("BASE_TEMPLATE")}
    for name, value in values.items():
        setattr(settings, name, value)
    return settings

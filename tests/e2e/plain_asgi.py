"""The demo's ASGI application without ``direct_streams``: streams go through Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from alarms.asgi import flow_control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = flow_control(get_asgi_application())

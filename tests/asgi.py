"""The ASGI application of the tests' lean project (tests/settings.py), as README's asgi.py."""

from __future__ import annotations

from django.core.asgi import get_asgi_application

from alarms.asgi import direct_streams, flow_control

application = flow_control(direct_streams(get_asgi_application()))

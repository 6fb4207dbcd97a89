"""The benchmark servers' ASGI applications: the demo's stack, with and without the direct path."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from alarms.asgi import direct_streams, flow_control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

_django = get_asgi_application()
django = flow_control(_django)
direct = flow_control(direct_streams(_django))

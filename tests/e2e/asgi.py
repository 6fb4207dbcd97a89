"""ASGI applications of the end-to-end tests: the demo's stack with and without the direct path."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from alarms.asgi import direct_streams, flow_control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

_django = get_asgi_application()
#: Streams through Django's middleware chain.
django = flow_control(_django)
#: Streams on the direct path; the tests' marking middleware may be skipped.
direct = flow_control(direct_streams(_django, skip=["tests.e2e.chain_settings.MarkChain"]))

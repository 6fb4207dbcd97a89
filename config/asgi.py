import os

from django.core.asgi import get_asgi_application

from alarms.asgi import direct_streams, flow_control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Daphne applies no backpressure: without flow_control, a client that stops
# reading makes its stream buffer without bound (see alarms/asgi.py).
# direct_streams serves the stream without the middleware chain's thread
# hops, which are most of a connect's cost (see alarms/direct.py).
application = flow_control(direct_streams(get_asgi_application()))

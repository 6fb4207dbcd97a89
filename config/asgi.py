import os

from django.core.asgi import get_asgi_application

from alarms.asgi import flow_control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Daphne applies no backpressure: without flow_control, a client that stops
# reading makes its stream buffer without bound (see alarms/asgi.py).
application = flow_control(get_asgi_application())

"""An end-to-end server's settings with more middleware, one of which marks what it served.

``server_settings`` plus :class:`MarkChain` and whatever ``EXTRA_MIDDLEWARE``
names (comma-separated) last in ``MIDDLEWARE``: a response that went through
Django's middleware chain carries ``X-Chain: 1``, and ``X-Chain-Thread`` names
the thread the chain's last hook ran in.
"""

from __future__ import annotations

import os
import threading

from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from tests.e2e.server_settings import *  # noqa: F403
from tests.e2e.server_settings import MIDDLEWARE


class MarkChain(MiddlewareMixin):
    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response["X-Chain"] = "1"
        response["X-Chain-Thread"] = threading.current_thread().name
        return response


MIDDLEWARE = [
    *MIDDLEWARE,
    "tests.e2e.chain_settings.MarkChain",
    *filter(None, os.environ.get("EXTRA_MIDDLEWARE", "").split(",")),
]

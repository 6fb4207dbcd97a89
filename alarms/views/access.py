"""Who may read the operational endpoints (metrics, health): staff, or the bearer token."""

from __future__ import annotations

import hmac

from django.http import HttpRequest

from alarms.conf import get_config


def allowed(request: HttpRequest, user_is_staff: bool) -> bool:
    """Staff users, or a request bearing ``ALARMS["METRICS_TOKEN"]`` when one is set."""
    token = get_config()["METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    # Constant-time: the token must not leak through response timings.
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    return user_is_staff

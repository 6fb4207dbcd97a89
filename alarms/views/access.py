"""Who may read the operational endpoints (metrics, health): staff, or the bearer token."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse

from alarms.conf import get_config


def allowed(request: HttpRequest, user_is_staff: bool) -> bool:
    """Staff users, or a request bearing ``ALARMS["METRICS_TOKEN"]`` when one is set."""
    token = get_config()["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # The scheme is case-insensitive (RFC 9110); the comparison constant-time, so
    # that the token does not leak through response timings.
    if (
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.encode(), str(token).encode())
    ):
        return True
    return user_is_staff


async def refusal(request: HttpRequest) -> HttpResponse | None:
    """A 403 for anyone but staff and the token's bearer; None for them."""
    user = await request.auser()
    if allowed(request, bool(getattr(user, "is_staff", False))):
        return None
    return HttpResponse("Staff or the metrics token only.\n", status=403, content_type="text/plain")

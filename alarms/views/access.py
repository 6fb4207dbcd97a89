"""Who may read the operational endpoints (metrics, health): staff, or the bearer token."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse

from alarms.conf import get_config


def _bears_token(request: HttpRequest) -> bool:
    """Whether the request carries ``ALARMS["METRICS_TOKEN"]``, when one is set."""
    token = get_config()["METRICS_TOKEN"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # The scheme is case-insensitive (RFC 9110); the comparison constant-time, so
    # that the token does not leak through response timings.
    return bool(
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.encode(), str(token).encode())
    )


async def refusal(request: HttpRequest) -> HttpResponse | None:
    """A 403 for anyone but staff and the token's bearer; None for them."""
    # The token first: a scraper's request then loads no session or user.
    if _bears_token(request):
        return None
    user = await request.auser()
    if getattr(user, "is_staff", False):
        return None
    return HttpResponse("Staff or the metrics token only.\n", status=403, content_type="text/plain")

"""Cross-origin access to the stream and the receipts, for ``ALARMS["CORS_ALLOWED_ORIGINS"]``.

A page on another origin opens ``new EventSource(url, {withCredentials: true})``
and posts seen/dismiss with ``fetch(..., {credentials: "include"})``. The
:func:`cors` view decorator answers those requests (and their preflights) for
the listed origins only, with credentials; a cross-origin request from any
other origin is refused with 403 before the view runs.

CSRF: views that take unsafe methods are marked ``csrf_exempt`` and checked by
``csrf_protect`` here instead, except a JSON request from a listed origin. Such
a request cannot come from a plain form or a "simple" fetch (its content type
forces a preflight, answered for listed origins only), and the origin it names
is one the site trusts, so it needs no token; the other origin could not read
one anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import cache, wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_protect

from alarms.conf import get_config

__all__ = ["ALLOWED_HEADERS", "MAX_AGE", "cors", "normalise_origin"]

logger = logging.getLogger("alarms.cors")

View = TypeVar("View", bound=Callable[..., Any])
_Response = TypeVar("_Response", bound=HttpResponseBase)

# What the client may send: JSON bodies, Django's CSRF header (harmless when a
# same-site page sends it anyway) and the header EventSource adds when it
# reconnects by itself after a stream ended.
ALLOWED_HEADERS = ("Content-Type", "X-CSRFToken", "Last-Event-ID")
# Seconds a browser may reuse a preflight (Chromium caps it at 7200).
MAX_AGE = 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port] and nothing after it: no path (not even "/"), query or fragment.
_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+$")

REFUSED = (
    "This origin may not use the alarm endpoints across origins: the site lists the "
    "origins that may in ALARMS['CORS_ALLOWED_ORIGINS'].\n"
)


def normalise_origin(value: str) -> str | None:
    """``"HTTPS://App.Example.com:443"`` -> ``"https://app.example.com"``; None if not an origin.

    The form is the one browsers send in ``Origin``: lowercase scheme and host,
    no default port, no trailing slash. ``"null"`` and ``"*"`` are not origins.
    """
    if not isinstance(value, str) or not _ORIGIN.match(value):
        return None
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if not host or "*" in host:
        return None
    try:
        # Browsers send internationalised names in their ASCII (punycode) form.
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if ":" in host:
        host = f"[{host}]"  # urlsplit drops an IPv6 literal's brackets
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origins() -> frozenset[str]:
    """The configured origins, normalised; entries that are not origins are left out.

    The system check ``alarms.E006`` reports those; at run time they allow nothing.
    """
    configured = get_config()["CORS_ALLOWED_ORIGINS"] or ()
    if isinstance(configured, str):
        configured = (configured,)
    return _normalised(tuple(o for o in configured if isinstance(o, str)))


@cache
def _normalised(configured: tuple[str, ...]) -> frozenset[str]:
    found = (normalise_origin(origin) for origin in configured)
    return frozenset(origin for origin in found if origin)


def _own_origin(request: HttpRequest) -> str | None:
    # The same origin CsrfViewMiddleware compares the Origin header with.
    return normalise_origin(f"{request.scheme}://{request.get_host()}")


class _Verdict:
    """What to do with one request: pass it through, refuse it, or answer CORS."""

    __slots__ = ("origin", "refuse")

    def __init__(self, origin: str | None = None, *, refuse: bool = False) -> None:
        self.origin = origin  # the Origin to echo to an allowed cross-origin request
        self.refuse = refuse


_PASS = _Verdict()


def _judge(request: HttpRequest) -> _Verdict:
    origin = request.headers.get("Origin")
    if origin is None:
        return _PASS  # not a CORS request (same-origin GET, curl, a server)
    normalised = normalise_origin(origin)
    if normalised is not None and normalised == _own_origin(request):
        return _PASS
    if normalised is not None and normalised in allowed_origins():
        return _Verdict(origin)
    logger.info("refused a cross-origin %s to %s from %.100r", request.method, request.path, origin)
    return _Verdict(refuse=True)


def _refusal() -> HttpResponse:
    return HttpResponse(REFUSED, status=403, content_type="text/plain; charset=utf-8")


def _is_preflight(request: HttpRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _preflight(origin: str, methods: Iterable[str]) -> HttpResponse:
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = ", ".join(methods)
    response["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
    response["Access-Control-Max-Age"] = str(MAX_AGE)
    return _allow(response, origin)


def _allow(response: _Response, origin: str) -> _Response:
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Credentials"] = "true"
    patch_vary_headers(response, ("Origin",))
    return response


def _skips_csrf(request: HttpRequest) -> bool:
    # Only a listed origin gets here; its JSON came after a preflight.
    return request.method not in SAFE_METHODS and request.content_type == "application/json"


def cors(*methods: str) -> Callable[[View], View]:
    """Let the origins in ``ALARMS["CORS_ALLOWED_ORIGINS"]`` call a view with credentials.

    ``methods`` are the ones the view serves (answered to preflights). Works on
    sync and async views. A request without ``Origin``, or from the site's own
    origin, reaches the view as before, with Django's CSRF check for unsafe
    methods; a request from an origin not listed gets a 403 and never reaches it.
    """
    methods = tuple(m.upper() for m in methods) or ("GET",)
    unsafe = not set(methods) <= SAFE_METHODS

    def decorator(view: View) -> View:
        # With unsafe methods the view is exempt from the middleware's check and
        # runs it here instead, so that only a listed origin's JSON skips it.
        checked: Callable[..., Any] = csrf_protect(view) if unsafe else view

        def pick(request: HttpRequest, verdict: _Verdict) -> Callable[..., Any]:
            return view if verdict.origin and unsafe and _skips_csrf(request) else checked

        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                verdict = _judge(request)
                if verdict.refuse:
                    return _refusal()
                if verdict.origin is None:
                    return await checked(request, *args, **kwargs)
                if _is_preflight(request):
                    return _preflight(verdict.origin, methods)
                response = await pick(request, verdict)(request, *args, **kwargs)
                return _allow(response, verdict.origin)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @wraps(view)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                verdict = _judge(request)
                if verdict.refuse:
                    return _refusal()
                if verdict.origin is None:
                    return checked(request, *args, **kwargs)
                if _is_preflight(request):
                    return _preflight(verdict.origin, methods)
                response = pick(request, verdict)(request, *args, **kwargs)
                return _allow(response, verdict.origin)

            wrapper = sync_wrapper
        if unsafe:
            wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return cast(View, wrapper)

    return decorator

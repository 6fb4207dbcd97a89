"""Every error the HTTP API answers, in one shape: ``{"errors": [{loc, msg, type}]}``.

``loc`` is the path to what was wrong, as in a validation error: ``["body",
"translations", "fr", "title"]``, ``["header", "Authorization"]``, ``["path",
"alarm_id"]``, ``["query", "limit"]``; ``[]`` for the request as a whole. What a
sender sees for each status is in docs/api.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError

from alarms import api as service
from alarms.storm import StormLimitExceeded

# Bodies larger than this are refused (413) before they are parsed. An alarm with
# a long message in each of a dozen languages fits.
MAX_BODY = 64 * 1024

Loc = Sequence[str | int]


class ApiError(Exception):
    """An error answer: status, where, what, and headers (``WWW-Authenticate``...)."""

    def __init__(
        self,
        status: int,
        msg: str,
        *,
        loc: Loc = (),
        type: str = "error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.loc = list(loc)
        self.type = type
        self.headers = headers or {}


def error(loc: Loc, msg: str, type: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": type}


# The name of each operation's body parameter: ninja puts it in the location of
# every error in the body, where a sender has no such field.
BODY_PARAMETER = "payload"


def _located(loc: Loc) -> list[str | int]:
    loc = list(loc)
    if loc[:2] == ["body", BODY_PARAMETER]:
        return ["body", *loc[2:]]
    return loc


def answer(api: NinjaAPI, request: HttpRequest, exc: ApiError) -> HttpResponse:
    response = api.create_response(
        request, {"errors": [error(exc.loc, exc.msg, exc.type)]}, status=exc.status
    )
    for name, value in exc.headers.items():
        response[name] = value
    return response


def body_size_limit(api: NinjaAPI) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view decorator that refuses a body over ``MAX_BODY`` (413) before it is parsed.

    It runs before authentication: the ``Content-Length`` header first, so an
    over-long body is refused unread, then the body itself (a chunked body
    announces no length).
    """

    def decorator(run: Callable[..., Any]) -> Callable[..., Any]:
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            announced = request.META.get("CONTENT_LENGTH") or "0"
            if not (announced.isascii() and announced.isdigit()):
                return answer(
                    api,
                    request,
                    ApiError(
                        400,
                        "Content-Length is not a number.",
                        loc=["header", "Content-Length"],
                        type="bad_request",
                    ),
                )
            if int(announced) > MAX_BODY or len(request.body) > MAX_BODY:
                return answer(
                    api,
                    request,
                    ApiError(
                        413,
                        f"The body is larger than {MAX_BODY} bytes.",
                        loc=["body"],
                        type="too_large",
                    ),
                )
            return run(request, *args, **kwargs)

        return checked

    return decorator


def install(api: NinjaAPI) -> None:
    """Answer every error of ``api`` in the one shape, with its status."""

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return answer(api, request, exc)

    @api.exception_handler(ValidationError)
    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        # pydantic's errors, located by ninja: body, query, path or header.
        errors = [
            error(_located(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "invalid")))
            for e in exc.errors
        ]
        return api.create_response(request, {"errors": errors}, status=422)

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        cause = exc.__cause__
        if exc.status_code == 400 and cause is not None:
            # ninja's "Cannot parse request body", raised from the parser's error.
            if isinstance(cause, RecursionError):
                reason = "nested too deeply"
            else:
                reason = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
            return answer(
                api,
                request,
                ApiError(
                    400,
                    f"The body is not valid JSON: {reason}.",
                    loc=["body"],
                    type="json_invalid",
                ),
            )
        return answer(api, request, ApiError(exc.status_code, str(exc)))

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return answer(api, request, ApiError(404, "No such alarm.", type="not_found"))

    @api.exception_handler(service.InvalidAlarm)
    def invalid_alarm(request: HttpRequest, exc: service.InvalidAlarm) -> HttpResponse:
        return answer(
            api, request, ApiError(422, str(exc), loc=["body", *exc.field], type="invalid_alarm")
        )

    @api.exception_handler(StormLimitExceeded)
    def storm(request: HttpRequest, exc: StormLimitExceeded) -> HttpResponse:
        headers = {}
        if exc.next_at is not None:
            wait = (exc.next_at - timezone.now()).total_seconds()
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return answer(api, request, ApiError(429, str(exc), type="storm_control", headers=headers))

    api.add_decorator(body_size_limit(api), mode="view")

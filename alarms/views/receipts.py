"""``POST /alarms/seen/`` and ``POST /alarms/dismiss/``: what a user did with their toasts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from alarms import api, events
from alarms.rules import MAX_BATCH
from alarms.translation import supported_language


def _body(request: HttpRequest) -> tuple[Any, Any]:
    """The raw ``ids`` and ``language`` of a JSON or form body."""
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting, too
            raise ValueError("The body is not valid JSON.") from None
        if not isinstance(body, dict):
            return None, None
        return body.get("ids"), body.get("language")
    return request.POST.getlist("ids"), request.POST.get("language")


def _ids(raw: Any) -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("Send a non-empty list of alarm ids as 'ids'.")
    return events.parse_ids(raw, limit=MAX_BATCH)


def _receipt_view(action: Callable[..., int]) -> Callable[[HttpRequest], JsonResponse]:
    @require_POST
    def view(request: HttpRequest) -> JsonResponse:
        if not request.user.is_authenticated:
            return JsonResponse(
                {"error": "Sign in to record alarms; visitors keep them in the browser."},
                status=403,
            )
        try:
            raw_ids, raw_language = _body(request)
            ids = _ids(raw_ids)
        except ValueError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        # The language the client showed the toasts in (its stream's), if it says
        # and the site speaks it; else the request's, as LocaleMiddleware chose it.
        language = supported_language(raw_language) if isinstance(raw_language, str) else None
        return JsonResponse({"updated": action(request.user, ids, language=language)})

    return view


seen = _receipt_view(api.mark_seen)
dismiss = _receipt_view(api.dismiss)

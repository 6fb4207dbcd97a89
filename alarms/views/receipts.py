"""``POST /alarms/seen/`` and ``POST /alarms/dismiss/``: what a user did with their toasts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from alarms import api, events
from alarms.rules import MAX_BATCH


def _ids(request: HttpRequest) -> list[int]:
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting, too
            raise ValueError("The body is not valid JSON.") from None
        raw: Any = body.get("ids") if isinstance(body, dict) else None
    else:
        raw = request.POST.getlist("ids")
    if not isinstance(raw, list) or not raw:
        raise ValueError("Send a non-empty list of alarm ids as 'ids'.")
    return events.parse_ids(raw, limit=MAX_BATCH)


def _receipt_view(action: Callable[[Any, list[int]], int]) -> Callable[[HttpRequest], JsonResponse]:
    @require_POST
    def view(request: HttpRequest) -> JsonResponse:
        if not request.user.is_authenticated:
            return JsonResponse(
                {"error": "Sign in to record alarms; visitors keep them in the browser."},
                status=403,
            )
        try:
            ids = _ids(request)
        except ValueError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse({"updated": action(request.user, ids)})

    return view


seen = _receipt_view(api.mark_seen)
dismiss = _receipt_view(api.dismiss)

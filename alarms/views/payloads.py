"""``GET /alarms/payloads/?ids=3,7&lang=ar``: given alarms as the stream would send them.

A page that switches language must show again, in the new language, every
alarm it shows. The stream cannot do that: its snapshot leaves out what the
user has seen (except critical alarms), and a seen warning may still be on
screen. So each page asks here for the ids it shows. The answer is what the
stream would send this reader now: live alarms they may see and have not
dismissed, each as ``rules.reader_payload`` gives it (what the broker sends).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms import events
from alarms.models import Alarm
from alarms.rules import MAX_BATCH
from alarms.views.stream import stream_language


def _ids(raw: str) -> list[int]:
    parts = raw.split(",") if raw else []
    if not parts:
        raise ValueError("Name the alarms as ids=1,2,3.")
    return events.parse_ids(parts, limit=MAX_BATCH)


@never_cache
@require_GET
def payloads(request: HttpRequest) -> JsonResponse:
    try:
        ids = _ids(request.GET.get("ids", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    language = stream_language(request)
    # The stream's rule: live, visible to this user, not dismissed by them.
    alarms = (
        Alarm.objects.for_user(request.user)
        .filter(pk__in=ids)
        .prefetch_related("translations")
        .order_by("publish_at", "pk")
    )
    found = [a.reader_payload(language) for a in alarms]
    response = JsonResponse({"language": language, "alarms": found})
    response["Content-Language"] = language
    patch_vary_headers(response, ("Cookie", "Accept-Language"))
    return response

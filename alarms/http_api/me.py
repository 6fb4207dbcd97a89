"""The reader's operations: ``GET /me/alarms`` and ``GET /me/unread-count``.

A JSON feed for single-page and mobile clients: the alarm centre's list, visibility,
language and receipts (``alarms.inbox``), for the signed-in session or a personal
token (scope ``me``). Read-only.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from ninja import Query, Router

from alarms import inbox
from alarms.http_api.auth import READER, reader_of
from alarms.http_api.endpoints import errors, neighbours
from alarms.http_api.schemas import MyAlarmPage, MyFilters, UnreadCount
from alarms.models import AlarmReceipt

router = Router(tags=["me"])


def _item(alarm: Any, language: str) -> dict[str, Any]:
    payload = alarm.reader_payload(language)
    return {
        **payload,
        "published_at": alarm.publish_at,
        "expires_at": alarm.expires_at,
        "unread": alarm.unread,
        "seen_at": alarm.seen_at,
        "dismissed_at": alarm.dismissed_at,
    }


@router.get(
    "/me/alarms",
    auth=READER,
    response={200: MyAlarmPage, **errors(401, 403, 413, 422)},
    url_name="me-alarms",
    summary="The user's own alarms, as the alarm centre lists them",
)
def my_alarms(
    request: HttpRequest, response: HttpResponse, filters: Query[MyFilters]
) -> dict[str, Any]:
    """The signed-in session, or a personal token (scope `me`). Unread alarms
    first, then the newest first: live and expired ones the user may see, never
    withdrawn or scheduled ones. Paged by `limit` (at most 200) and `offset`."""
    user = reader_of(request)
    language = inbox.reader_language(request, user, filters.lang)
    found = inbox.filtered(
        inbox.history(user), level=filters.level, text=filters.q or "", language=language
    )
    count = found.count()
    page = found.prefetch_related("translations")[filters.offset : filters.offset + filters.limit]
    _private(response)
    return {
        "count": count,
        "language": language,
        **neighbours(request, filters.offset, filters.limit, count),
        "items": [_item(alarm, language) for alarm in page if alarm.translations.all()],
    }


@router.get(
    "/me/unread-count",
    auth=READER,
    response={200: UnreadCount, **errors(401, 403, 413)},
    url_name="me-unread-count",
    summary="How many of the user's alarms are unread: the badge's count",
)
def unread_count(request: HttpRequest, response: HttpResponse) -> dict[str, int]:
    """The signed-in session, or a personal token (scope `me`). Unread: live now,
    visible to the user, not dismissed by them. `unseen`: of those, the ones the
    user was never shown (no seen receipt)."""
    user = reader_of(request)
    unread = inbox.unread(user).order_by()
    seen = AlarmReceipt.objects.filter(
        alarm_id=OuterRef("pk"), user_id=user.pk, seen_at__isnull=False
    )
    _private(response)
    return {"unread": unread.count(), "unseen": unread.filter(~Exists(seen)).count()}


def _private(response: HttpResponse) -> None:
    # One user's answer, by cookie or token: no shared cache may keep it.
    response["Cache-Control"] = "private, no-store"
    patch_vary_headers(response, ("Cookie", "Authorization", "Accept-Language"))

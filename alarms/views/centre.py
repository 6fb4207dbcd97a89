"""``/alarms/``: a signed-in user's alarm centre: live alarms first, then earlier ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from alarms import api, events, preferences
from alarms.conf import get_config
from alarms.models import Alarm, AlarmReceipt, Level

if TYPE_CHECKING:
    from django.contrib.auth.models import User

EARLIER_LIMIT = 50
UNREAD_LIMIT = 200


@dataclass(frozen=True)
class Entry:
    """One alarm as this reader sees it (``rules.reader_payload``), and its state."""

    id: int
    level: str
    level_label: str
    title: str
    message: str
    language: str
    dir: str
    url: str
    published_at: datetime
    expires_at: datetime | None
    state: str  # "unread", "dismissed" or "expired"
    dismissed_at: datetime | None
    # Below the reader's mute floor: listed here, never toasted (alarms.preferences).
    muted: bool = False


def entries(
    alarms: list[Alarm],
    language: str,
    receipts: dict[int, AlarmReceipt],
    state: str,
    mute_below: str = "",
) -> list[Entry]:
    labels = dict(Level.choices)
    result = []
    for alarm in alarms:
        if not alarm.translations.all():
            continue
        payload = alarm.reader_payload(language)
        receipt = receipts.get(alarm.pk)
        dismissed_at = receipt.dismissed_at if receipt else None
        result.append(
            Entry(
                id=alarm.pk,
                level=alarm.level,
                level_label=str(labels.get(alarm.level, alarm.level)),
                title=payload["title"],
                message=payload["message"],
                language=payload["language"],
                dir=payload["dir"],
                url=payload["url"],
                # The times as datetimes, for the template's date filter.
                published_at=alarm.publish_at,
                expires_at=alarm.expires_at,
                state="dismissed" if state != "unread" and dismissed_at else state,
                dismissed_at=dismissed_at,
                muted=preferences.is_muted(alarm.level, mute_below),
            )
        )
    return result


@login_required
@require_http_methods(["GET", "POST"])
def centre(request: HttpRequest) -> HttpResponse:
    user = cast("User", request.user)  # signed in: @login_required
    if request.method == "POST":
        return _dismiss(request)
    unread_qs = Alarm.objects.for_user(user)
    unread = list(unread_qs.prefetch_related("translations")[:UNREAD_LIMIT])
    earlier = list(
        Alarm.objects.visible_to(user)
        .published()
        .exclude(pk__in=unread_qs.values("pk"))
        .prefetch_related("translations")[:EARLIER_LIMIT]
    )
    receipts = {
        r.alarm_id: r
        for r in AlarmReceipt.objects.filter(
            user=user, alarm_id__in=[a.pk for a in unread + earlier]
        )
    }
    language = translation.get_language() or ""
    # The centre lists muted alarms too, marked: mute is about interruptions.
    prefs = preferences.for_request(request)
    floor = prefs.mute_below if prefs is not None else ""
    context: dict[str, Any] = {
        "unread": entries(unread, language, receipts, "unread", floor),
        "earlier": entries(earlier, language, receipts, "expired", floor),
        # alarms/base.html extends it; None there means the app's standalone page.
        "alarms_base_template": get_config()["BASE_TEMPLATE"],
    }
    return render(request, "alarms/centre.html", context)


def _dismiss(request: HttpRequest) -> HttpResponse:
    if "dismiss_all" in request.POST:
        ids = list(Alarm.objects.for_user(request.user).values_list("pk", flat=True))
    else:
        try:
            ids = [events.parse_id(request.POST.get("dismiss", ""))]
        except events.InvalidId as exc:
            return HttpResponseBadRequest(f"Not an alarm id. {exc}")
    count = api.dismiss(request.user, ids) if ids else 0
    if count:
        messages.success(
            request,
            ngettext("Dismissed %(count)d alarm.", "Dismissed %(count)d alarms.", count)
            % {"count": count},
        )
    return redirect("alarms:centre")

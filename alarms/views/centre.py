"""``/alarms/``: a signed-in user's alarm centre: unread alarms first, then earlier ones.

Paged on the server, searchable and filtered by level with a plain GET form, so it
works without JavaScript. What it lists, in which language, and what "unread" means
are ``alarms.inbox``'s, which the JSON feed (``/alarms/api/v1/me/alarms``) shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from alarms import api, events, inbox, preferences
from alarms.conf import get_config
from alarms.models import Alarm, Level

if TYPE_CHECKING:
    from django.contrib.auth.models import User

#: The page sizes a reader may choose; the first larger than the default is the cap.
PAGE_SIZES = (10, 25, 50, 100)
DEFAULT_PAGE_SIZE = 25


class Filters(forms.Form):
    """The centre's GET form: search, level, page size (the page number is apart)."""

    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=inbox.MAX_SEARCH,
        strip=True,
        widget=forms.TextInput(attrs={"type": "search", "id": "alarms-search"}),
    )
    level = forms.ChoiceField(
        label=_("Level"),
        required=False,
        choices=[("", _("All levels")), *Level.choices],
        widget=forms.Select(attrs={"id": "alarms-level"}),
    )
    size = forms.TypedChoiceField(
        label=_("Per page"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=[(n, str(n)) for n in PAGE_SIZES],
        widget=forms.Select(attrs={"id": "alarms-size"}),
    )

    def values(self) -> dict[str, Any]:
        """The valid filters (an invalid one is left out, and shown as an error)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {
            "q": data.get("q") or "",
            "level": data.get("level") or "",
            "size": data.get("size") or DEFAULT_PAGE_SIZE,
        }


def _query(values: dict[str, Any], **extra: Any) -> str:
    """A query string of the filters that differ from the defaults (and ``extra``)."""
    pairs = [
        (name, value)
        for name, value in {**values, **extra}.items()
        if value not in ("", None) and not (name == "size" and value == DEFAULT_PAGE_SIZE)
    ]
    return urlencode(pairs)


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
    seen_at: datetime | None
    dismissed_at: datetime | None
    # Below the reader's mute floor: listed here, never toasted (alarms.preferences).
    muted: bool = False


def entries(alarms: list[Alarm], language: str, mute_below: str = "") -> list[Entry]:
    """``inbox.history`` rows (with their annotations) as this reader sees them;
    those below ``mute_below`` marked muted."""
    labels = dict(Level.choices)
    result = []
    for alarm in alarms:
        if not alarm.translations.all():
            continue
        payload = alarm.reader_payload(language)
        dismissed_at = getattr(alarm, "dismissed_at", None)
        if getattr(alarm, "unread", False):
            state = "unread"
        else:
            state = "dismissed" if dismissed_at else "expired"
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
                state=state,
                seen_at=getattr(alarm, "seen_at", None),
                dismissed_at=dismissed_at,
                muted=preferences.is_muted(alarm.level, mute_below),
            )
        )
    return result


@login_required
@require_http_methods(["GET", "POST"])
def centre(request: HttpRequest) -> HttpResponse:
    user = cast("User", request.user)  # signed in: @login_required
    # The filters are in the query string, for a POST too: its forms post to the
    # page's own address, so "mark all as read" acts on what the page lists.
    form = Filters(request.GET or None)
    values = form.values()
    language = inbox.reader_language(request, user)
    found = inbox.filtered(
        inbox.history(user), level=values["level"], text=values["q"], language=language
    )
    if request.method == "POST":
        return _post(request, found, values, language)
    paginator = Paginator(found.prefetch_related("translations"), values["size"])
    page = paginator.get_page(request.GET.get("page"))
    # The centre lists muted alarms too, marked: mute is about interruptions.
    prefs = preferences.for_request(request)
    floor = prefs.mute_below if prefs is not None else ""
    shown = entries(list(page.object_list), language, floor)
    unread_count = inbox.filtered(
        inbox.unread(user), level=values["level"], text=values["q"], language=language
    ).count()
    last = page.number == paginator.num_pages
    context: dict[str, Any] = {
        "unread": [e for e in shown if e.state == "unread"],
        "earlier": [e for e in shown if e.state != "unread"],
        "unread_count": unread_count,
        # A section shows on the pages that hold its alarms; an empty one on the
        # page where it would begin.
        "show_unread": page.number == 1 or any(e.state == "unread" for e in shown),
        "show_earlier": any(e.state != "unread" for e in shown)
        or (last and paginator.count == unread_count),
        "form": form,
        "page_obj": page,
        "pages": _pages(page, values),
        "filtering": bool(values["q"] or values["level"]),
        # alarms/base.html extends it; None there means the app's standalone page.
        "alarms_base_template": get_config()["BASE_TEMPLATE"],
    }
    return render(request, "alarms/centre.html", context, status=400 if form.errors else 200)


def _pages(page: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The pager's links: previous, numbered (elided), next; each keeps the filters."""

    def url(number: int) -> str:
        return "?" + _query(values, page=number if number > 1 else None)

    paginator = page.paginator
    numbered = [
        {
            "number": n,
            "url": None if n == paginator.ELLIPSIS else url(int(n)),
            "current": n == page.number,
        }
        for n in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)
    ]
    return {
        "previous": url(page.previous_page_number()) if page.has_previous() else None,
        "next": url(page.next_page_number()) if page.has_next() else None,
        "numbered": numbered if paginator.num_pages > 1 else [],
    }


def _post(request: HttpRequest, found: Any, values: dict[str, Any], language: str) -> HttpResponse:
    if "dismiss_all" in request.POST:
        # "Mark all as read": every unread alarm that matches the filters posted
        # with it (all of them without filters), on every page.
        count = inbox.mark_all_read(request.user, found, language=language)
    else:
        try:
            ids = [events.parse_id(request.POST.get("dismiss", ""))]
        except events.InvalidId as exc:
            return HttpResponseBadRequest(f"Not an alarm id. {exc}")
        count = api.dismiss(request.user, ids, language=language)
    if count:
        messages.success(
            request,
            ngettext("Dismissed %(count)d alarm.", "Dismissed %(count)d alarms.", count)
            % {"count": count},
        )
    query = _query(values, page=request.GET.get("page") or None)
    return redirect(reverse("alarms:centre") + (f"?{query}" if query else ""))

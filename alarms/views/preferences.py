"""A signed-in reader's preferences: their page, the site's language menu, and
the time zone their browser detects.

``/alarms/preferences/`` is a plain form (it works without JavaScript). The
language menu of a site posts to Django's ``set_language``; a project points
that URL at :func:`set_language` here, which runs Django's view and stores the
choice of a signed-in user, so it follows them to every device. Every write
goes through ``alarms.preferences`` (``store``/``update``), which ends the
user's open streams so that they reconnect with the new choice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views import i18n
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from alarms import preferences
from alarms.conf import get_config
from alarms.forms import PreferencesForm
from alarms.models import Preferences
from alarms.translation import supported_language

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def page(request: HttpRequest) -> HttpResponse:
    user = cast("User", request.user)  # signed in: @login_required
    prefs = preferences.for_request(request) or Preferences(user=user)
    if request.method == "POST":
        form = PreferencesForm(request.POST, instance=prefs)
        if form.is_valid():
            preferences.store(form.save(commit=False), form.changed_data)
            messages.success(request, _("Your preferences are saved."))
            response = redirect("alarms:preferences")
            if form.cleaned_data["language"]:
                # Anonymous pages of this browser (after signing out) keep it too.
                _set_language_cookie(response, form.cleaned_data["language"])
            return response
        status = 400
    else:
        form = PreferencesForm(instance=prefs)
        status = 200
    context: dict[str, Any] = {
        "form": form,
        "alarms_base_template": get_config()["BASE_TEMPLATE"],
    }
    return render(request, "alarms/preferences.html", context, status=status)


def set_language(request: HttpRequest) -> HttpResponseBase:
    """Django's ``set_language``, and for a signed-in user, the choice stored.

    Route the project's ``set_language`` URL here (docs/preferences.md): the
    stored language then follows the user to every device, and the menu keeps
    working for them, since a stored language outranks the cookie.
    """
    response = i18n.set_language(request)
    if request.method == "POST" and getattr(request.user, "is_authenticated", False):
        code = supported_language(request.POST.get(i18n.LANGUAGE_QUERY_PARAMETER))
        # Django's view sets the cookie only for a language it would activate.
        if code and translation.check_for_language(code):
            preferences.update(request.user, language=code)
    return response


@require_POST
def detected_time_zone(request: HttpRequest) -> JsonResponse:
    """``POST /alarms/preferences/time-zone/`` ``{"time_zone": "Asia/Seoul"}``: the
    zone the browser detected, stored once, when the user has none."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Sign in to store a time zone."}, status=403)
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return JsonResponse({"error": "The body is not valid JSON."}, status=400)
    zone = body.get("time_zone") if isinstance(body, dict) else None
    if not isinstance(zone, str) or not preferences.valid_time_zone(zone):
        return JsonResponse({"error": "Send an IANA time zone name as 'time_zone'."}, status=400)
    prefs = preferences.for_user(request.user)
    if prefs is not None and prefs.time_zone:
        return JsonResponse({"time_zone": prefs.time_zone, "stored": False})
    # No journal row: the user's open pages need not reload for it.
    preferences.update(request.user, announce=False, time_zone=zone)
    return JsonResponse({"time_zone": zone, "stored": True})


def _set_language_cookie(response: HttpResponse, code: str) -> None:
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        code,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )

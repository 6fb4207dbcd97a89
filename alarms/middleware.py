"""Middleware a project may use: Django's locale middleware, understanding more
tags, and a signed-in user's stored language and time zone."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.http import HttpRequest, HttpResponseBase
from django.middleware.locale import LocaleMiddleware as DjangoLocaleMiddleware
from django.utils import timezone, translation
from django.utils.deprecation import MiddlewareMixin

from alarms import preferences
from alarms.translation import request_language, supported_language


class LocaleMiddleware(DjangoLocaleMiddleware):
    """Django's ``LocaleMiddleware``, understanding the tags browsers and old clients send.

    Django reads ``Accept-Language: pt_BR`` or ``iw`` (Hebrew's withdrawn code,
    still sent by old Android and Java clients) as no language at all and serves
    ``LANGUAGE_CODE``; a header with one such tag is dropped whole. This takes the
    language the way ``alarms.translation.supported_language`` reads a tag, so
    pages, their toasts and the stream agree. A language in the URL's prefix is
    still Django's to decide.
    """

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        urlconf = getattr(request, "urlconf", settings.ROOT_URLCONF)
        i18n_patterns_used, prefixed_default_language = is_language_prefix_patterns_used(urlconf)
        if i18n_patterns_used and (
            translation.get_language_from_path(request.path_info) or not prefixed_default_language
        ):
            return
        language = request_language(request)
        if language != request.LANGUAGE_CODE:
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()


#: Set on a view that reads the user's preferences itself (the stream: its
#: broker reads them with the user, in its own batched queries).
EXEMPT_ATTR = "alarms_preferences_read_by_broker"

V = TypeVar("V", bound=Callable[..., Any])

_ZONE_ACTIVATED = "_alarms_zone_activated"


def preferences_read_by_broker(view: V) -> V:
    """Leave ``view`` alone in :class:`PreferencesMiddleware` (no query for it)."""
    setattr(view, EXEMPT_ATTR, True)
    return view


class PreferencesMiddleware(MiddlewareMixin):
    """A signed-in user's stored language and time zone, on every page they open.

    Add it after ``LocaleMiddleware`` and ``AuthenticationMiddleware``. For a
    signed-in user with a stored language it activates that language (over the
    cookie and Accept-Language; a language in the URL's prefix still wins),
    and with a stored time zone it activates that zone, so templates, the
    admin's forms and the alarm centre show and read times in it. Anonymous
    visitors keep Django's behaviour. One query per request, on the request's
    first need of the user; the stream is left to its broker.

    It works in ``process_view``: the user is known by then, whatever the
    order of the middleware, and the stream view can be told apart.
    """

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: Any,
        view_kwargs: Any,
    ) -> None:
        if getattr(view_func, EXEMPT_ATTR, False):
            return
        prefs = preferences.for_request(request)
        if prefs is None:
            return
        if prefs.time_zone and preferences.valid_time_zone(prefs.time_zone):
            timezone.activate(zoneinfo.ZoneInfo(prefs.time_zone))
            setattr(request, _ZONE_ACTIVATED, True)
        language = supported_language(prefs.language) if prefs.language else None
        if language and not _language_in_path(request):
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        # The zone is the thread's (or the task's) until deactivated: the next
        # request must not inherit it.
        if getattr(request, _ZONE_ACTIVATED, False):
            timezone.deactivate()
        return response


def _language_in_path(request: HttpRequest) -> bool:
    urlconf = getattr(request, "urlconf", settings.ROOT_URLCONF)
    i18n_patterns_used, _prefixed_default = is_language_prefix_patterns_used(urlconf)
    return i18n_patterns_used and bool(translation.get_language_from_path(request.path_info))

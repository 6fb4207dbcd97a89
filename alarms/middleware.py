"""Middleware a project may use in place of Django's own."""

from __future__ import annotations

from django.conf import settings
from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.http import HttpRequest
from django.middleware.locale import LocaleMiddleware as DjangoLocaleMiddleware
from django.utils import translation

from alarms.translation import request_language


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

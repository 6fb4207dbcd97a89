"""``{% alarms_toasts %}`` and ``{% alarms_badge %}``: thin tags over pure HTML builders."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

from django import template
from django.conf import settings
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import reverse
from django.utils import translation
from django.utils.crypto import salted_hmac
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext, ngettext, trans_real

from alarms import preferences
from alarms.cors import normalise_origin
from alarms.models import Alarm, Level, Preferences

try:  # Django 6.0+: its ContentSecurityPolicyMiddleware keeps the nonce on the request.
    from django.middleware.csp import get_nonce as _django_nonce
except ImportError:  # Django 5.2 has no CSP of its own (django-csp sets request.csp_nonce).
    _django_nonce = None

register = template.Library()

REGION_ID = "alarms-region"
BADGE_LIMIT = 100

BELL = (
    '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">'
    '<path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/>'
    '<path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>'
)


# Gettext's rule when a catalogue names none, which Django's ngettext then follows.
GERMANIC = "n != 1"
# A count the client shows ("+N more") is below this; a plural form that no
# smaller count selects (Czech's for fractions, French's for millions) is sent
# as None, and the client takes the last form for it.
PLURAL_SEARCH = 1000


def plural_rule() -> tuple[str, int, Callable[[int], int]]:
    """The active language's Plural-Forms rule: its C expression, nplurals, and the rule itself.

    The client picks a plural form with the same rule Django's ngettext uses
    on the server, for any count: the catalogue's own expression, which
    the client evaluates (JavaScriptCatalog sends it as code; this app sends
    data, for a strict CSP). Read from the translation Django uses for the
    language (GNUTranslations.info()); without I18N, Django's ngettext is
    English's.
    """
    if not settings.USE_I18N:
        return GERMANIC, 2, lambda n: int(n != 1)
    catalogue = trans_real.translation(translation.get_language() or settings.LANGUAGE_CODE)
    header = dict(
        part.strip().split("=", 1)
        for part in catalogue.info().get("plural-forms", "").split(";")
        if "=" in part
    )
    expression = header.get("plural", "").strip() or GERMANIC
    try:
        count = int(header.get("nplurals", ""))
    except ValueError:
        count = 2
    return expression, count, catalogue.plural


def plural_samples(count: int, rule: Callable[[int], int]) -> list[int | None]:
    """For each plural form, the smallest count that selects it (None if none below the search)."""
    first: dict[int, int] = {}
    for n in range(PLURAL_SEARCH):
        first.setdefault(int(rule(n)), n)
    return [first.get(index) for index in range(count)]


def labels() -> dict[str, Any]:
    """The client's words, in the page's language; plural words as a list of forms."""
    _expression, count, rule = plural_rule()
    samples = plural_samples(count, rule)
    return {
        "region": gettext("Alarms"),
        "dismiss": gettext("Dismiss"),
        "open": gettext("Open"),
        # Every form, in the catalogue's order, from Django's catalogue.
        "more": [
            None if n is None else ngettext("+%(count)s more", "+%(count)s more", n)
            for n in samples
        ],
        "fewer": gettext("Show fewer"),
        # The mark on an operator's test of an alarm (the admin's "Send a test to me").
        "test": gettext("Test"),
        # The level names the models already translate.
        **{level: str(name) for level, name in Level.choices},
    }


def _nonce(nonce: str | None) -> SafeString | str:
    return format_html(' nonce="{}"', nonce) if nonce else ""


def csp_nonce(context: template.Context, request: Any) -> str | None:
    """The nonce of the host's Content-Security-Policy for this response, if it uses one.

    Django 6's own (``csp_nonce`` from its ``csp`` context processor, else the
    request's) or django-csp's ``request.csp_nonce`` on Django 5.2. All are
    lazy: false until read, and only a nonce that was read goes into the
    header. So they are compared with None and read with str(), never tested
    for truth.
    """
    found = [context.get("csp_nonce"), getattr(request, "csp_nonce", None)]
    if _django_nonce is not None:
        found.append(_django_nonce(request))
    for nonce in found:
        if nonce is not None and str(nonce):
            return str(nonce)
    return None


def toasts_html(
    *,
    css_url: str,
    js_url: str,
    stream_url: str,
    seen_url: str,
    dismiss_url: str,
    payloads_url: str = "",
    csrf_token: str,
    csrf_cookie: str,
    language: str,
    authenticated: bool,
    scope: str,
    words: Mapping[str, Any],
    plural_expression: str = GERMANIC,
    auto_hide: int = 6000,
    max_visible: int = 3,
    nonce: str | None = None,
    desktop_from: str = Level.CRITICAL,
    stored_language: str = "",
    time_zone: str = "",
    zone_url: str = "",
    preferences_version: int = 0,
) -> SafeString:
    """The stylesheet, the (empty) toast region and the data-configured module script.

    ``desktop_from``: the lowest level that raises a desktop notification
    (an unknown one counts as critical). ``stored_language`` and ``time_zone``:
    the signed-in user's stored choices ("" for none), which the client compares
    with those a ``prefs`` event brings; ``zone_url``: where it stores the zone it
    detects, given only while none is; ``preferences_version``: when they were
    saved (ms), so that of two pages the client knows which saw the newer ones.
    """
    if desktop_from not in preferences.LEVEL_ORDER:
        desktop_from = Level.CRITICAL
    return format_html(
        '<link rel="stylesheet" href="{css}"{nonce}>'
        '<div class="alarms-region" id="{region}" aria-label="{region_label}"></div>'
        '<script type="module" src="{js}"{nonce}'
        ' data-stream-url="{stream}" data-seen-url="{seen}" data-dismiss-url="{dismiss}"'
        ' data-payloads-url="{payloads}"'
        ' data-csrf-token="{csrf}" data-csrf-cookie="{csrf_cookie}" data-language="{lang}"'
        ' data-authenticated="{auth}" data-scope="{scope}" data-auto-hide="{auto_hide}"'
        ' data-max-visible="{max_visible}" data-region="{region}" data-labels="{labels}"'
        ' data-plural-rule="{plural_rule}" data-desktop-from="{desktop_from}"'
        ' data-stored-language="{stored_language}"'
        ' data-time-zone="{time_zone}" data-zone-url="{zone_url}"'
        ' data-preferences-version="{preferences_version}"></script>',
        css=css_url,
        js=js_url,
        nonce=_nonce(nonce),
        region=REGION_ID,
        region_label=words.get("region", ""),
        stream=stream_url,
        seen=seen_url,
        dismiss=dismiss_url,
        payloads=payloads_url,
        csrf=csrf_token,
        csrf_cookie=csrf_cookie,
        lang=language,
        auth="true" if authenticated else "false",
        scope=scope,
        auto_hide=int(auto_hide),
        max_visible=int(max_visible),
        labels=json.dumps(dict(words), ensure_ascii=False, sort_keys=True),
        plural_rule=plural_expression,
        desktop_from=desktop_from,
        stored_language=stored_language,
        time_zone=time_zone,
        zone_url=zone_url,
        preferences_version=int(preferences_version),
    )


def badge_html(*, url: str, ids: Iterable[int], label: str) -> SafeString:
    """A bell linking to the alarm centre; the script keeps its count live."""
    ids = list(ids)
    count = len(ids)
    return format_html(
        '<a class="alarms-badge{empty}" href="{url}" data-alarms-badge data-ids="{ids}"'
        ' data-count="{count}">{bell}<span class="alarms-badge-count">{text}</span>'
        '<span class="alarms-visually-hidden">{label}</span></a>',
        empty=" alarms-badge--empty" if not count else "",
        url=url,
        ids=",".join(str(int(i)) for i in ids),
        count=count,
        bell=mark_safe(BELL),  # a constant, no user input
        text="99+" if count > 99 else count,
        label=label,
    )


def user_scope(user: Any) -> str:
    """Names this user's shared browser state (leader lock, channel, storage); not reversible."""
    if not getattr(user, "is_authenticated", False):
        return "anon"
    return salted_hmac("alarms.scope", str(user.pk), algorithm="sha256").hexdigest()[:20]


def desktop_floor(prefs: Preferences | None) -> str:
    """The lowest level that raises a desktop notification for the reader whose
    preferences these are (``preferences.for_request``, read once per request):
    critical for an anonymous user or one who saved no preferences.
    """
    return prefs.desktop_from if prefs is not None and prefs.desktop_from else Level.CRITICAL


def endpoint(name: str, origin: str = "") -> str:
    """The URL of an alarm endpoint, on ``origin`` when the alarms are served from another one."""
    path = reverse(name)
    return urljoin(origin + "/", path) if origin else path


@register.simple_tag(takes_context=True)
def alarms_toasts(
    context: template.Context, auto_hide: int = 6000, max_visible: int = 3, origin: str = ""
) -> str:
    """``origin="https://alarms.example.com"``: stream and receipts from that server (CORS).

    That server must list this site's origin in ``ALARMS["CORS_ALLOWED_ORIGINS"]``;
    the script then sends credentials by CORS and no CSRF token.
    """
    if origin and normalise_origin(origin) is None:
        raise ValueError(f"alarms_toasts: origin must be scheme://host[:port], not {origin!r}.")
    request = context.get("request")
    if request is None:
        return ""
    user = getattr(request, "user", None)
    prefs = preferences.for_request(request)
    zone = prefs.time_zone if prefs is not None else ""
    signed_in = bool(getattr(user, "is_authenticated", False))
    return toasts_html(
        css_url=static("alarms/alarms.css"),
        js_url=static("alarms/alarms.js"),
        stream_url=endpoint("alarms:stream", origin),
        seen_url=endpoint("alarms:seen", origin),
        dismiss_url=endpoint("alarms:dismiss", origin),
        payloads_url=endpoint("alarms:payloads", origin),
        # Another origin needs no token from this one (nor a CSRF cookie set for it).
        csrf_token="" if origin else get_token(request),
        csrf_cookie="" if origin or settings.CSRF_USE_SESSIONS else settings.CSRF_COOKIE_NAME,
        language=translation.get_language() or settings.LANGUAGE_CODE,
        authenticated=bool(getattr(user, "is_authenticated", False)),
        scope=user_scope(user),
        words=labels(),
        plural_expression=plural_rule()[0],
        auto_hide=auto_hide,
        max_visible=max_visible,
        nonce=csp_nonce(context, request),
        desktop_from=desktop_floor(prefs),
        stored_language=prefs.language if prefs is not None else "",
        time_zone=zone,
        # Detected in the browser and stored once; another origin's session is not this one's.
        zone_url="" if origin or zone or not signed_in else reverse("alarms:preferences_time_zone"),
        preferences_version=int(prefs.updated_at.timestamp() * 1000) if prefs is not None else 0,
    )


@register.simple_tag(takes_context=True)
def alarms_badge(context: template.Context) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False):
        return ""
    ids = Alarm.objects.for_user(user).order_by().values_list("pk", flat=True)[:BADGE_LIMIT]
    return badge_html(url=reverse("alarms:centre"), ids=ids, label=gettext("Unread alarms"))

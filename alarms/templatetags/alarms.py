"""``{% alarms_toasts %}`` and ``{% alarms_badge %}``: thin tags over pure HTML builders."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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
from django.utils.translation import gettext

from alarms.cors import normalise_origin
from alarms.models import Alarm, Level

register = template.Library()

REGION_ID = "alarms-region"
BADGE_LIMIT = 100

BELL = (
    '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">'
    '<path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/>'
    '<path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>'
)


def labels() -> dict[str, str]:
    """The client's words, in the page's language."""
    return {
        "region": gettext("Alarms"),
        "dismiss": gettext("Dismiss"),
        "open": gettext("Open"),
        "more": gettext("+%(count)s more"),
        "fewer": gettext("Show fewer"),
        # The level names the models already translate.
        **{level: str(name) for level, name in Level.choices},
    }


def _nonce(nonce: str | None) -> SafeString | str:
    return format_html(' nonce="{}"', nonce) if nonce else ""


def toasts_html(
    *,
    css_url: str,
    js_url: str,
    stream_url: str,
    seen_url: str,
    dismiss_url: str,
    csrf_token: str,
    csrf_cookie: str,
    language: str,
    authenticated: bool,
    scope: str,
    words: Mapping[str, str],
    auto_hide: int = 6000,
    max_visible: int = 3,
    nonce: str | None = None,
) -> SafeString:
    """The stylesheet, the (empty) toast region and the deferred, data-configured script."""
    return format_html(
        '<link rel="stylesheet" href="{css}"{nonce}>'
        '<div class="alarms-region" id="{region}" aria-label="{region_label}"></div>'
        '<script src="{js}" defer{nonce}'
        ' data-stream-url="{stream}" data-seen-url="{seen}" data-dismiss-url="{dismiss}"'
        ' data-csrf-token="{csrf}" data-csrf-cookie="{csrf_cookie}" data-language="{lang}"'
        ' data-authenticated="{auth}" data-scope="{scope}" data-auto-hide="{auto_hide}"'
        ' data-max-visible="{max_visible}" data-region="{region}" data-labels="{labels}"></script>',
        css=css_url,
        js=js_url,
        nonce=_nonce(nonce),
        region=REGION_ID,
        region_label=words.get("region", ""),
        stream=stream_url,
        seen=seen_url,
        dismiss=dismiss_url,
        csrf=csrf_token,
        csrf_cookie=csrf_cookie,
        lang=language,
        auth="true" if authenticated else "false",
        scope=scope,
        auto_hide=int(auto_hide),
        max_visible=int(max_visible),
        labels=json.dumps(dict(words), ensure_ascii=False, sort_keys=True),
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
    return toasts_html(
        css_url=static("alarms/alarms.css"),
        js_url=static("alarms/alarms.js"),
        stream_url=endpoint("alarms:stream", origin),
        seen_url=endpoint("alarms:seen", origin),
        dismiss_url=endpoint("alarms:dismiss", origin),
        # Another origin needs no token from this one (nor a CSRF cookie set for it).
        csrf_token="" if origin else get_token(request),
        csrf_cookie="" if origin or settings.CSRF_USE_SESSIONS else settings.CSRF_COOKIE_NAME,
        language=translation.get_language() or settings.LANGUAGE_CODE,
        authenticated=bool(getattr(user, "is_authenticated", False)),
        scope=user_scope(user),
        words=labels(),
        auto_hide=auto_hide,
        max_visible=max_visible,
        nonce=getattr(request, "csp_nonce", None),
    )


@register.simple_tag(takes_context=True)
def alarms_badge(context: template.Context) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False):
        return ""
    ids = Alarm.objects.for_user(user).order_by().values_list("pk", flat=True)[:BADGE_LIMIT]
    return badge_html(url=reverse("alarms:centre"), ids=ids, label=gettext("Unread alarms"))

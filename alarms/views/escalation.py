"""``/alarms/email/<token>/``: the link of an escalation email (``alarms.escalation``).

GET only shows the alarm and asks; POST records. Mail scanners and link
previews fetch every link of a message (GET, never POST): had GET recorded,
a scanner would mark the alarm seen before its reader ever opened the mail.

The signed token is the credential, not the session: the link works in a
browser where the reader is not signed in. So the form carries no CSRF token
(a forger would need the token, and could then only record the token's own
reader's receipt). Someone signed in as another user is refused, so that a
forwarded mail does not record for the wrong account unnoticed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from alarms import api
from alarms.conf import ESCALATE_DEFAULTS, escalate_config, get_config
from alarms.escalation import read_token, user_language
from alarms.models import Alarm, AlarmReceipt
from alarms.views.centre import entries

STATUS = {"invalid": 404, "expired": 410, "other_user": 403, "ended": 410}


@never_cache
@csrf_exempt
@require_http_methods(["GET", "POST"])
def seen(request: HttpRequest, token: str) -> HttpResponse:
    config = escalate_config() or ESCALATE_DEFAULTS
    state, user, alarm = _resolve(request, token, timedelta(days=config["LINK_DAYS"]))
    # The reader's own language when the token names them; else the request's.
    language = user_language(user) if user is not None else translation.get_language()
    with translation.override(language):
        if state == "ask" and user is not None and alarm is not None:
            if request.method == "POST":
                action = request.POST.get("action")
                if action not in ("seen", "dismiss"):
                    state = "bad_action"
                else:
                    record = api.dismiss if action == "dismiss" else api.mark_seen
                    record(user, [alarm.pk], language=language)
                    state = _receipt_state(user, alarm) or "ended"
            else:
                state = _receipt_state(user, alarm) or "ask"
        if state == "bad_action":
            response = HttpResponse(_("Send action=seen or action=dismiss."), status=400)
        else:
            response = render(
                request,
                "alarms/email_seen.html",
                {
                    "state": state,
                    "entry": _entry(alarm, language) if alarm is not None else None,
                    "alarms_base_template": get_config()["BASE_TEMPLATE"],
                },
                status=STATUS.get(state, 200),
            )
    # The token is in the address: no search engine, no Referer to the alarm's link.
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _resolve(request: HttpRequest, token: str, max_age: timedelta) -> tuple[str, Any, Alarm | None]:
    """The state of a link ("ask", or why not), its user and its alarm."""
    try:
        user_id, alarm_id = read_token(token, max_age)
    except signing.SignatureExpired:
        return "expired", None, None
    except signing.BadSignature:
        return "invalid", None, None
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    # Only an alarm the reader may still see: a forwarded link, or one to a reader
    # since taken out of the audience, shows no later edit of it.
    alarm = (
        Alarm.objects.visible_to(user).filter(pk=alarm_id).prefetch_related("translations").first()
        if user is not None
        else None
    )
    if user is None or alarm is None:
        return "invalid", None, None
    if request.user.is_authenticated and request.user.pk != user.pk:
        return "other_user", None, None
    if not Alarm.objects.live().filter(pk=alarm.pk).exists():
        return "ended", user, alarm
    return "ask", user, alarm


def _receipt_state(user: Any, alarm: Alarm) -> str | None:
    receipt = AlarmReceipt.objects.filter(user=user, alarm=alarm).first()
    if receipt is None:
        return None
    if receipt.dismissed_at is not None:
        return "dismissed"
    return "seen" if receipt.seen_at is not None else None


def _entry(alarm: Alarm, language: str) -> Any:
    # The page shows the alarm's text, level and direction, not its state.
    found = entries([alarm], language)
    return found[0] if found else None

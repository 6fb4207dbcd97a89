"""The operator's tools in the alarm form: "Send a test to me", and the live reach.

Both take the form as it stands, unsaved: the test send posts the whole form
(translations inline included) and validates it as a save would; the reach
takes the audience and the languages typed so far. The live preview needs no
request: ``static/alarms/admin.js`` applies the fallback rule itself
(``client/language.js``, tested against ``alarms.translation``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.utils import unquote
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext, ngettext

from alarms import journal, reach, rules
from alarms.events import InvalidId, parse_ids
from alarms.forms import language_name
from alarms.models import Alarm

if TYPE_CHECKING:
    from alarms.admin import AlarmAdmin

#: Users and groups a reach request may name (each).
MAX_TARGETS = 1000


def _error(status: int, *messages: str) -> JsonResponse:
    return JsonResponse({"errors": list(messages)}, status=status)


def test_send(admin: AlarmAdmin, request: HttpRequest) -> JsonResponse:
    """POST the alarm form (``?object=<id>`` for a saved alarm) and ``test_language``
    ("" for every translation): the alarm as it stands goes to the operator's own
    open pages, marked as a test. Nothing is saved but one ``test`` journal row."""
    if request.method != "POST":
        return _error(405, gettext("Send the form with POST."))
    object_id = request.GET.get("object", "")
    obj: Alarm | None = None
    if object_id:
        obj = admin.get_object(request, unquote(object_id))
        if obj is None:
            return _error(404, gettext("This alarm no longer exists."))
        if not admin.has_change_permission(request, obj):
            return _error(403, gettext("You may not change this alarm."))
    elif not admin.has_add_permission(request):
        return _error(403, gettext("You may not add alarms."))
    wanted = request.POST.get("test_language", "")
    codes = [code for code, _name in settings.LANGUAGES]
    if wanted and wanted not in codes:
        return _error(400, gettext("Choose one of the site's languages, or all of them."))

    form_class = admin.get_form(request, obj, change=obj is not None)
    form = form_class(request.POST, request.FILES, instance=obj or Alarm())
    form.test_send = True  # type: ignore[attr-defined]
    valid = form.is_valid()
    # As the admin's own change view builds them, on the instance the form filled in.
    # (A private method of ModelAdmin, stable since Django 1.x; not in the stubs.)
    create = admin._create_formsets  # type: ignore[attr-defined]
    formsets, _inlines = create(request, form.instance, change=obj is not None)
    valid = all([formset.is_valid() for formset in formsets]) and valid
    if not valid:
        return _error(400, *_messages(form, formsets))

    translations = _translations(formsets)
    data = form.cleaned_data
    languages = [wanted] if wanted else [code for code in codes if code in translations]
    languages += [] if wanted else sorted(set(translations) - set(codes))
    payloads = []
    for language in languages:
        payload = rules.reader_payload(
            id=0,
            level=data["level"],
            url=data.get("url") or "",
            publish_at=data["publish_at"],
            expires_at=data.get("expires_at"),
            translations=translations,
            language=language,
        )
        del payload["id"]  # the broker gives each a test id of its own
        payload["reader"] = language  # the reader it was rendered for
        payloads.append(payload)
    try:
        # The admin serves signed-in staff only: the user has an id.
        journal.record_test(cast(int, request.user.pk), payloads)
    except journal.TestTooLarge:
        return _error(400, gettext("This alarm is too large to send as a test."))
    message = ngettext(
        "Sent a test toast to your open pages: %(languages)s. Nobody else sees it.",
        "Sent %(count)d test toasts to your open pages: %(languages)s. Nobody else sees them.",
        len(payloads),
    ) % {
        "count": len(payloads),
        "languages": ", ".join(language_name(p["language"]) for p in payloads),
    }
    return JsonResponse({"sent": len(payloads), "message": message})


def _translations(formsets: list[Any]) -> dict[str, tuple[str, str]]:
    """The form's translations as they stand: rows filled in or saved, not deleted."""
    found: dict[str, tuple[str, str]] = {}
    for formset in formsets:
        for form in formset.forms:
            if not form.has_changed() and form.instance.pk is None:
                continue
            if formset.can_delete and formset._should_delete_form(form):
                continue
            cleaned = form.cleaned_data
            if cleaned.get("language_code"):
                found[cleaned["language_code"]] = (cleaned["title"], cleaned["message"])
    return found


def _messages(form: Any, formsets: list[Any]) -> list[str]:
    """Every error of the form and its formsets, each named by its field."""
    found = []
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = str(field.label) if field is not None and field.label else ""
        found += [f"{label}: {e}" if label else str(e) for e in errors]
    for formset in formsets:
        found += [str(e) for e in formset.non_form_errors()]
        for row in formset.forms:
            language = row.data.get(row.add_prefix("language_code"), "")
            for name, errors in row.errors.items():
                field = row.fields.get(name)
                label = str(field.label) if field is not None and field.label else ""
                where = " ".join(
                    x for x in (language_name(language) if language else "", label) if x
                )
                found += [f"{where}: {e}" if where else str(e) for e in errors]
    return found


def reach_view(admin: AlarmAdmin, request: HttpRequest) -> JsonResponse:
    """GET ``audience``, ``users``, ``groups`` and ``languages`` (the translations the
    form has): the readers of that audience online now, per language, and which
    translation each language gets."""
    if not admin.has_view_or_change_permission(request):
        return _error(403, gettext("You may not view alarms."))
    audience = request.GET.get("audience", "")
    if audience not in rules.AUDIENCES:
        return _error(400, gettext("Unknown audience."))
    try:
        users = parse_ids(request.GET.getlist("users"), limit=MAX_TARGETS)
        groups = parse_ids(request.GET.getlist("groups"), limit=MAX_TARGETS)
    except InvalidId as exc:
        return _error(400, str(exc))
    if audience != rules.SELECTED:
        users, groups = [], []
    codes = {code for code, _name in settings.LANGUAGES}
    languages = [code for code in request.GET.getlist("languages") if code in codes]
    target = reach.Target(audience, frozenset(users), frozenset(groups))
    found = reach.count(reach.online(), target, languages, reach.Members())
    body = found.as_json()
    summary = ngettext(
        "%(count)d reader of this audience is online now.",
        "%(count)d readers of this audience are online now.",
        found.readers,
    ) % {"count": found.readers}
    if found.fallback:
        summary += " " + ngettext(
            "%(count)d of them gets a fallback: their language has no translation.",
            "%(count)d of them get a fallback: their language has no translation.",
            found.fallback,
        ) % {"count": found.fallback}
    body["summary"] = summary
    for item in body["languages"]:
        if item["translation"] is None:
            item["note"] = gettext("no translation yet")
        elif item["translation"] != item["code"]:
            item["note"] = gettext("%(language)s (fallback)") % {
                "language": language_name(item["translation"])
            }
        else:
            item["note"] = language_name(item["translation"])
    return JsonResponse(body)


def form_context(request: HttpRequest, obj: Alarm | None) -> dict[str, Any]:
    """What the alarm form's operator panel is configured with (its data-* attributes)."""
    from django.urls import reverse

    from alarms.translation import default_language, direction

    info = Alarm._meta.app_label, Alarm._meta.model_name
    test_url = reverse(f"admin:{info[0]}_{info[1]}_test")
    if obj is not None and obj.pk is not None:
        test_url += "?" + urlencode({"object": obj.pk})
    languages = [
        {"code": code, "name": str(name), "dir": direction(code)}
        for code, name in settings.LANGUAGES
    ]
    words = {
        "fallback": gettext("No %(language)s translation: these readers get %(fallback)s."),
        "none": gettext("No translations yet."),
        "sending": gettext("Sending…"),
        "failed": gettext("Nothing was sent:"),
        "offline": gettext("The server did not answer; nothing was sent."),
        "reachFailed": gettext("The reach could not be counted just now."),
    }
    return {
        "test_url": test_url,
        "reach_url": reverse(f"admin:{info[0]}_{info[1]}_reach"),
        "languages": json.dumps(languages, ensure_ascii=False),
        "default_language": default_language(),
        "words": json.dumps(words, ensure_ascii=False),
        "choices": [(code, str(name)) for code, name in settings.LANGUAGES],
    }

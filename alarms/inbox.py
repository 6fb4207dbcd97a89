"""A reader's own alarms: what the alarm centre and ``GET /api/v1/me/...`` list.

One home for the reader's side, so the page, the JSON feed and the badge agree:

- ``history(user)``: every alarm the reader may look back on, unread first;
- ``unread(user)``: what the badge counts (``Alarm.objects.for_user``);
- ``reader_language(request, user, lang)``: the language alarm texts are shown in;
- ``search(qs, text, language)`` and ``mark_all_read(user, qs)``.

**Unread** means: live now (published, not expired, not withdrawn), visible to the
reader (``rules.can_see``), and not dismissed by them. A "seen" receipt (the toast
was shown) does not make an alarm read: it stays unread, and counted by the badge,
until the reader dismisses it, here, in a toast, or in any of their tabs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Exists,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.http import HttpRequest
from django.utils import translation

from alarms import api, preferences
from alarms.models import Alarm, AlarmReceipt, AlarmTranslation
from alarms.querysets import AlarmQuerySet
from alarms.rules import MAX_BATCH
from alarms.translation import default_language, language_chain, supported_language

__all__ = [
    "MAX_SEARCH",
    "history",
    "mark_all_read",
    "reader_language",
    "search",
    "shown_translations",
    "unread",
]

#: The longest search text taken (characters).
MAX_SEARCH = 200


def reader_language(request: HttpRequest, user: Any, lang: str | None = None) -> str:
    """The language a reader is shown alarm texts in.

    ``lang`` (``?lang=``) when the site speaks it, then the user's stored language
    (``preferences.chosen_language``), then the request's (the language cookie or
    ``Accept-Language``, as the locale middleware chose), then ``LANGUAGE_CODE``.
    A language the site does not speak is passed over, never an error.
    """
    # The request's own user: the preferences the middleware read already.
    mine = getattr(request, "user", None) is not None and request.user.pk == user.pk
    prefs = preferences.for_request(request) if mine else preferences.for_user(user)
    for candidate in (lang, preferences.chosen_language(prefs), translation.get_language()):
        found = supported_language(candidate)
        if found:
            return found
    return default_language()


def unread(user: Any) -> AlarmQuerySet:
    """The reader's unread alarms: the badge's count, and the centre's first section."""
    return Alarm.objects.for_user(user)


def history(user: Any) -> AlarmQuerySet:
    """Every alarm ``user`` may look back on: visible to them, live or expired (never
    withdrawn, never still to come). Unread ones first, then the newest first.

    Annotated with ``unread`` (bool) and the reader's receipt times, ``seen_at`` and
    ``dismissed_at`` (None without a receipt).
    """
    receipt = AlarmReceipt.objects.filter(user_id=user.pk, alarm_id=OuterRef("pk"))
    return (
        Alarm.objects.visible_to(user)
        .published()
        .annotate(
            unread=Case(
                When(pk__in=unread(user).values("pk"), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            ),
            seen_at=Subquery(receipt.values("seen_at")[:1]),
            dismissed_at=Subquery(receipt.values("dismissed_at")[:1]),
        )
        .order_by("-unread", "-publish_at", "-pk")
    )


def shown_translations(language: str) -> Q:
    """On ``AlarmTranslation``: the translation a reader of ``language`` is shown.

    The SQL form of ``translation.choose_language`` (tested against it): the first
    code of ``language_chain`` that the alarm has, else its first code in order.
    """
    chain = language_chain(language)
    siblings = AlarmTranslation.objects.filter(alarm_id=OuterRef("alarm_id"))
    chosen = Q()
    for index, code in enumerate(chain):
        condition = Q(language_code__iexact=code)
        if index:
            better = Q()
            for earlier in chain[:index]:
                better |= Q(language_code__iexact=earlier)
            condition = Q(condition, ~Exists(siblings.filter(better)))
        chosen |= condition
    in_chain = Q()
    for code in chain:
        in_chain |= Q(language_code__iexact=code)
    first = siblings.order_by("language_code").values("language_code")[:1]
    fallback = Q(~Exists(siblings.filter(in_chain)), language_code=Subquery(first))
    return chosen | fallback


def search(qs: AlarmQuerySet, text: str, language: str) -> AlarmQuerySet:
    """The alarms of ``qs`` whose title or message, in the language shown to a reader
    of ``language``, contains ``text`` (case-insensitive where the database folds
    case). Blank text: all of ``qs``."""
    text = text.strip()[:MAX_SEARCH]
    if not text:
        return qs
    matching = AlarmTranslation.objects.filter(shown_translations(language)).filter(
        Q(title__icontains=text) | Q(message__icontains=text)
    )
    return qs.filter(pk__in=matching.values("alarm_id"))


def filtered(
    qs: AlarmQuerySet, *, level: str | None = None, text: str = "", language: str = ""
) -> AlarmQuerySet:
    """``qs`` narrowed to one level and a search, as the centre's form and the feed take."""
    if level:
        qs = qs.filter(level=level)
    return search(qs, text, language or default_language())


def mark_all_read(user: Any, qs: Iterable[int] | AlarmQuerySet, *, language: str) -> int:
    """Dismiss every unread alarm of ``user`` among ``qs``, through ``api.dismiss``
    (which records the receipts and the journal rows that close the toasts and
    lower the badge in every open tab). In batches of ``MAX_BATCH``: a fixed
    number of queries per batch, whatever the number of alarms. Returns the count."""
    ids = list(
        unread(user)
        .filter(pk__in=qs.values("pk") if isinstance(qs, AlarmQuerySet) else list(qs))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return sum(
        api.dismiss(user, ids[start : start + MAX_BATCH], language=language)
        for start in range(0, len(ids), MAX_BATCH)
    )

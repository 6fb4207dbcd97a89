"""Which translation of an alarm a reader gets, and which way it reads."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.utils.translation import get_language_info, get_supported_language_variant

RTL_FALLBACK = frozenset({"ar", "fa", "he", "ur", "ps", "ku", "ug", "yi", "dv", "sd"})


def choose_language(wanted: str | None, available: Iterable[str]) -> str | None:
    """Pick the best of ``available`` language codes for a reader of ``wanted``.

    Exact code first (``pt-br``), then its generic language (``pt``), then
    ``LANGUAGE_CODE``, then any translation at all. A script variant is never
    taken for another: ``zh-hant`` never falls back to ``zh-hans``, only to the
    generic ``zh`` if that exists.
    """
    codes = sorted({c.lower() for c in available})
    if not codes:
        return None
    if wanted:
        wanted = wanted.lower()
        if wanted in codes:
            return wanted
        generic = wanted.split("-")[0]
        if generic in codes:
            return generic
    default = settings.LANGUAGE_CODE.lower()
    if default in codes:
        return default
    if default.split("-")[0] in codes:
        return default.split("-")[0]
    return codes[0]


def direction(code: str) -> str:
    try:
        return "rtl" if get_language_info(code)["bidi"] else "ltr"
    except KeyError:
        return "rtl" if code.split("-")[0] in RTL_FALLBACK else "ltr"


def language_choices() -> list[tuple[str, str]]:
    # A callable, so migrations do not freeze the site's LANGUAGES.
    return [(code, str(name)) for code, name in settings.LANGUAGES]


def supported_language(code: str | None) -> str | None:
    """``code`` if the site speaks it (or a variant of it), else None."""
    if not code or len(code) > 15:
        return None
    try:
        return get_supported_language_variant(code.lower())
    except LookupError:
        return None

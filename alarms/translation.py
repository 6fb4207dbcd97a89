"""Which translation of an alarm a reader gets, and which way it reads."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import (
    get_language_from_path,
    get_language_info,
    get_supported_language_variant,
)

RTL_FALLBACK = frozenset({"ar", "fa", "he", "ur", "ps", "ku", "ug", "yi", "dv", "sd"})

# Language subtags Django does not map (it already maps zh-tw, zh-hk... to zh-hant
# and zh-cn, zh-sg... to zh-hans): ISO 639 codes withdrawn long ago that old Java
# and Android clients still send, and Norwegian, whose macrolanguage code and
# Bokmål's stand in for each other (Django ships nb, and lists no apart).
ALIASES: dict[str, tuple[str, ...]] = {
    "iw": ("he",),
    "in": ("id",),
    "ji": ("yi",),
    "jw": ("jv",),
    "mo": ("ro",),
    "no": ("nb",),
    "nb": ("no",),
}
MAX_TAG_LENGTH = 15
TAG = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8})*")
# As Django: a longer Accept-Language header is cut at its last comma within this.
MAX_HEADER_LENGTH = 500
QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def tag_variants(code: str | None) -> list[str]:
    """``code`` as a lowercase BCP 47 tag, then its aliases; ``[]`` if it is no tag.

    Accepts underscores and any case (``pt_BR``, ``PT-br`` -> ``pt-br``). Anything
    else (over-long, non-ASCII, ``../``, control characters) is no language.
    """
    # isascii() first: lower() maps some non-ASCII letters onto ASCII (the Kelvin sign to k).
    if not code or len(code) > MAX_TAG_LENGTH or not code.isascii():
        return []
    tag = code.replace("_", "-").lower()
    if not TAG.fullmatch(tag):
        return []
    primary, dash, rest = tag.partition("-")
    return [tag, *(alias + dash + rest for alias in ALIASES.get(primary, ()))]


def language_chain(wanted: str | None) -> list[str]:
    """The codes ``choose_language`` tries for a reader of ``wanted``, best first.

    Its exact code and aliases, their generic languages, then ``LANGUAGE_CODE``
    and its generic language. After the chain, any translation at all (the first
    code in order). ``alarms.inbox`` builds its SQL form of the choice from it.
    """
    variants = tag_variants(wanted)
    default = default_language().lower()
    chain = [
        *variants,
        *(variant.split("-")[0] for variant in variants),
        default,
        default.split("-")[0],
    ]
    return list(dict.fromkeys(chain))


def choose_language(wanted: str | None, available: Iterable[str]) -> str | None:
    """Pick the best of ``available`` language codes for a reader of ``wanted``.

    ``wanted`` is read as ``tag_variants`` reads it (``pt_BR``, legacy ``iw``).
    Exact code first (``pt-br``), then its generic language (``pt``), then
    ``LANGUAGE_CODE``, then any translation at all. A script variant is never
    taken for another: ``zh-hant`` never falls back to ``zh-hans``, only to the
    generic ``zh`` if that exists.
    """
    codes = sorted({c.lower() for c in available})
    if not codes:
        return None
    for code in language_chain(wanted):
        if code in codes:
            return code
    return codes[0]


def default_language() -> str:
    """The site's default language, as a code of ``LANGUAGES``: ``LANGUAGE_CODE``, or
    the variant Django serves for it (``startproject``'s ``en-us`` -> ``en``).

    Every alarm needs a translation in it; it is every reader's last fallback.
    """
    return supported_language(settings.LANGUAGE_CODE) or settings.LANGUAGE_CODE


def direction(code: str) -> str:
    try:
        return "rtl" if get_language_info(code)["bidi"] else "ltr"
    except KeyError:
        return "rtl" if code.split("-")[0] in RTL_FALLBACK else "ltr"


def language_choices() -> list[tuple[str, str]]:
    # A callable, so migrations do not freeze the site's LANGUAGES.
    return [(code, str(name)) for code, name in settings.LANGUAGES]


def supported_language(code: str | None) -> str | None:
    """The code in ``settings.LANGUAGES`` for a client's language tag, else None.

    The one door for a tag a client sends (``?lang=``, a stored preference):
    ``pt_BR``, ``PT-br``, legacy ``iw`` are understood. Django's own order then
    applies (``get_supported_language_variant``): the exact code, Django's
    fallbacks (``zh-tw`` -> ``zh-hant``), the generic language (``pt-br`` -> ``pt``),
    then another region of the language (``pt-pt`` -> ``pt-br``). None, never an
    error, for an unknown or malformed tag: the caller falls back to ``LANGUAGE_CODE``.
    """
    variants = tag_variants(code)
    # Strict first, so that an alias's exact match beats another region of the tag.
    for strict in (True, False):
        for variant in variants:
            try:
                return get_supported_language_variant(variant, strict=strict)
            except LookupError:
                continue
    return None


def parse_accept_language(header: str) -> list[str]:
    """The language ranges of an ``Accept-Language`` header, most wanted first.

    Unlike Django's parser, which drops the whole header for one tag it does not
    like, this keeps every entry and leaves judging the tag to ``tag_variants``
    (``pt_BR`` and ``iw`` are what old clients send). Entries with ``q=0`` or a
    malformed ``q`` are dropped; equal weights keep the header's order.
    """
    if len(header) > MAX_HEADER_LENGTH:
        header = header[:MAX_HEADER_LENGTH].rpartition(",")[0]
    ranked: list[tuple[float, int, str]] = []
    for index, entry in enumerate(header.split(",")):
        tag, _, params = entry.partition(";")
        tag = tag.strip()
        weight = 1.0
        for param in params.split(";") if params else ():
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if QVALUE.fullmatch(value) else 0.0
        if tag and weight > 0:
            ranked.append((-weight, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def request_language(request: HttpRequest, *, check_path: bool = False) -> str:
    """The site language for ``request``: Django's order, with ``supported_language``'s tags.

    The URL's language prefix (with ``check_path``), the language cookie, each
    ``Accept-Language`` range up to ``*``, then ``LANGUAGE_CODE``: as
    ``django.utils.translation.get_language_from_request``, except that ``pt_BR``
    and legacy ``iw`` in the cookie or the header are understood.
    """
    if check_path:
        from_path = get_language_from_path(request.path_info)
        if from_path:
            return from_path
    cookie = supported_language(request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME))
    if cookie:
        return cookie
    for tag in parse_accept_language(request.META.get("HTTP_ACCEPT_LANGUAGE", "")):
        if tag == "*":
            break
        found = supported_language(tag)
        if found:
            return found
    return supported_language(settings.LANGUAGE_CODE) or settings.LANGUAGE_CODE

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


def is_safe_link(url: str) -> bool:
    """True for http(s) addresses and paths on this site; never javascript: and friends."""
    if not url:
        return True
    # Browsers strip leading spaces and drop tabs and line ends anywhere, so
    # "java\tscript:" and " //host" would read differently there than here;
    # a backslash reads as a slash. The browser client refuses the same set.
    if any(ord(c) <= 32 or c == "\\" for c in url):
        return False
    if url.startswith("/"):
        return not url.startswith("//")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" in the host, say
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_link(url: str) -> None:
    if not is_safe_link(url):
        raise ValidationError(
            _("Enter an http:// or https:// address, or a path on this site starting with “/”."),
            code="unsafe_link",
        )


def validate_storable_text(value: str) -> None:
    """Refuse what no text column takes on every database: NUL and lone surrogates.

    PostgreSQL refuses NUL in text (a DataError at save time) while SQLite
    stores it; refusing it here makes both behave alike, with a clear message.
    """
    if "\0" in value:
        raise ValidationError(
            _("Null characters are not allowed."), code="null_characters_not_allowed"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            _("Remove the unpaired surrogate characters: they cannot be stored."),
            code="unpaired_surrogates",
        ) from None

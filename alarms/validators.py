from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


def is_safe_link(url: str) -> bool:
    """True for http(s) addresses and paths on this site; never javascript: and friends."""
    if not url:
        return True
    if any(ord(c) < 32 or c in "\\" for c in url):
        return False
    if url.startswith("/"):
        return not url.startswith("//")
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_link(url: str) -> None:
    if not is_safe_link(url):
        raise ValidationError(
            _("Enter an http:// or https:// address, or a path on this site starting with “/”."),
            code="unsafe_link",
        )

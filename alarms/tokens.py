"""Bearer tokens for the HTTP API and the webhooks: made, checked, revoked.

A secret is ``alm_`` and 40 URL-safe random characters (240 bits). Only its
SHA-256 digest is stored: a token of that much entropy needs no slow hash to
resist guessing, and a lookup by digest is one indexed query per request, so a
revocation or an expiry takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from alarms.models import AlarmToken, Audience, TokenScope

__all__ = ["authenticate", "create_token", "digest", "parse_authorization", "revoke"]

PREFIX = "alm_"
# last_used_at is written at most this often per token: not one write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    name: str,
    *,
    scopes: Iterable[str] = (TokenScope.PUBLISH,),
    audience: str = Audience.AUTHENTICATED,
    groups: Iterable[Any] = (),
    storm_limit: int | None = None,
    expires_at: datetime | None = None,
    created_by: Any = None,
) -> tuple[AlarmToken, str]:
    """Make a token and return it with its secret, which is never stored: show it once."""
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in TokenScope.values]
    if unknown or not scope_list:
        raise ValueError(
            f"Unknown or no scope {', '.join(unknown)!r}: "
            f"choose from {', '.join(TokenScope.values)}."
        )
    if audience not in Audience.values:
        raise ValueError(f"Unknown audience {audience!r}.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at must be in the future.")
    secret = PREFIX + secrets.token_urlsafe(30)
    with transaction.atomic():
        token = AlarmToken.objects.create(
            name=name,
            scopes=" ".join(scope_list),
            prefix=secret[: len(PREFIX) + 6],
            digest=digest(secret),
            audience=audience,
            storm_limit=storm_limit,
            expires_at=expires_at,
            created_by=created_by,
        )
        token.groups.set(list(groups))
    return token, secret


def parse_authorization(header: str) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, else None."""
    scheme, _, given = header.strip().partition(" ")
    given = given.strip()
    # The scheme is case-insensitive (RFC 9110).
    if scheme.lower() != "bearer" or not given or " " in given:
        return None
    return given


def authenticate(secret: str | None) -> AlarmToken | None:
    """The usable token with this secret (and its last use recorded), else None."""
    if not secret or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    # A lookup by digest: the database compares digests, not secrets, so response
    # times tell nothing about the secret.
    token = AlarmToken.objects.filter(digest=digest(secret)).first()
    now = timezone.now()
    if token is None or not token.is_usable(now):
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        AlarmToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def revoke(token: AlarmToken) -> None:
    """Refuse the token from the next request on."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        AlarmToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=token.revoked_at
        )

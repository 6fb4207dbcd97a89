"""Bearer tokens (``alarms.tokens``) and their scopes, for every operation of the API.

No session and no CSRF: a request is its token, whatever cookies it carries.
A revoked or expired token is refused from the next request on.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from alarms import tokens
from alarms.http_api.errors import ApiError
from alarms.models import AlarmToken, TokenScope

REALM = 'Bearer realm="alarms"'
AUTHORIZATION = ("header", "Authorization")


class BearerToken(HttpBearer):
    """``Authorization: Bearer <secret>`` of a token that has ``scope``.

    401 (with ``WWW-Authenticate``) for a missing, unknown, revoked or expired
    token; 403 for a token without the scope (RFC 6750's ``insufficient_scope``).
    """

    def __init__(self, scope: TokenScope) -> None:
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> AlarmToken:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(
                401,
                "Send the token as Authorization: Bearer <token>.",
                loc=AUTHORIZATION,
                type="unauthenticated",
                headers={"WWW-Authenticate": REALM},
            )
        token = tokens.authenticate(tokens.parse_authorization(header))
        if token is None:
            raise ApiError(
                401,
                "The token is unknown, revoked or expired.",
                loc=AUTHORIZATION,
                type="invalid_token",
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        if self.scope not in token.scope_set:
            raise ApiError(
                403,
                f"The token {token.name!r} lacks the scope {self.scope.value!r}.",
                loc=AUTHORIZATION,
                type="insufficient_scope",
                headers={
                    "WWW-Authenticate": (
                        f'{REALM}, error="insufficient_scope", scope="{self.scope.value}"'
                    )
                },
            )
        return token

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError("__call__ does the whole check")


def token_of(request: HttpRequest) -> AlarmToken:
    """The token the request was authenticated with (ninja sets ``request.auth``)."""
    token = getattr(request, "auth", None)
    assert isinstance(token, AlarmToken)
    return token

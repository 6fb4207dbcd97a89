"""Bearer tokens (``alarms.tokens``) and their scopes, for every operation of the API.

No session and no CSRF: a request is its token, whatever cookies it carries.
A revoked or expired token is refused from the next request on.

The reader's operations (``/me/...``) are the exception: they answer a signed-in
session too, or a personal token (scope ``me``), which reads as the user who made
it. Both give the request a user (``reader_of``), never a choice of user.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyCookie, HttpBearer

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


class PersonalToken(HttpBearer):
    """A token with the scope ``me``: it reads as the user who made it.

    No ``Authorization`` header: None, so that the session is tried. A header that
    is no usable ``me`` token is refused (401 or 403), whatever the session.
    """

    def __init__(self) -> None:
        super().__init__()
        self.token = BearerToken(TokenScope.ME)

    def __call__(self, request: HttpRequest) -> Any:
        if not request.headers.get("Authorization"):
            return None
        token = self.token(request)
        user = token.created_by
        if user is None or not user.is_active:
            raise ApiError(
                403,
                f"The token {token.name!r} belongs to no active user.",
                loc=AUTHORIZATION,
                type="insufficient_scope",
            )
        return user

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError("__call__ does the whole check")


class Session(APIKeyCookie):
    """The signed-in user of Django's session. For reading only: a GET needs no
    CSRF token, and the operations that take a session write nothing."""

    def __init__(self) -> None:
        self.param_name = settings.SESSION_COOKIE_NAME  # the OpenAPI scheme names it
        super().__init__(csrf=False)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        # No AuthenticationMiddleware (a site without sessions): nobody is signed in.
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user
        raise ApiError(
            401,
            "Sign in, or send a personal token (scope 'me') as Authorization: Bearer <token>.",
            loc=AUTHORIZATION,
            type="unauthenticated",
            headers={"WWW-Authenticate": REALM},
        )


#: The reader's operations: a personal token, else the session.
READER = [PersonalToken(), Session()]


def reader_of(request: HttpRequest) -> Any:
    """The user a reader's operation answers for (ninja sets ``request.auth``)."""
    user = getattr(request, "auth", None)
    assert user is not None and getattr(user, "is_authenticated", False)
    return user

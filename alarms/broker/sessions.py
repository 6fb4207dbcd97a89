"""Sessions and users as Django would authenticate them, read in the broker's threads.

Many at once: the connects of a storm, or every session of the users whose
access changed, are decided together in a few queries (:func:`authenticate`),
by the rules of ``django.contrib.auth.get_user``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user,
    get_user_model,
    load_backend,
)
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import ValidationError
from django.db import Error as DatabaseError
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from alarms import runtime

# The user's reverse relation to alarms.models.Preferences.
PREFERENCES = "alarm_preferences"


@dataclass(eq=False)
class Login:
    """One reader to authenticate, and what :func:`authenticate` found.

    ``session``: a Django session store, or None. ``request``: for a connect,
    the request itself: what the batch does not settle on its own (a session
    engine that is not in the database, a hash that is not the password's
    current one, session data that does not parse) is left to Django's
    ``get_user``, with its side effects, exactly as a connect always did.
    Without a request the decision has no side effects (no flush, no new key,
    which would sign the browser out or leave it with a key it was never
    sent): an open stream authorised again. ``user_id`` without a session:
    a stream signed in without one, checked by its user alone (with a
    session, the id the session names, once read).
    """

    session: Any = None
    request: Any = None
    user_id: Any = None
    #: The user the session authenticates now, or None.
    user: Any = None
    #: When the session stops authenticating (see :func:`authenticate`).
    expires_at: datetime | None = None
    #: What deciding this login raised, for its connect alone to raise.
    error: Exception | None = None
    # Where the decision stands: the backend that is to find user_id.
    _backend: Any = None
    _pending: bool = False


def authenticate(logins: Sequence[Login]) -> None:
    """Decide every login's user, as ``django.contrib.auth.get_user`` would.

    The session exists and has not expired, its backend is still configured
    and still returns the user (so ``ModelBackend`` refuses an inactive
    user), and its hash matches the user's password (or one of the fallback
    secrets). One query for the database sessions, one for the users of
    ``ModelBackend`` and its subclasses that keep its ``get_user``; any other
    backend is asked one user at a time, and a session engine that is not in
    the database loads itself. Each login's ``expires_at`` is its session's
    stored expiry, or, where the engine keeps none in the database, the latest
    it can be. Fills in ``user``, ``expires_at`` and ``error``.
    """
    stored = _load_sessions(logins)
    _each(logins, _session_user)
    _find_users([login for login in logins if login._pending])
    # The same user object serves every login of that user here: one HMAC each.
    hashes: dict[int, str] = {}
    _each(logins, lambda login: _check_hash(login, hashes))
    for login in logins:
        if login.user is not None and getattr(login.session, "session_key", None):
            login.expires_at = stored.get(id(login)) or _latest_expiry(login.session)


def _load_sessions(logins: Sequence[Login]) -> dict[int, datetime]:
    """Read the database sessions, data and expiry, in one query per session model.

    Each session not read yet gets its data as its own ``load()`` would have
    read it (``runtime.set_session_data``); one that is gone or expired is left
    alone, and its ``load()`` decides, as before. Returns the stored expiry of
    each login whose session row was found, by ``id(login)``.
    """
    by_model: dict[Any, list[Login]] = defaultdict(list)
    for login in logins:
        model = getattr(type(login.session), "get_model_class", None)
        if model is not None and login.session.session_key:
            by_model[model()].append(login)
    stored: dict[int, datetime] = {}
    now = timezone.now()
    for model, group in by_model.items():
        keys = {login.session.session_key for login in group}
        rows = {
            key: (data, expire_date)
            for key, data, expire_date in model.objects.filter(session_key__in=keys).values_list(
                "session_key", "session_data", "expire_date"
            )
        }
        for login in group:
            session = login.session
            row = rows.get(session.session_key)
            if row is None:
                continue
            data, expire_date = row
            stored[id(login)] = expire_date
            if expire_date > now and not runtime.session_loaded(session):
                runtime.set_session_data(session, session.decode(data))
    return stored


def _session_user(login: Login) -> None:
    """The first half of ``get_user``: the session's user id and backend."""
    session = login.session
    if login.request is not None and getattr(type(session), "get_model_class", None) is None:
        # Not a database session (signed cookies, the cache), or none at all.
        login.user = get_user(login.request)
        return
    if session is None:
        if login.user_id is not None:
            login._pending = True  # a stream signed in without a session
        return
    if session.session_key is None and not runtime.session_loaded(session):
        return  # no cookie: nothing to read
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return
    except (ValueError, TypeError, ValidationError):
        if login.request is not None:
            login.user = get_user(login.request)  # raises as it always did
        return
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return
    backend = load_backend(backend_path)
    if _batchable(backend):
        login.user_id, login._backend, login._pending = user_id, backend, True
    else:
        login.user = backend.get_user(user_id)
        login._backend = backend


def _batchable(backend: Any) -> bool:
    """Whether ``backend.get_user`` is ``ModelBackend``'s: one query finds many."""
    return isinstance(backend, ModelBackend) and type(backend).get_user is ModelBackend.get_user


def _find_users(logins: Sequence[Login]) -> None:
    """``ModelBackend.get_user`` for them all in one query (and ``user_can_authenticate``);
    the active user for a login without a session."""
    if not logins:
        return
    manager = get_user_model()._default_manager
    query = manager.filter(pk__in={login.user_id for login in logins})
    if PREFERENCES in {f.name for f in query.model._meta.related_objects}:
        # The stream's language and mute floor (alarms.preferences), in the same query.
        query = query.select_related(PREFERENCES)
    users = {user.pk: user for user in query}

    def found(login: Login) -> None:
        login._pending = False
        user = users.get(login.user_id)
        if user is None:
            return
        if login._backend is None:
            login.user = user if getattr(user, "is_active", True) else None
        elif login._backend.user_can_authenticate(user):
            login.user = user

    _each(logins, found)


def _check_hash(login: Login, hashes: dict[int, str]) -> None:
    """The second half of ``get_user``: the session's hash against the password's."""
    user = login.user
    if login._backend is None or user is None or not hasattr(user, "get_session_auth_hash"):
        return
    current = hashes.get(id(user))
    if current is None:
        current = hashes[id(user)] = user.get_session_auth_hash()
    stored = login.session.get(HASH_SESSION_KEY) or ""
    if stored and constant_time_compare(stored, current):
        return
    if login.request is not None:
        # Django decides again, with its side effects: a key cycled for a fallback
        # secret's hash, the session flushed for a wrong one.
        login.user = get_user(login.request)
        return
    fallbacks: Iterable[str] = getattr(user, "get_session_auth_fallback_hash", list)()
    if not (stored and any(constant_time_compare(stored, h) for h in fallbacks)):
        login.user = None


def _each(logins: Iterable[Login], step: Callable[[Login], None]) -> None:
    # What one login raises is that login's; the others go on. A database error
    # is the batch's (a lost connection is retried by the caller, as one).
    for login in logins:
        if login.error is None:
            try:
                step(login)
            except DatabaseError:
                raise
            except Exception as exc:
                login.error, login.user, login._pending = exc, None, False


def _latest_expiry(session: Any) -> datetime | None:
    """Where the engine keeps no expiry in the database: the latest the session can last."""
    try:
        expiry: datetime = session.get_expiry_date()
        return expiry
    except Exception:  # an engine of the project's own that cannot say
        return None

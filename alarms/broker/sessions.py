"""Sessions and users as Django would authenticate them, read in the broker's threads."""

from __future__ import annotations

from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from alarms import runtime


def session_user(session_key: str) -> tuple[Any, Any]:
    """The session and the user it authenticates now, as ``django.contrib.auth.get_user``
    decides it (the session exists and has not expired, its backend is still
    configured and still returns the user, its hash matches the user's
    password), but without its side effects: no flush, no new key, which would
    sign the browser out or leave it with a key it was never sent."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValueError, TypeError, ValidationError):
        return session, None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return session, None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return session, user
    stored = session.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash()]
    hashes += list(getattr(user, "get_session_auth_fallback_hash", list)())
    if stored and any(constant_time_compare(stored, h) for h in hashes):
        return session, user
    return session, None


def active_user(user_id: int) -> Any:
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    return user if user is not None and getattr(user, "is_active", True) else None


def prime_session(session: Any) -> datetime | None:
    """Load a database session and its stored expiry in one query; the expiry, or None.

    Django's database engines read the data and then, for the stream, the
    expiry again (``session_expiry``): two queries per signed-in connect. This
    reads both, and hands the data to the session as its own ``load()`` would
    (``runtime.set_session_data``). None, and nothing loaded, for another
    engine, no key, or a session that is gone or expired: the session's own
    ``load()`` then decides, as before.
    """
    model = getattr(type(session), "get_model_class", None)
    key = getattr(session, "session_key", None)
    if model is None or not key or runtime.session_loaded(session):
        return None
    row = (
        model()
        .objects.filter(session_key=key, expire_date__gt=timezone.now())
        .values_list("session_data", "expire_date")
        .first()
    )
    if row is None:
        return None
    runtime.set_session_data(session, session.decode(row[0]))
    expire_date: datetime = row[1]
    return expire_date


def session_expiry(session: Any) -> datetime | None:
    """When ``session`` stops authenticating: its stored expiry where the engine
    keeps one in the database, else the latest it can be (expiry age from now)."""
    model = getattr(type(session), "get_model_class", None)
    if model is not None:
        stored: datetime | None = (
            model()
            .objects.filter(session_key=session.session_key)
            .values_list("expire_date", flat=True)
            .first()
        )
        if stored is not None:
            return stored
    try:
        expiry: datetime = session.get_expiry_date()
        return expiry
    except Exception:  # an engine of the project's own that cannot say
        return None

"""Signed-in users for ``bench/storm.py``, made in the checkout being measured.

    cd TREE && DATABASE_URL=... TREE/.venv/bin/python PATH/TO/bench/storm_setup.py \
        --users N --out FILE

Run with the working directory at the checkout under test (it may be an older
one): it migrates that checkout's database with its own migrations, then
bulk-creates N users and one database session each, signed in as Django's
``login`` would sign them in (the user's id, backend and session hash), with
one ``bulk_create`` per few thousand rows instead of N logins. Writes the
session keys and cookie names to FILE as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta

# The checkout under test, not the one this file lives in.
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    call_command("migrate", verbosity=0)
    password = make_password("storm-bench")  # hashed once: the hash is what sessions sign
    names = [f"storm{i}" for i in range(args.users)]
    User.objects.bulk_create(
        [User(username=name, password=password) for name in names],
        batch_size=2000,
        ignore_conflicts=True,
    )
    users = {u.username: u for u in User.objects.filter(username__in=names)}
    backend = settings.AUTHENTICATION_BACKENDS[0]
    store = SessionStore()
    expires = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    keys: list[str] = []
    sessions = []
    for name in names:
        user = users[name]
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": backend,
            "_auth_user_hash": user.get_session_auth_hash(),
        }
        sessions.append(
            Session(session_key=key, session_data=store.encode(data), expire_date=expires)
        )
        keys.append(key)
    Session.objects.bulk_create(sessions, batch_size=2000)
    with open(args.out, "w") as f:
        json.dump(
            {
                "sessions": keys,
                "session_cookie": settings.SESSION_COOKIE_NAME,
                "csrf_cookie": settings.CSRF_COOKIE_NAME,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

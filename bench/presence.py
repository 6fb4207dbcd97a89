"""Live reach: what presence costs a broker at 10,000 streams, and the admin's count at 10k and 50k.

    .venv/bin/python bench/presence.py                    # SQLite, in a temporary file
    scripts/postgres .venv/bin/python bench/presence.py   # PostgreSQL

In one process, against a fresh database (migrated here):

1. The broker's side, at ``--streams`` streams (default 10,000: 80 % signed
   in, some users with two tabs, over four languages):

   - ``joined`` + ``left``: the bookkeeping each stream's connect and end adds,
     per stream (``alarms.broker.presence.Presence``, O(1));
   - one update of the row: the counts serialised to JSON on the broker's loop
     (CPU time), and the write itself in the broker's database thread (wall
     time, one ``UPDATE``); the row's size. A broker makes at most one such
     update per ``PRESENCE_INTERVAL`` (2 s) while its streams change, and a
     touch of the row per ``PRESENCE_TTL / 3`` otherwise.

2. The admin's side: the reach endpoint (``/admin/alarms/alarm/operator/reach/``,
   through Django's test client, so URL routing, the admin's login check and
   JSON included) with 10,000 and 50,000 signed-in readers online, in rows of
   10,000 streams per process, for the audiences "everyone", "staff" (50 staff
   users) and "selected" (a group of 1,000 members and 10 users); median and
   maximum of ``--reps`` requests (after one to warm up). And the alarm change
   list with 100 alarms (its "online now / fallback" column), median of 5; with
   nobody online (the first row) it is the page's cost without the column's sets.

Prints a Markdown table; appends one JSON line to bench/results/presence.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "ko", "ja", "ar")
PER_PROCESS = 10_000


def viewers(streams: int, first_user: int) -> list[Any]:
    """``streams`` viewers: 80 % signed in (one in ten of those with a second tab)."""
    from alarms.broker.cache import Viewer

    found = []
    user = first_user
    for i in range(streams):
        language = LANGUAGES[i % len(LANGUAGES)]
        if i % 5 == 4:
            found.append(Viewer(language=language))
        else:
            if i % 10 != 3:  # every tenth signed-in stream is a second tab of the last user
                user += 1
            found.append(Viewer(user_id=user, language=language))
    return found


class FakeBroker:
    """What ``Presence`` reads of its broker: settings, alias, no loop (no timers)."""

    def __init__(self) -> None:
        from alarms.conf import get_config

        self.config = get_config()
        self.alias = "default"
        self.loop = None


def broker_side(streams: int) -> dict[str, Any]:
    from django.utils import timezone

    from alarms.broker import presence

    keep = presence.Presence(FakeBroker())  # type: ignore[arg-type]
    people = viewers(streams, 0)
    started = time.perf_counter()
    for viewer in people:
        keep.joined(viewer)
    for viewer in people:
        keep.left(viewer)
    per_stream = (time.perf_counter() - started) / streams
    for viewer in people:
        keep.joined(viewer)
    cpu = []
    writes = []
    size = 0
    for _ in range(20):
        begun = time.process_time()
        text = json.dumps(keep.data(), separators=(",", ":"))
        cpu.append(time.process_time() - begun)
        size = len(text)
        begun = time.perf_counter()
        presence.write("default", keep.process, text, timezone.now())
        writes.append(time.perf_counter() - begun)
    presence.delete("default", keep.process)
    return {
        "streams": streams,
        "users": len({v.user_id for v in people if v.user_id is not None}),
        "join_leave_us": per_stream * 1e6,
        "serialise_ms": statistics.median(cpu) * 1000,
        "write_ms": statistics.median(writes) * 1000,
        "row_kib": size / 1024,
    }


def admin_side(
    online: int, reps: int, client: Any, group: Any, picked: list[int]
) -> dict[str, Any]:
    from django.utils import timezone

    from alarms.broker.presence import Presence
    from alarms.models import AlarmPresence

    AlarmPresence.objects.all().delete()
    first_user = 1_000_000  # beyond the users the bench made: readers need no row to be counted
    for n in range(online // PER_PROCESS):
        keep = Presence(FakeBroker())  # type: ignore[arg-type]
        for viewer in viewers(PER_PROCESS, first_user + n * PER_PROCESS):
            keep.joined(viewer)
        AlarmPresence.objects.create(
            process=keep.process,
            updated_at=timezone.now(),
            data=json.dumps(keep.data(), separators=(",", ":")),
        )
    audiences = {
        "everyone": {"audience": "everyone", "languages": ["en"]},
        "staff": {"audience": "staff", "languages": ["en", "ko"]},
        "selected": {
            "audience": "selected",
            "groups": [group.pk],
            "users": picked,
            "languages": ["en"],
        },
    }
    found: dict[str, Any] = {"online_streams": online}
    # Warm: the first request of a process compiles templates and fills caches.
    client.get("/admin/alarms/alarm/")
    for name, query in audiences.items():
        times = []
        for _ in range(reps):
            begun = time.perf_counter()
            response = client.get("/admin/alarms/alarm/operator/reach/", query)
            times.append(time.perf_counter() - begun)
            assert response.status_code == 200, response.content
        found[name] = {
            "median_ms": statistics.median(times) * 1000,
            "max_ms": max(times) * 1000,
            "readers": response.json()["readers"],
        }
    times = []
    for _ in range(5):
        begun = time.perf_counter()
        response = client.get("/admin/alarms/alarm/")
        times.append(time.perf_counter() - begun)
        assert response.status_code == 200
    found["change_list_ms"] = statistics.median(times) * 1000
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--online", type=int, nargs="+", default=[0, 10_000, 50_000])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL"):
        folder = tempfile.mkdtemp(prefix="alarms-bench-")
        os.environ["DATABASE_URL"] = f"sqlite:///{folder}/presence.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "x" * 50)
    os.environ.setdefault("DJANGO_DEBUG", "0")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings

    from alarms import api
    from alarms.models import AlarmPresence

    call_command("migrate", verbosity=0)
    AlarmPresence.objects.all().delete()
    # The group's members, the staff and the selected users are among the readers online.
    User.objects.filter(username__startswith="bench-presence-").delete()
    members = User.objects.bulk_create(
        User(username=f"bench-presence-{i}", is_staff=i < 50) for i in range(1_000)
    )
    members = list(User.objects.filter(username__startswith="bench-presence-"))
    group, _ = Group.objects.get_or_create(name="bench presence")
    group.user_set.set(members)
    operator = User.objects.create_superuser(f"bench-presence-op-{os.getpid()}", password="x")
    client = Client(HTTP_HOST="localhost")
    client.force_login(operator)
    for i in range(100):
        api.send_alarm({"en": {"title": f"Bench {i}", "message": "m"}}, audience="everyone")

    broker = broker_side(args.streams)
    from django.conf import settings

    storages = {
        **settings.STORAGES,
        # No collectstatic for a bench: the admin's pages name their files as they are.
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # The bench's own URLs have no admin.
    with override_settings(ROOT_URLCONF="config.urls", STORAGES=storages):
        picked = [m.pk for m in members[:10]]
        admin = [admin_side(n, args.reps, client, group, picked) for n in args.online]
    AlarmPresence.objects.all().delete()

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "database": connection.vendor,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "broker": broker,
        "admin": admin,
    }
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with (results / "presence.jsonl").open("a") as out:
        out.write(json.dumps(result) + "\n")

    print(f"\n{connection.vendor}, Python {platform.python_version()}, {os.cpu_count()} cores\n")
    print(f"Broker, {broker['streams']:,} streams ({broker['users']:,} signed-in users):\n")
    print("| joined + left, per stream | one update: serialise (CPU) | write | row |")
    print("|---|---|---|---|")
    print(
        f"| {broker['join_leave_us']:.2f} µs | {broker['serialise_ms']:.1f} ms "
        f"| {broker['write_ms']:.1f} ms | {broker['row_kib']:.0f} KiB |"
    )
    print("\nAdmin reach endpoint, median (max) of each audience; change list of 100 alarms:\n")
    print("| streams online | everyone | staff | selected | change list |")
    print("|---|---|---|---|---|")
    for cell in admin:
        parts = [
            f"{cell[a]['median_ms']:.1f} ms ({cell[a]['max_ms']:.1f})"
            for a in ("everyone", "staff", "selected")
        ]
        listing = f"{cell['change_list_ms']:.0f} ms"
        print(f"| {cell['online_streams']:,} | {' | '.join(parts)} | {listing} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

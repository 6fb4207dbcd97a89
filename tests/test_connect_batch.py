"""Connect loads in batches (``alarms.broker.loads``): the same readers, far fewer queries.

The batch must decide every reader exactly as the per-connect load it replaced
did. That load is kept here, only as the reference (``one_by_one``): Django's
``get_user`` for the user, then the old queries for the session's expiry, the
groups and receipts, and the journal since the reader's Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

import pytest
from asgiref.sync import sync_to_async
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
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.test import Client, RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

import alarms.broker as broker_module
from alarms import api, runtime
from alarms.broker.base import BaseBroker
from alarms.broker.cache import CachedAlarm, Viewer
from alarms.broker.connect import connect
from alarms.broker.loads import Load, load_batch
from alarms.broker.memory import MemoryBroker
from alarms.broker.reads import ConnectState, Missed, Reads
from alarms.broker.sessions import Login
from alarms.models import Alarm, AlarmChange
from tests.helpers import en

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
ALLOW_ALL = "django.contrib.auth.backends.AllowAllUsersModelBackend"
OWN_BACKEND = "tests.test_connect_batch.OwnBackend"
OLD_SECRET = "an-old-secret-" + "o" * 40
BACKENDS = [MODEL_BACKEND, ALLOW_ALL, OWN_BACKEND]


class OwnBackend(ModelBackend):
    """A backend with a ``get_user`` of its own: asked one user at a time."""

    def get_user(self, user_id: Any) -> Any:
        return super().get_user(user_id)


# -- the per-connect load the batch replaced, as it was: the reference -------------------


def one_by_one(reads: Reads, request: Any, language: str, alarm_ids: list[int], since, head):
    session = getattr(request, "session", None)
    expires_at = _prime_session(session)
    state = _viewer(reads, get_user(request), language, alarm_ids, session, expires_at)
    if since is None:
        return state, None
    return state, _missed(reads, state.viewer, since, head)


def _prime_session(session: Any) -> datetime | None:
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


def _session_expiry(session: Any) -> datetime | None:
    model = getattr(type(session), "get_model_class", None)
    if model is not None:
        stored = (
            model()
            .objects.filter(session_key=session.session_key)
            .values_list("expire_date", flat=True)
            .first()
        )
        if stored is not None:
            return stored
    try:
        return session.get_expiry_date()
    except Exception:
        return None


def _viewer(reads, user, language, alarm_ids, session=None, expires_at=None) -> ConnectState:
    from alarms.models import AlarmReceipt

    if not getattr(user, "is_authenticated", False):
        return ConnectState(Viewer(language=language), set(), set())
    viewer = Viewer(
        user_id=user.pk,
        is_staff=bool(user.is_staff),
        group_ids=frozenset(user.groups.values_list("pk", flat=True)),
        language=language,
    )
    seen: set[int] = set()
    dismissed: set[int] = set()
    receipts = AlarmReceipt.objects.using(reads.alias).filter(
        user_id=user.pk, alarm_id__in=alarm_ids
    )
    for alarm_id, seen_at, dismissed_at in receipts.values_list(
        "alarm_id", "seen_at", "dismissed_at"
    ):
        if seen_at:
            seen.add(alarm_id)
        if dismissed_at:
            dismissed.add(alarm_id)
    key = getattr(session, "session_key", None)
    if key and expires_at is None:
        expires_at = _session_expiry(session)
    return ConnectState(viewer, seen, dismissed, key, expires_at if key else None)


def _missed(reads: Reads, viewer: Viewer, since: tuple[int, int], head: int) -> Missed | None:
    seq, millis = since
    journal = AlarmChange.objects.using(reads.alias)
    if seq > head:
        return None
    if head - seq > reads.config["REPLAY_MAX_ROWS"]:
        return None
    if seq < head:
        first = journal.order_by("id").values_list("id", flat=True).first()
        if first is not None and seq < first - 1:
            return None
    now = timezone.now()
    floor = now - timedelta(days=reads.config["JOURNAL_RETENTION_DAYS"])
    when = datetime.fromtimestamp(millis / 1000, tz=UTC)
    missed = Missed(since=min(max(when, floor), now), head=head)
    rows = (
        journal.filter(id__gt=seq, id__lte=head, kind__in=("alarm", "dismiss")).values_list(
            "alarm_id", "kind", "user_id", "detail"
        )
        if seq < head
        else ()
    )
    deleted: dict[int, str] = {}
    for alarm_id, kind, row_user, detail in rows:
        if kind == "alarm":
            missed.changed.add(alarm_id)
            if detail:
                deleted[alarm_id] = detail
        elif row_user is not None and row_user == viewer.user_id:
            missed.dismissed.add(alarm_id)
    expired = Alarm.objects.using(reads.alias).filter(
        expires_at__gt=missed.since, expires_at__lte=now
    )
    candidates = missed.changed | set(expired.values_list("pk", flat=True))
    existing: dict[int, CachedAlarm | None] = (
        dict(reads.alarms(candidates, current_only=False)) if candidates else {}
    )
    for alarm_id, detail in deleted.items():
        existing.setdefault(alarm_id, CachedAlarm.deleted(alarm_id, detail))

    def shown(alarm: CachedAlarm | None) -> bool:
        return alarm is not None and alarm.publish_at <= missed.since and alarm.visible_to(viewer)

    missed.retract = {i for i in candidates if shown(existing.get(i))}
    return missed


def _session_user(session_key: str) -> tuple[Any, Any]:
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


def access_one_by_one(reads: Reads, keys: dict[int, set[str]], alarm_ids: list[int]):
    found: dict[tuple[int, str], ConnectState] = {}
    for user_id, session_keys in keys.items():
        for key in session_keys:
            if key:
                session, user = _session_user(key)
            else:
                user = get_user_model()._default_manager.filter(pk=user_id).first()
                session, user = None, user if user is not None and user.is_active else None
            if user is not None and user.pk == user_id:
                found[(user_id, key)] = _viewer(reads, user, "", alarm_ids, session)
    return found


# -- the readers: every kind of session, and every kind of resume ------------------------


@dataclass
class World:
    users: dict[str, Any]
    keys: dict[str, str]  # database sessions by their user's name
    other_engines: dict[str, tuple[str, str]]  # name: (engine, key)
    night: Group
    alarm_ids: list[int]
    before: int  # the journal row a reader left at, before the changes
    head: int
    since_ms: int  # when that reader left
    deleted: int
    expired: int
    dismissed_meanwhile: int
    fresh: int  # published after the readers left


def _login(user: Any) -> str:
    client = Client()
    client.force_login(user, backend=MODEL_BACKEND)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _session(engine: str, data: dict[str, str]) -> str:
    store: SessionBase = import_module(engine).SessionStore()
    store.update(data)
    store.save()
    assert store.session_key
    return store.session_key


def _auth(user: Any, backend: str, auth_hash: str | None = None) -> dict[str, str]:
    return {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: backend,
        HASH_SESSION_KEY: auth_hash or user.get_session_auth_hash(),
    }


def build_world() -> World:
    User = get_user_model()
    now = timezone.now()
    names = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hal", "ivy", "jo", "kim")
    users = {name: User.objects.create_user(name, password="pw") for name in names}
    night = Group.objects.create(name="Night shift")
    users["alice"].groups.add(night, Group.objects.create(name="Day shift"))
    users["bob"].is_staff = True
    users["bob"].save()
    db = "django.contrib.sessions.backends.db"
    keys = {name: _login(users[name]) for name in ("alice", "bob", "carol", "dave", "erin")}
    # An expired session; a password changed since the login; a user made inactive.
    Session.objects.filter(session_key=keys["carol"]).update(expire_date=now - timedelta(1))
    users["dave"].set_password("changed")
    users["dave"].save()
    users["erin"].is_active = False
    users["erin"].save()
    # A backend taken out of AUTHENTICATION_BACKENDS since the login.
    keys["frank"] = _session(db, _auth(users["frank"], "tests.gone.RemovedBackend"))
    # An inactive user whose backend lets inactive users in: its own rule decides.
    users["gina"].is_active = False
    users["gina"].save()
    keys["gina"] = _session(db, _auth(users["gina"], ALLOW_ALL))
    # A backend with a get_user of its own.
    keys["hal"] = _session(db, _auth(users["hal"], OWN_BACKEND))
    # A hash made with a secret that is now a fallback: Django cycles the key.
    old = salted_hmac(
        "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
        users["ivy"].password,
        secret=OLD_SECRET,
        algorithm="sha256",
    ).hexdigest()
    keys["ivy"] = _session(db, _auth(users["ivy"], MODEL_BACKEND, old))
    # A session without a user (a visitor's language, say); a user id that does not parse.
    keys["visitor"] = _session(db, {"django_language": "ko"})
    keys["garbled"] = _session(db, {SESSION_KEY: "not a number", BACKEND_SESSION_KEY: ALLOW_ALL})
    # Sessions outside the database go through Django's own path.
    other_engines = {
        "jo": (
            "django.contrib.sessions.backends.signed_cookies",
            _session(
                "django.contrib.sessions.backends.signed_cookies", _auth(users["jo"], ALLOW_ALL)
            ),
        ),
        "kim": (
            "django.contrib.sessions.backends.cache",
            _session("django.contrib.sessions.backends.cache", _auth(users["kim"], MODEL_BACKEND)),
        ),
    }

    long_ago = now - timedelta(hours=2)
    everyone = api.send_alarm(en("Everyone"), audience="everyone", publish_at=long_ago)
    shift = api.send_alarm(en("Night shift"), groups=[night], publish_at=long_ago)
    hers = api.send_alarm(en("Alice's"), users=[users["alice"]], publish_at=long_ago)
    staff = api.send_alarm(en("Staff"), audience="staff", publish_at=long_ago)
    expiring = api.send_alarm(en("Expiring"), audience="authenticated", publish_at=long_ago)
    later = api.send_alarm(en("Dismissed meanwhile"), audience="everyone", publish_at=long_ago)
    api.mark_seen(users["alice"], [everyone.pk, shift.pk])
    api.dismiss(users["alice"], [shift.pk])
    api.mark_seen(users["bob"], [staff.pk])

    before = AlarmChange.objects.order_by("-pk").values_list("pk", flat=True)[0]
    since_ms = int((now - timedelta(minutes=1)).timestamp() * 1000)
    # While the readers were away: an edit, a dismissal, a deletion, an expiry.
    translation = everyone.translations.get(language_code="en")
    translation.title = "Everyone, edited"
    translation.save()
    api.dismiss(users["alice"], [later.pk])
    fresh = api.send_alarm(en("Fresh"), audience="everyone", publish_at=now - timedelta(seconds=30))
    hers_id = hers.pk
    hers.delete()
    Alarm.objects.filter(pk=expiring.pk).update(expires_at=now - timedelta(seconds=10))
    head = AlarmChange.objects.order_by("-pk").values_list("pk", flat=True)[0]
    return World(
        users=users,
        keys=keys,
        other_engines=other_engines,
        night=night,
        alarm_ids=list(Alarm.objects.current().values_list("pk", flat=True)),
        before=before,
        head=head,
        since_ms=since_ms,
        deleted=hers_id,
        expired=expiring.pk,
        dismissed_meanwhile=later.pk,
        fresh=fresh.pk,
    )


def readers(world: World) -> list[tuple[str, Callable[[], Any], str, tuple[int, int] | None]]:
    """(name, a fresh request, language, Last-Event-ID) for every kind of reader."""
    db = "django.contrib.sessions.backends.db"

    def request(engine: str = db, key: str | None = None) -> Callable[[], Any]:
        def make() -> Any:
            made = RequestFactory().get("/alarms/stream/")
            made.session = import_module(engine).SessionStore(key)
            return made

        return make

    behind = (world.before, world.since_ms)
    at_head = (world.head, world.since_ms)
    cases = [("anonymous", request(), "en", None), ("anonymous behind", request(), "ko", behind)]
    for name, key in world.keys.items():
        cases.append((name, request(db, key), "en", None))
    for name, (engine, key) in world.other_engines.items():
        cases.append((f"{name} ({engine.rsplit('.', 1)[1]})", request(engine, key), "ja", None))
    alice = request(db, world.keys["alice"])
    cases += [
        ("alice at the head", alice, "ko", at_head),
        ("alice behind", alice, "en", behind),
        ("bob behind", request(db, world.keys["bob"]), "en", behind),
        ("dave behind (signed out)", request(db, world.keys["dave"]), "en", behind),
        ("alice beyond REPLAY_MAX_ROWS", alice, "en", (world.before - 3, world.since_ms)),
        ("alice from another database", alice, "en", (world.head + 50, world.since_ms)),
        ("alice away since 1970", alice, "en", (world.before, 0)),
    ]
    return cases


@contextmanager
def rolled_back() -> Iterator[None]:
    """Whatever the loads write (a flushed session, a cycled key) is undone after."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@contextmanager
def frozen_settings(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    # The readers behind are within REPLAY_MAX_ROWS, the one beyond is not.
    max_rows = world.head - world.before + 2
    with override_settings(
        AUTHENTICATION_BACKENDS=BACKENDS,
        SECRET_KEY_FALLBACKS=[OLD_SECRET],
        ALARMS={**settings.ALARMS, "REPLAY_MAX_ROWS": max_rows},
    ):
        now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: now)  # both sides read one clock
        yield MemoryBroker().reads


def outcome(loaded: Any, key: str | None) -> Any:
    """A load as far as a stream sees it; a key Django cycled reads as "cycled"."""
    if isinstance(loaded, Exception):
        return type(loaded)
    state, missed = loaded
    state = replace(state, head=0)
    if key and state.session_key not in (None, key):
        state.session_key = "cycled"
    return state, missed


def test_a_batch_loads_every_reader_as_the_one_by_one_load_did(db, monkeypatch):
    world = build_world()
    cases = readers(world)
    with frozen_settings(world, monkeypatch) as reads:
        requests = [make() for _name, make, _language, _since in cases]
        batch = [
            Load(Login(session=request.session, request=request), language, since)
            for request, (_name, _make, language, since) in zip(requests, cases, strict=True)
        ]
        with rolled_back():
            got = load_batch(reads, batch, world.alarm_ids, world.head)
            flushed_by_batch = not Session.objects.filter(session_key=world.keys["dave"]).exists()
        expected = []
        with rolled_back():
            for _name, make, language, since in cases:
                try:
                    expected.append(
                        one_by_one(reads, make(), language, world.alarm_ids, since, world.head)
                    )
                except Exception as exc:
                    expected.append(exc)
            flushed_one_by_one = not Session.objects.filter(session_key=world.keys["dave"]).exists()

    for (name, make, _language, _since), mine, theirs in zip(cases, got, expected, strict=True):
        key = make().session.session_key
        assert outcome(mine, key) == outcome(theirs, key), name
    # Django's side effects, as before: the session with the stale hash is flushed.
    assert flushed_by_batch and flushed_one_by_one

    # And the mix means what it says (checked on the reference, equal to the batch).
    by_name = {name: outcome(e, None) for (name, *_rest), e in zip(cases, expected, strict=True)}
    users = world.users
    alice, alice_missed = by_name["alice behind"]
    assert alice.viewer.user_id == users["alice"].pk
    assert world.night.pk in alice.viewer.group_ids and len(alice.viewer.group_ids) == 2
    assert alice.seen and alice.dismissed and alice.expires_at is not None
    assert alice_missed.changed and alice_missed.dismissed == {world.dismissed_meanwhile}
    assert {world.deleted, world.expired} <= alice_missed.retract
    assert world.fresh in alice_missed.changed and world.fresh not in alice_missed.retract
    assert world.deleted not in by_name["bob behind"][1].retract  # not bob's to see
    assert by_name["bob"][0].viewer.is_staff and by_name["bob"][0].seen
    assert by_name["alice at the head"][1].retract == {world.expired}
    assert by_name["alice at the head"][1].changed == set()
    for name in ("carol", "dave", "erin", "frank", "visitor", "anonymous"):
        assert by_name[name][0].viewer.user_id is None, name
    assert world.expired not in by_name["dave behind (signed out)"][1].retract  # not a guest's
    for name in ("gina", "hal", "ivy", "jo (signed_cookies)", "kim (cache)"):
        assert by_name[name][0].viewer.user_id is not None, name
    assert by_name["garbled"] is ValidationError  # raised for that connect alone, as before
    for name in ("alice beyond REPLAY_MAX_ROWS", "alice from another database"):
        assert by_name[name][1] is None, name
    assert by_name["alice away since 1970"][1].since == timezone.now() - timedelta(days=7)


def test_a_later_read_in_a_batch_is_the_one_by_one_read(db, monkeypatch):
    """The read a resuming connect makes of rows fanned out while it subscribed."""
    world = build_world()
    viewers = [
        Viewer(),
        Viewer(user_id=world.users["alice"].pk, group_ids=frozenset({world.night.pk})),
        Viewer(user_id=world.users["bob"].pk, is_staff=True, language="ko"),
    ]
    since = (world.before, world.since_ms)
    with frozen_settings(world, monkeypatch) as reads:
        # Each read to its own head, not the batch's.
        got = load_batch(
            reads,
            [Load(None, v.language, since, v, world.head) for v in viewers],
            world.alarm_ids,
            world.before,
        )
        expected = [_missed(reads, v, since, world.head) for v in viewers]
    assert [missed for _state, missed in got] == expected  # type: ignore[misc]
    assert all(m is not None and m.changed for m in expected)


@pytest.mark.parametrize("engine", ["db", "cache", "signed_cookies"])
def test_access_checks_in_a_batch_decide_as_one_by_one(db, monkeypatch, engine):
    """Streams authorised again after an access change: the same batch code, no side effects."""
    world = build_world()
    engine = f"django.contrib.sessions.backends.{engine}"
    keys: dict[int, set[str]] = {}
    users = world.users
    if engine.endswith(".db"):
        for name, key in world.keys.items():
            if name in users:
                keys.setdefault(users[name].pk, set()).add(key)
        keys[users["alice"].pk].add("")  # a stream signed in without a session
        keys[users["erin"].pk].add("")  # the same, of an inactive user
        keys[users["bob"].pk].add("no-such-session-key")
    else:
        for name in ("alice", "dave", "erin", "gina", "hal"):
            keys[users[name].pk] = {_session(engine, _auth(users[name], ALLOW_ALL))}
        users["dave"].set_password("again")
        users["dave"].save()
    with frozen_settings(world, monkeypatch) as reads, override_settings(SESSION_ENGINE=engine):
        with rolled_back():
            got = reads.access(keys, world.alarm_ids)
            assert Session.objects.filter(session_key=world.keys["dave"]).exists()  # no flush
        with rolled_back():
            expected = access_one_by_one(reads, keys, world.alarm_ids)
    assert got == expected
    signed_in = {user_id for user_id, _key in expected}
    assert users["alice"].pk in signed_in and users["gina"].pk in signed_in
    assert users["dave"].pk not in signed_in


# -- a storm: one trip, a few queries, whatever its size ---------------------------------


def storm_queries(n: int) -> tuple[int, list[Any]]:
    """Queries the broker's database thread makes for ``n`` signed-in readers that
    resume at once, and the states they got."""
    User = get_user_model()
    night, _ = Group.objects.get_or_create(name="Night shift")
    users = [User.objects.create_user(f"storm-{n}-{i}") for i in range(n)]
    for user in users:
        user.groups.add(night)
    keys = [_login(user) for user in users]
    shift = api.send_alarm(en("Night shift"), groups=[night])
    for user in users[::2]:
        api.mark_seen(user, [shift.pk])
    counted: list[int] = []

    async def main() -> list[Any]:
        broker = MemoryBroker()
        broker_module._broker = broker
        real_run_db = broker.run_db

        async def run_db(func: Callable[..., Any], *args: Any) -> Any:
            def counting(*inner: Any) -> Any:
                # In the database thread, on its own connection.
                with CaptureQueriesContext(connections[broker.alias]) as queries:
                    result = func(*inner)
                counted.append(len(queries))
                return result

            return await real_run_db(counting, *args)

        try:
            await broker.ensure_started()
            broker.run_db = run_db  # type: ignore[method-assign]
            since = (broker.head, int(time.time() * 1000))
            requests = []
            for key in keys:
                request = RequestFactory().get("/alarms/stream/")
                request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
                requests.append(request)
            opened = await asyncio.gather(*(connect(broker, r, "en", since) for r in requests))
            for connection in opened:
                broker.unsubscribe(connection.sub)
            return [connection.state for connection in opened]
        finally:
            await broker.stop()
            await sync_to_async(connections.close_all)()
            broker_module.reset_broker()

    states = asyncio.run(main())
    assert [s.viewer.user_id for s in states] == [u.pk for u in users]
    assert [bool(s.seen) for s in states] == [i % 2 == 0 for i in range(n)]
    assert all(s.viewer.group_ids == {night.pk} for s in states)
    return sum(counted), states


def test_a_storm_of_connects_makes_a_few_queries_not_a_few_per_connect(transactional_db):
    small, _states = storm_queries(4)
    large, _states = storm_queries(60)
    # The sessions, the users, their groups, their receipts, the expiries since.
    assert large == small <= 6, (small, large)


def test_a_lone_connect_goes_at_once(transactional_db):
    """No storm, no wait: the first connect's load leaves on the loop's next turn."""

    async def main() -> None:
        broker = MemoryBroker()
        broker_module._broker = broker
        trips: list[int] = []
        real_run_db = broker.run_db

        async def run_db(func: Callable[..., Any], *args: Any) -> Any:
            trips.append(len(args[1]))
            return await real_run_db(func, *args)

        try:
            await broker.ensure_started()
            broker.run_db = run_db  # type: ignore[method-assign]
            request = RequestFactory().get("/alarms/stream/")
            request.session = import_module(settings.SESSION_ENGINE).SessionStore()
            first = asyncio.ensure_future(connect(broker, request, "en", None))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            # Already on its way to the database thread, alone.
            assert trips == [1]
            await first
            broker.unsubscribe(first.result().sub)
        finally:
            await broker.stop()
            await sync_to_async(connections.close_all)()
            broker_module.reset_broker()

    asyncio.run(main())


def test_a_connect_that_leaves_while_queued_is_left_out(transactional_db):
    """A reader who goes away before its batch leaves costs the batch nothing."""

    async def main() -> None:
        broker: BaseBroker = MemoryBroker()
        broker_module._broker = broker
        sizes: list[int] = []
        real_run_db = broker.run_db
        in_flight, gate = asyncio.Event(), asyncio.Event()

        async def run_db(func: Callable[..., Any], *args: Any) -> Any:
            sizes.append(len(args[1]))
            in_flight.set()
            await gate.wait()
            return await real_run_db(func, *args)

        def request() -> Any:
            made = RequestFactory().get("/alarms/stream/")
            made.session = import_module(settings.SESSION_ENGINE).SessionStore()
            return made

        try:
            await broker.ensure_started()
            broker.run_db = run_db  # type: ignore[method-assign]
            first = asyncio.ensure_future(connect(broker, request(), "en", None))
            await in_flight.wait()
            queued = [
                asyncio.ensure_future(connect(broker, request(), "en", None)) for _ in range(3)
            ]
            await asyncio.sleep(0)
            queued[1].cancel()
            gate.set()
            opened = await asyncio.gather(first, queued[0], queued[2])
            assert queued[1].cancelled()
            assert sizes == [1, 2]
            for connection in opened:
                broker.unsubscribe(connection.sub)
        finally:
            await broker.stop()
            await sync_to_async(connections.close_all)()
            broker_module.reset_broker()

    asyncio.run(main())

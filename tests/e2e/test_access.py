"""Access follows the user: an open stream loses what its user lost, and gains what they gained.

Each write is committed in this process and read by the server's broker in
another (LISTEN/NOTIFY on PostgreSQL, polling on SQLite). The bounds below are
for a hang, not a speed claim: bench/access.py measures how fast it is.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection

from alarms import api
from tests.e2e.conftest import open_stream, received
from tests.helpers import en
from tests.sse import Event, Stream

pytestmark = pytest.mark.e2e

WITHIN = 10.0  # seconds: far beyond what it takes, short of a hang


def next_of(stream: Stream, kind: str, within: float = WITHIN) -> Event:
    """The next event of ``kind``, failing on any other event first."""
    event = stream.next_event(within)
    assert event.event == kind, (event.event, event.data)
    return event


def ends(stream: Stream, reason: str) -> list[Event]:
    """Read the stream to its end; return what came before it. It must end for ``reason``."""
    found = stream.ends(WITHIN)
    assert f"closed: {reason}" in stream.parser.comments
    return found


@pytest.fixture
def night_shift(db: None) -> Group:
    return Group.objects.create(name="Night shift")


def test_a_user_taken_out_of_a_group_loses_its_alarms(
    server, make_user, session_cookie, night_shift
):
    bob = make_user("bob")
    bob.groups.add(night_shift)
    live = api.send_alarm(en("Boiler"), groups=[night_shift])
    with open_stream(server, session_cookie(bob)) as stream:
        assert next_of(stream, "alarm").json()["id"] == live.pk
        bob.groups.remove(night_shift)
        assert next_of(stream, "retract").json()["id"] == live.pk
        api.send_alarm(en("Night shift only"), groups=[night_shift])
        everyone = api.send_alarm(en("Everyone"))
        # The group's new alarm never comes; the next one he may read does.
        assert next_of(stream, "alarm").json()["id"] == everyone.pk


def test_a_user_put_in_a_group_gets_its_live_alarm_at_once(
    server, make_user, session_cookie, night_shift
):
    carol = make_user("carol")
    live = api.send_alarm(en("Boiler"), groups=[night_shift])
    with open_stream(server, session_cookie(carol)) as stream:
        stream.opened()  # without the group's alarm, and live before she joins it
        night_shift.user_set.add(carol)  # the group's side of the relation
        assert next_of(stream, "alarm").json()["id"] == live.pk
        later = api.send_alarm(en("Later"), groups=[night_shift])
        assert next_of(stream, "alarm").json()["id"] == later.pk
        night_shift.user_set.clear()
        assert next_of(stream, "retract").json()["id"] in {live.pk, later.pk}
        assert next_of(stream, "retract").json()["id"] in {live.pk, later.pk}


def test_a_deleted_group_takes_its_alarms_from_open_streams(
    server, make_user, session_cookie, night_shift
):
    dan = make_user("dan")
    dan.groups.add(night_shift)
    live = api.send_alarm(en("Boiler"), groups=[night_shift])
    with open_stream(server, session_cookie(dan)) as stream:
        assert next_of(stream, "alarm").json()["id"] == live.pk
        night_shift.delete()
        assert next_of(stream, "retract").json()["id"] == live.pk


def test_staff_flag_taken_and_given_follows_the_stream(server, make_user, session_cookie):
    erin = make_user("erin", is_staff=True)
    staff = api.send_alarm(en("Staff only"), audience="staff")
    with open_stream(server, session_cookie(erin)) as stream:
        assert next_of(stream, "alarm").json()["id"] == staff.pk
        erin.is_staff = False
        erin.save()
        assert next_of(stream, "retract").json()["id"] == staff.pk
        signed_in = api.send_alarm(en("Signed-in"), audience="authenticated")
        assert next_of(stream, "alarm").json()["id"] == signed_in.pk  # still open
        erin.is_staff = True
        erin.save(update_fields=["is_staff"])
        assert next_of(stream, "alarm").json()["id"] == staff.pk


def test_a_deactivated_user_is_signed_out_of_every_stream(server, make_user, session_cookie):
    frank = make_user("frank")
    public = api.send_alarm(en("Public"), audience="everyone")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    streams = [open_stream(server, session_cookie(frank)) for _ in range(2)]
    try:
        for stream in streams:
            assert {e.json()["id"] for e in stream.events(2)} == {public.pk, private.pk}
        frank.is_active = False
        frank.save()
        for stream in streams:
            # What only a signed-in reader may see is retracted before the end,
            # so the page shows none of it; the public alarm stays.
            before_end = ends(stream, "signed_out")
            assert [(e.event, e.json()["id"]) for e in before_end] == [("retract", private.pk)]
    finally:
        for stream in streams:
            stream.close()
    # Reconnecting with the same cookie now gives what an anonymous reader gets.
    with open_stream(server, session_cookie(frank)) as again:
        assert [(e.event, e.json()["id"]) for e in received(again)] == [("alarm", public.pk)]


def test_a_deleted_user_is_signed_out(server, make_user, session_cookie):
    gina = make_user("gina")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    with open_stream(server, session_cookie(gina)) as stream:
        assert next_of(stream, "alarm").json()["id"] == private.pk
        gina.delete()
        assert [e.event for e in ends(stream, "signed_out")] == ["retract"]


def post_logout(server, cookie: tuple[str, str]) -> int:
    token = secrets.token_hex(16)  # a CSRF secret of our own: cookie and form agree
    request = urllib.request.Request(
        f"{server.url}/accounts/logout/",
        data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
        headers={"Cookie": f"{cookie[0]}={cookie[1]}; csrftoken={token}"},
        method="POST",
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:  # the 302 after logout
        return exc.code


def test_logout_ends_that_sessions_streams_only(server, make_user, session_cookie):
    hana = make_user("hana")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    laptop, phone = session_cookie(hana), session_cookie(hana)
    with open_stream(server, laptop) as left, open_stream(server, phone) as right:
        for stream in (left, right):
            assert next_of(stream, "alarm").json()["id"] == private.pk
        assert post_logout(server, laptop) in (200, 302)
        assert [e.event for e in ends(left, "signed_out")] == ["retract"]
        # The other device goes on.
        later = api.send_alarm(en("Later"), audience="authenticated")
        assert next_of(right, "alarm").json()["id"] == later.pk


def test_a_flushed_session_ends_its_streams(server, make_user, session_cookie):
    ivan = make_user("ivan")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    cookie = session_cookie(ivan)
    with open_stream(server, cookie) as stream:
        assert next_of(stream, "alarm").json()["id"] == private.pk
        store = import_module(settings.SESSION_ENGINE).SessionStore(cookie[1])
        store.load()
        store.flush()
        assert [e.event for e in ends(stream, "signed_out")] == ["retract"]


def test_a_password_change_ends_the_sessions_it_invalidates(server, make_user, session_cookie):
    jane = make_user("jane")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    with open_stream(server, session_cookie(jane)) as stream:
        assert next_of(stream, "alarm").json()["id"] == private.pk
        jane.set_password("a-new-one")
        jane.save()
        assert [e.event for e in ends(stream, "signed_out")] == ["retract"]


def test_a_stream_does_not_outlive_its_session(server, make_user, session_cookie):
    kim = make_user("kim")
    private = api.send_alarm(en("Signed-in"), audience="authenticated")
    cookie = session_cookie(kim)
    store = import_module(settings.SESSION_ENGINE).SessionStore(cookie[1])
    store.load()
    store.set_expiry(3)  # seconds from now
    store.save()
    with open_stream(server, cookie) as stream:
        assert next_of(stream, "alarm").json()["id"] == private.pk
        assert [e.event for e in ends(stream, "session_expired")] == ["retract"]


def test_selected_users_added_and_removed_still_follow(server, make_user, session_cookie):
    leo = make_user("leo")
    other = make_user("other")
    alarm = api.send_alarm(en("For some"), users=[other])
    with open_stream(server, session_cookie(leo)) as stream:
        stream.opened()
        alarm.users.add(leo)
        assert next_of(stream, "alarm").json()["id"] == alarm.pk
        alarm.users.remove(leo)
        assert next_of(stream, "retract").json()["id"] == alarm.pk


# Repeated here at suite size; bench/access.py runs it with 20 tries and reads
# the printed times (commit to the stream's change, on one clock).
TRIES = int(os.environ.get("ALARMS_ACCESS_TRIES", "3"))


def test_each_change_reaches_the_stream_every_time(server, make_user, session_cookie, night_shift):
    mia = make_user("mia")
    staff = api.send_alarm(en("Staff only"), audience="staff")
    shift = api.send_alarm(en("Boiler"), groups=[night_shift])
    selected = api.send_alarm(en("For some"), users=[make_user("someone")])
    times: dict[str, list[float]] = {}

    def timed(case: str, change: Callable[[], object], arrives: Callable[[], object]) -> None:
        change()
        committed = time.monotonic()  # autocommit: the write is committed on return
        arrives()
        times.setdefault(case, []).append(time.monotonic() - committed)

    def set_staff(value: bool) -> None:
        mia.is_staff = value
        mia.save()

    def expect(stream: Stream, kind: str, alarm_id: int) -> Callable[[], None]:
        def check() -> None:
            assert next_of(stream, kind).json()["id"] == alarm_id

        return check

    with open_stream(server, session_cookie(mia)) as stream:
        stream.opened()
        cases: list[tuple[str, Callable[[], object], str, int]] = [
            ("group added", lambda: mia.groups.add(night_shift), "alarm", shift.pk),
            ("group removed", lambda: mia.groups.remove(night_shift), "retract", shift.pk),
            ("staff given", lambda: set_staff(True), "alarm", staff.pk),
            ("staff taken", lambda: set_staff(False), "retract", staff.pk),
            ("selected user added", lambda: selected.users.add(mia), "alarm", selected.pk),
            ("selected user removed", lambda: selected.users.remove(mia), "retract", selected.pk),
        ]
        for _ in range(TRIES):
            for case, change, kind, alarm_id in cases:
                timed(case, change, expect(stream, kind, alarm_id))

    def sign_out(case: str, change: Callable[[str], object]) -> None:
        """A fresh session and stream for ``change``, which must end the stream."""
        cookie = session_cookie(mia)
        with open_stream(server, cookie) as stream:
            stream.opened()
            timed(case, lambda: change(cookie[1]), lambda: ends(stream, "signed_out"))

    def flush(key: str) -> None:
        store = import_module(settings.SESSION_ENGINE).SessionStore(key)
        store.load()
        store.flush()

    def set_active(value: bool) -> None:
        mia.is_active = value
        mia.save()

    for _ in range(TRIES):
        sign_out("session flushed", flush)
        sign_out("logged out", lambda key: post_logout(server, (settings.SESSION_COOKIE_NAME, key)))
        sign_out("password changed", lambda _key: (mia.set_password("x"), mia.save()))
        sign_out("deactivated", lambda _key: set_active(False))
        set_active(True)
    summary = "; ".join(
        f"{case} p50 {statistics.median(t) * 1000:.0f} ms, max {max(t) * 1000:.0f} ms"
        for case, t in times.items()
    )
    print(f"\ncommit to stream change, {TRIES} tries on {connection.vendor}: {summary}")

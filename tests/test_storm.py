"""Storm control: the count, the refusal in the API, the command and the admin, concurrency."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from html import unescape
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone

from alarms import api, journal
from alarms.models import Alarm, Audience
from alarms.storm import StormLimitExceeded, sent_in_window
from tests.factories import make_alarm, make_user
from tests.helpers import ADD_URL, advisory_lock_waiters, change_url, en, form_data, wait_for


def admin_at() -> datetime:
    """When the admin's form_data() publishes."""
    return timezone.make_aware(datetime(2030, 1, 1, 9, 0))


def sent_at(at: datetime, **fields: Any) -> Alarm:
    """An alarm published at ``at``; one in the past was also created then."""
    alarm = make_alarm(publish_at=at, **fields)
    if at < timezone.now():
        Alarm.objects.filter(pk=alarm.pk).update(created_at=at)
    return alarm


def limited(limit: int | None = 3, window: float = 60) -> Any:
    return override_settings(ALARMS={"STORM_LIMIT": limit, "STORM_WINDOW": window})


# -- the count ------------------------------------------------------------------


@pytest.mark.django_db
def test_counts_the_same_audience_kind_and_not_withdrawn_alarms() -> None:
    now = timezone.now()
    for seconds in (10, 20, 30):
        sent_at(now - timedelta(seconds=seconds), audience=Audience.AUTHENTICATED)
    sent_at(now - timedelta(seconds=5), audience=Audience.STAFF)
    sent_at(now - timedelta(seconds=5), audience=Audience.AUTHENTICATED, withdrawn_at=now)
    sent_at(now - timedelta(seconds=90), audience=Audience.AUTHENTICATED)

    assert sent_in_window(Audience.AUTHENTICATED, at=now) == 3
    assert sent_in_window(Audience.STAFF, at=now) == 1
    assert sent_in_window(Audience.EVERYONE, at=now) == 0


@pytest.mark.django_db
def test_the_window_slides_over_scheduled_alarms_too() -> None:
    at = timezone.now() + timedelta(hours=1)
    before = sent_at(at - timedelta(seconds=50))
    sent_at(at + timedelta(seconds=50))

    # 100 s apart: no 60 s window holds both, whichever holds the new one.
    assert sent_in_window(Audience.AUTHENTICATED, at=at) == 1
    sent_at(at + timedelta(seconds=5))
    # (at+5-60, at+5] holds the one before, the new one and the one 5 s after.
    assert sent_in_window(Audience.AUTHENTICATED, at=at) == 2
    assert sent_in_window(Audience.AUTHENTICATED, at=at, exclude=before.pk) == 2


@pytest.mark.django_db
def test_selected_is_one_audience_per_set_of_users_and_groups() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    night = Group.objects.create(name="Night")
    at = timezone.now() + timedelta(hours=1)
    kw = {"audience": Audience.SELECTED}
    sent_at(at, users=[alice], **kw)
    sent_at(at, users=[bob, alice], **kw)
    sent_at(at, users=[alice], groups=[night], **kw)
    sent_at(at, groups=[night], **kw)

    def count(users: list[Any], groups: list[Any] = ()) -> int:
        return sent_in_window(
            Audience.SELECTED,
            at=at,
            user_ids=[u.pk for u in users],
            group_ids=[g.pk for g in groups],
        )

    assert count([alice]) == 1
    assert count([alice, bob]) == 1
    assert count([alice], [night]) == 1
    assert count([], [night]) == 1
    assert count([bob]) == 0


# -- send_alarm ------------------------------------------------------------------


@pytest.mark.django_db
def test_send_alarm_refuses_the_one_over_the_limit_with_a_readable_message() -> None:
    with limited(3):
        first = api.send_alarm(en("1"))
        api.send_alarm(en("2"))
        api.send_alarm(en("3"))
        with pytest.raises(StormLimitExceeded) as caught:
            api.send_alarm(en("4"))
        # Another audience is not affected.
        api.send_alarm(en("Staff"), audience=Audience.STAFF)

    exc = caught.value
    assert isinstance(exc, ValueError)
    assert (exc.count, exc.limit, exc.window) == (3, 3, 60)
    # Room comes back when the first one leaves the window.
    first.refresh_from_db()
    assert exc.next_at == max(first.publish_at, first.created_at) + timedelta(seconds=60)
    message = str(exc)
    assert "3 alarms to this audience are already published within 60 seconds" in message
    assert "the limit is 3" in message
    assert "The next one may be published at" in message
    assert 'ALARMS["STORM_LIMIT"]' in message
    assert Alarm.objects.filter(audience=Audience.AUTHENTICATED).count() == 3


@pytest.mark.django_db
def test_next_time_skips_past_scheduled_alarms() -> None:
    at = timezone.now() + timedelta(hours=1)
    for seconds in (0, 10, 70, 80):
        sent_at(at + timedelta(seconds=seconds))
    with limited(2), pytest.raises(StormLimitExceeded) as caught:
        api.send_alarm(en("Storm"), publish_at=at + timedelta(seconds=20))
    # At +60 and +70 the first two have left, but a window with +70 and +80 is
    # full; at +130 the one at +70 has left too.
    assert caught.value.count == 2
    assert caught.value.next_at == at + timedelta(seconds=130)


@pytest.mark.django_db
def test_withdrawn_alarms_make_room_again() -> None:
    with limited(2):
        api.send_alarm(en("1"))
        second = api.send_alarm(en("2"))
        with pytest.raises(StormLimitExceeded):
            api.send_alarm(en("3"))
        api.withdraw([second])
        api.send_alarm(en("3"))


@pytest.mark.django_db
def test_none_turns_storm_control_off() -> None:
    with limited(None):
        for n in range(12):
            api.send_alarm(en(str(n)))
    assert Alarm.objects.count() == 12


@pytest.mark.django_db
def test_an_alarm_already_expired_reaches_nobody_and_is_not_checked() -> None:
    now = timezone.now()
    with limited(1):
        api.send_alarm(en("Live"))
        api.send_alarm(
            en("History"),
            publish_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1),
        )
        with pytest.raises(StormLimitExceeded):
            api.send_alarm(en("Live too"))


@pytest.mark.django_db
def test_selected_audiences_are_capped_apart() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with limited(1):
        api.send_alarm(en("Storm"), users=[alice])
        api.send_alarm(en("Storm"), users=[bob])
        with pytest.raises(StormLimitExceeded):
            api.send_alarm(en("Storm"), users=[alice])


@pytest.mark.django_db
def test_a_limit_of_zero_refuses_everything_and_says_so() -> None:
    with limited(0), pytest.raises(StormLimitExceeded) as caught:
        api.send_alarm(en("Storm"))
    assert caught.value.next_at is None
    assert "With a limit of 0 no alarm may be sent." in str(caught.value)


@pytest.mark.django_db
def test_send_alarm_command_reports_it_as_a_command_error() -> None:
    args = ("send_alarm", "--translation", "en", "Title", "Message")
    with limited(1):
        call_command(*args, stdout=StringIO())
        with pytest.raises(CommandError, match="the limit is 1") as caught:
            call_command(*args)
    assert "STORM_LIMIT" in str(caught.value)
    assert Alarm.objects.count() == 1


# -- the admin -------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_add_over_the_limit_is_a_form_error_and_nothing_is_saved(
    admin_client: Client,
) -> None:
    # 50 s apart: one window holds both and the new one between them.
    sent_at(admin_at() - timedelta(seconds=30))
    sent_at(admin_at() + timedelta(seconds=20))
    with limited(2):
        response = admin_client.post(ADD_URL, form_data())

    assert response.status_code == 200
    page = unescape(response.content.decode())
    assert "2 alarms to this audience are already published within 60 seconds" in page
    assert 'raise ALARMS["STORM_LIMIT"]' in page
    assert Alarm.objects.count() == 2
    assert response.context["adminform"].form.non_field_errors()


@pytest.mark.django_db
def test_admin_add_under_the_limit_is_saved(admin_client: Client) -> None:
    sent_at(admin_at() - timedelta(seconds=30))
    sent_at(admin_at() - timedelta(seconds=90), audience=Audience.AUTHENTICATED)
    sent_at(admin_at(), audience=Audience.STAFF)
    with limited(2):
        response = admin_client.post(ADD_URL, form_data())

    assert response.status_code == 302
    assert Alarm.objects.count() == 4


@pytest.mark.django_db
def test_admin_edit_that_keeps_audience_and_time_is_not_checked(admin_client: Client) -> None:
    alarms = [sent_at(admin_at(), audience=Audience.AUTHENTICATED) for _ in range(3)]
    alarm = alarms[0]
    data = form_data([], alarm=alarm, level="critical")
    data["translations-0-title"] = "Fixed a typo"
    with limited(2):
        response = admin_client.post(change_url(alarm), data)

    assert response.status_code == 302
    alarm.refresh_from_db()
    assert alarm.level == "critical"
    assert alarm.translations.get().title == "Fixed a typo"


@pytest.mark.django_db
def test_admin_edit_into_a_full_window_is_refused(admin_client: Client) -> None:
    sent_at(admin_at())
    sent_at(admin_at())
    alarm = sent_at(admin_at() + timedelta(hours=1))
    with limited(2):
        moved = admin_client.post(change_url(alarm), form_data([], alarm=alarm))
        to_staff = admin_client.post(
            change_url(alarm), form_data([], alarm=alarm, audience=Audience.STAFF)
        )

    assert moved.status_code == 200
    assert "the limit is 2" in moved.content.decode()
    assert to_staff.status_code == 302
    alarm.refresh_from_db()
    assert (alarm.audience, alarm.publish_at) == (Audience.STAFF, admin_at())


@pytest.mark.django_db
def test_admin_edit_does_not_count_the_alarm_against_itself(admin_client: Client) -> None:
    sent_at(admin_at())
    alarm = sent_at(admin_at() + timedelta(seconds=10))
    with limited(2):
        response = admin_client.post(change_url(alarm), form_data([], alarm=alarm))

    assert response.status_code == 302
    alarm.refresh_from_db()
    assert alarm.publish_at == admin_at()


@pytest.mark.django_db
def test_admin_publishing_a_draft_is_checked_but_a_draft_is_not(admin_client: Client) -> None:
    sent_at(admin_at())
    with limited(1):
        draft = admin_client.post(ADD_URL, form_data(withdrawn="on"))
        assert draft.status_code == 302
        alarm = Alarm.objects.get(withdrawn_at__isnull=False)
        publish = admin_client.post(change_url(alarm), form_data([], alarm=alarm))

    assert publish.status_code == 200
    assert "the limit is 1" in publish.content.decode()
    alarm.refresh_from_db()
    assert alarm.withdrawn_at is not None


# -- concurrency -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_sends_cannot_both_slip_under_the_limit() -> None:
    """A holds its transaction open after the check; B checks meanwhile and must wait."""
    a_checked, release_a = threading.Event(), threading.Event()
    results: dict[str, Any] = {}
    b_locking = threading.Event()

    def signal_the_lock(execute: Any, sql: str, *args: Any) -> Any:
        # The statement storm.check() serialises senders with: the one B waits at;
        # on SQLite with IMMEDIATE transactions (the settings'), B waits at BEGIN.
        if "pg_advisory_xact_lock" in sql or "WHERE 0 = 1" in sql or sql == "BEGIN IMMEDIATE":
            b_locking.set()
        return execute(sql, *args)

    def sender(name: str, hold: bool) -> None:
        try:
            if hold:
                with transaction.atomic():
                    api.send_alarm(en(name))
                    a_checked.set()
                    release_a.wait(20)
            else:
                with connection.execute_wrapper(signal_the_lock):
                    api.send_alarm(en(name))
            results[name] = "sent"
        except Exception as exc:
            results[name] = exc
            a_checked.set()
            b_locking.set()
        finally:
            connection.close()

    with limited(1):
        a = threading.Thread(target=sender, args=("A", True))
        a.start()
        assert a_checked.wait(20)
        b = threading.Thread(target=sender, args=("B", False))
        b.start()
        assert b_locking.wait(20), "B never reached the storm check's lock"
        if connection.vendor == "postgresql":
            # Let A go only once B is seen waiting for the lock.
            wait_for(
                lambda: advisory_lock_waiters(journal.ADVISORY_LOCK_KEY),
                20,
                "B waiting for the journal's lock",
            )
        # On SQLite nothing shows a connection waiting for the write lock (no
        # pg_locks, and Python's sqlite3 has no busy handler to hook), so the
        # signal is B issuing its locking statement, which then waits for A's
        # commit. Were A to commit first, B would still count A's alarm.
        release_a.set()
        a.join(30)
        b.join(30)

    assert results["A"] == "sent"
    assert isinstance(results["B"], StormLimitExceeded), results["B"]
    assert list(Alarm.objects.values_list("translations__title", flat=True)) == ["A"]


@pytest.mark.django_db
def test_the_check_locks_where_the_alarm_is_written_not_where_brokers_read() -> None:
    # ALARMS["DATABASE"] names the brokers' connection. The check's lock must be
    # the one the journal write takes, on the alarm's own database: on another
    # connection to the same server the two would wait on each other for good.
    settings = {"STORM_LIMIT": 1, "STORM_WINDOW": 60, "DATABASE": "brokers-only"}
    with override_settings(ALARMS=settings):
        api.send_alarm(en("First"))
        with pytest.raises(StormLimitExceeded):
            api.send_alarm(en("Second"))
    assert Alarm.objects.count() == 1

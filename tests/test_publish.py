"""alarms.api.publish: external ids, tokens, dry runs and the signals it sends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connections, transaction
from django.dispatch import Signal
from django.urls import reverse

from alarms import api, signals, storm
from alarms.models import Alarm, AlarmChange, Audience, Level
from alarms.tokens import create_token
from tests.factories import TEXT, ahead, make_user
from tests.helpers import change_url, form_data

pytestmark = pytest.mark.django_db


def text(*codes: str, title: str | None = None) -> dict[str, dict[str, str]]:
    return {code: {"title": title or TEXT[code][0], "message": TEXT[code][1]} for code in codes}


def journal_rows() -> int:
    return AlarmChange.objects.count()


class Heard:
    """Every alarms.signals signal sent while it listens, as (name, kwargs)."""

    NAMES = (
        "alarm_created",
        "alarm_updated",
        "alarm_withdrawn",
        "alarm_deleted",
        "alarm_dismissed",
    )

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._receivers: list[tuple[Signal, Any]] = []

    def __enter__(self) -> Heard:
        for name in self.NAMES:
            signal = getattr(signals, name)

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                assert sender is Alarm
                kwargs.pop("signal")
                self.sent.append((_name, kwargs))

            signal.connect(receiver, weak=False)
            self._receivers.append((signal, receiver))
        return self

    def __exit__(self, *exc: object) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@pytest.fixture
def heard() -> Iterator[Heard]:
    with Heard() as listening:
        yield listening


# -- external ids -----------------------------------------------------------------


def test_a_new_external_id_creates_an_alarm_that_records_it(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = api.publish(text("en"), external_id="ci:build-42")

    assert (result.created, result.changed) == (True, True)
    assert Alarm.objects.get().external_id == "ci:build-42"


def test_the_same_send_again_writes_nothing(heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = api.publish(text("en", "ko"), level=Level.ERROR, external_id="k")
    rows = journal_rows()

    with django_capture_on_commit_callbacks(execute=True):
        again = api.publish(text("en", "ko"), level=Level.ERROR, external_id="k")

    assert again.alarm.pk == first.alarm.pk
    assert (again.created, again.changed) == (False, False)
    assert Alarm.objects.count() == 1
    # No journal row, so no open page shows the alarm a second time.
    assert journal_rows() == rows
    assert heard.names() == ["alarm_created"]


def test_a_send_that_differs_updates_the_alarm_in_place(heard, django_capture_on_commit_callbacks):
    group = Group.objects.create(name="ops")
    with django_capture_on_commit_callbacks(execute=True):
        first = api.publish(text("en", "ko", "ar"), external_id="k")
    rows = journal_rows()

    with django_capture_on_commit_callbacks(execute=True):
        again = api.publish(
            text("en", "ja", title="Worse now"),
            level=Level.CRITICAL,
            groups=["ops"],
            url="/status/",
            expires_at=ahead(hours=1),
            external_id="k",
        )

    alarm = Alarm.objects.get()
    assert again.alarm.pk == first.alarm.pk == alarm.pk
    assert (again.created, again.changed) == (False, True)
    assert (alarm.level, alarm.audience, alarm.url) == (
        Level.CRITICAL,
        Audience.SELECTED,
        "/status/",
    )
    assert list(alarm.groups.all()) == [group]
    # The languages the send no longer names are gone.
    assert dict(alarm.translations.values_list("language_code", "title")) == {
        "en": "Worse now",
        "ja": "Worse now",
    }
    assert journal_rows() > rows
    assert set(AlarmChange.objects.filter(id__gt=rows).values_list("alarm_id", flat=True)) == {
        alarm.pk
    }
    assert heard.names() == ["alarm_created", "alarm_updated"]


def test_a_withdrawn_alarm_is_not_brought_back() -> None:
    first = api.publish(text("en"), external_id="k")
    api.withdraw([first.alarm])

    with pytest.raises(api.AlarmEnded, match="withdrawn"):
        api.publish(text("en", title="Again"), external_id="k")

    alarm = Alarm.objects.get()
    assert alarm.withdrawn_at is not None
    assert alarm.translations.get().title == TEXT["en"][0]


@pytest.mark.parametrize("key", ["", "   ", "x" * 201, "bad\x00key"])
def test_a_bad_external_id_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="external id"):
        api.publish(text("en"), external_id=key)
    assert not Alarm.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_simultaneous_sends_with_one_external_id_make_one_alarm() -> None:
    """Two senders that both find no alarm for the key: the second insert waits on
    the first's unique key, fails, and becomes an update of the first's alarm."""
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def send(title: str) -> None:
        try:
            with transaction.atomic():
                # Both look before either writes.
                assert not Alarm.objects.filter(external_id="same").exists()
                barrier.wait(timeout=10)
                results.append(api.publish(text("en", title=title), external_id="same"))
        except Exception as exc:  # the assertion below shows it
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(t,)) for t in ("One", "Two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert all(isinstance(r, api.Published) for r in results), results
    assert sorted(r.created for r in results) == [False, True]
    assert Alarm.objects.count() == 1


# -- tokens -----------------------------------------------------------------------


def test_a_token_names_the_audience_when_the_sender_does_not() -> None:
    ops = Group.objects.create(name="ops")
    token, _ = create_token("pager", audience=Audience.SELECTED, groups=[ops])
    staff_token, _ = create_token("staff", audience=Audience.STAFF)

    alarm = api.publish(text("en"), token=token).alarm
    staff_alarm = api.publish(text("en"), token=staff_token).alarm
    named = api.publish(text("en"), token=staff_token, audience=Audience.EVERYONE).alarm

    assert (alarm.audience, list(alarm.groups.all())) == (Audience.SELECTED, [ops])
    assert alarm.created_by_token == token
    assert staff_alarm.audience == Audience.STAFF
    assert named.audience == Audience.EVERYONE


def test_a_tokens_storm_limit_counts_its_alarms_to_every_audience(settings) -> None:
    settings.ALARMS = {"STORM_LIMIT": 100, "STORM_WINDOW": 60}
    token, _ = create_token("ci", storm_limit=2)
    other, _ = create_token("other", storm_limit=2)
    api.publish(text("en"), token=token, audience=Audience.STAFF)
    api.publish(text("en"), token=token, audience=Audience.EVERYONE)

    with pytest.raises(storm.StormLimitExceeded) as refused:
        api.publish(text("en"), token=token, audience=Audience.AUTHENTICATED)

    assert (refused.value.count, refused.value.limit, refused.value.token) == (2, 2, "ci")
    assert refused.value.next_at is not None
    assert "sent with the token “ci”" in str(refused.value)
    assert "the token's storm limit" in str(refused.value)
    # Another token, and a send without one, are counted apart.
    api.publish(text("en"), token=other, audience=Audience.AUTHENTICATED)
    api.publish(text("en"), audience=Audience.AUTHENTICATED)
    assert Alarm.objects.count() == 4


def test_a_token_without_its_own_limit_takes_the_sites(settings) -> None:
    settings.ALARMS = {"STORM_LIMIT": 1, "STORM_WINDOW": 60}
    token, _ = create_token("ci")
    api.publish(text("en"), token=token, audience=Audience.STAFF)

    with pytest.raises(storm.StormLimitExceeded):
        api.publish(text("en"), token=token, audience=Audience.EVERYONE)


# -- dry runs ---------------------------------------------------------------------


def test_a_dry_run_checks_everything_and_keeps_nothing(heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = api.publish(text("en", "ko"), external_id="k", dry_run=True)

    assert result.created and result.alarm.pk is not None
    assert not Alarm.objects.exists()
    assert journal_rows() == 0
    assert callbacks == []
    assert heard.sent == []


def test_a_dry_run_meets_the_storm_limit(settings) -> None:
    settings.ALARMS = {"STORM_LIMIT": 1, "STORM_WINDOW": 60}
    api.publish(text("en"))

    with pytest.raises(storm.StormLimitExceeded):
        api.publish(text("en"), dry_run=True)
    assert Alarm.objects.count() == 1


# -- signals ----------------------------------------------------------------------


def test_signals_follow_the_commit_and_never_a_rollback(heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                api.publish(text("en"))
                assert heard.sent == []  # not before the commit
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert heard.sent == []

    with django_capture_on_commit_callbacks(execute=True):
        alarm = api.publish(text("en")).alarm
    assert heard.sent == [("alarm_created", {"alarm": alarm})]


def test_withdraw_dismiss_and_delete_send_one_signal_per_alarm(
    heard, django_capture_on_commit_callbacks
):
    alice = make_user("alice")
    first = api.publish(text("en")).alarm
    second = api.publish(text("en"), audience=Audience.EVERYONE).alarm
    heard.sent.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert api.dismiss(alice, [first.pk, second.pk, first.pk]) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert api.dismiss(alice, [first.pk]) == 0  # already dismissed: no change
    with django_capture_on_commit_callbacks(execute=True):
        assert api.withdraw(Alarm.objects.all()) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert api.withdraw(Alarm.objects.all()) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete_alarms(Alarm.objects.filter(pk=first.pk)) == 1

    assert heard.sent == [
        ("alarm_dismissed", {"alarm_id": first.pk, "user": alice}),
        ("alarm_dismissed", {"alarm_id": second.pk, "user": alice}),
        ("alarm_withdrawn", {"alarm": first}),
        ("alarm_withdrawn", {"alarm": second}),
        ("alarm_deleted", {"alarm_id": first.pk, "external_id": None}),
    ]
    withdrawn = heard.sent[2][1]["alarm"]
    assert withdrawn.withdrawn_at is not None
    assert not Alarm.objects.filter(pk=first.pk).exists()


# -- the admin sends them too -------------------------------------------------------


def test_the_admin_sends_a_signal_per_change_and_none_for_a_resave(
    admin_client, heard, django_capture_on_commit_callbacks
):
    add_url = reverse("admin:alarms_alarm_add")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(add_url, form_data([("en", *TEXT["en"])]))
    assert response.status_code == 302
    alarm = Alarm.objects.get()

    def save(**fields: Any) -> None:
        # What the browser posts back: publish_at's default is callable, so the form
        # tells a change by the hidden initial value it rendered.
        fields |= {"initial-publish_at_0": "2030-01-01", "initial-publish_at_1": "09:00:00"}
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(change_url(alarm), form_data([], alarm=alarm, **fields))
        assert response.status_code == 302, response.content

    save()  # saved again as it stands
    save(level=Level.CRITICAL)
    save(level=Level.CRITICAL, withdrawn="on")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:alarms_alarm_delete", args=(alarm.pk,)), {"post": "yes"}
        )
    assert response.status_code == 302

    assert heard.names() == ["alarm_created", "alarm_updated", "alarm_withdrawn", "alarm_deleted"]
    assert heard.sent[-1][1] == {"alarm_id": alarm.pk, "external_id": None}

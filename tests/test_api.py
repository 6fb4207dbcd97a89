from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from alarms import api
from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmTranslation, Audience, Level
from tests.factories import TEXT, ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db


def text(*codes: str) -> dict[str, dict[str, str]]:
    return {code: {"title": TEXT[code][0], "message": TEXT[code][1]} for code in codes}


def changes(**filters: Any) -> list[tuple[int, str, int | None]]:
    return list(AlarmChange.objects.filter(**filters).values_list("alarm_id", "kind", "user_id"))


# -- send_alarm -----------------------------------------------------------------


def test_send_alarm_creates_a_live_alarm_with_translations() -> None:
    author = make_user("author")
    before = timezone.now()

    alarm = api.send_alarm(
        text("en", "ko", "ar"), level=Level.CRITICAL, url="https://example.com/x", created_by=author
    )

    assert isinstance(alarm, Alarm)
    assert Alarm.objects.live().get() == alarm
    assert (alarm.level, alarm.audience, alarm.url) == (
        Level.CRITICAL,
        Audience.AUTHENTICATED,
        "https://example.com/x",
    )
    assert alarm.created_by == author
    assert before <= alarm.publish_at <= timezone.now()
    assert alarm.expires_at is None
    assert {t.language_code: (t.title, t.message) for t in alarm.translations.all()} == {
        code: TEXT[code] for code in ("en", "ko", "ar")
    }
    assert (alarm.pk, "alarm", None) in changes()


def test_send_alarm_cleans_text_and_language_codes() -> None:
    alarm = api.send_alarm({"EN": {"title": "  Padded  ", "message": "\nBody\n"}})

    translation = alarm.translations.get()
    assert (translation.language_code, translation.title, translation.message) == (
        "en",
        "Padded",
        "Body",
    )


def test_send_alarm_to_users_and_groups_defaults_to_selected() -> None:
    alice = make_user("alice")
    night = Group.objects.create(name="Night shift")
    day = Group.objects.create(name="Day shift")

    alarm = api.send_alarm(text("en"), users=[alice], groups=["Night shift", day])

    assert alarm.audience == Audience.SELECTED
    assert list(alarm.users.all()) == [alice]
    assert set(alarm.groups.all()) == {night, day}


def test_send_alarm_scheduled_with_expiry() -> None:
    publish_at = ahead(hours=1)

    alarm = api.send_alarm(
        text("en"),
        audience=Audience.EVERYONE,
        publish_at=publish_at,
        expires_at=publish_at + timedelta(hours=1),
    )

    assert Alarm.objects.scheduled().get() == alarm
    assert alarm.publish_at == publish_at


@pytest.mark.parametrize(
    ("kwargs", "message"),
    (
        ({"level": "loud"}, "Unknown level 'loud': choose one of info, success"),
        ({"audience": "cats"}, "Unknown audience 'cats': choose one of everyone"),
        (
            {"audience": Audience.STAFF, "groups": ["Night shift"]},
            'Users and groups can only be given with the audience "selected".',
        ),
        (
            {"audience": Audience.SELECTED},
            'The audience "selected" needs at least one user or group.',
        ),
        ({"groups": ["Nobody"]}, "Unknown group 'Nobody'."),
        ({"url": "javascript:alert(1)"}, "Unsafe link 'javascript:alert(1)'"),
        ({"url": "//evil.example/"}, "Unsafe link"),
        (
            {"translations": {"xx": {"title": "T", "message": "M"}}},
            "Unknown language 'xx': this site speaks en, ko, ja, ar.",
        ),
        (
            {"translations": {"en": {"title": "T", "message": "M"}, "EN": {"title": "T"}}},
            "Language 'en' is given twice.",
        ),
        (
            {"translations": text("ko", "ja")},
            "A translation in the default language 'en' is required.",
        ),
        ({"translations": {}}, "A translation in the default language 'en' is required."),
        (
            {"translations": {"en": {"title": " ", "message": "M"}}},
            "The 'en' translation needs both a title and a message.",
        ),
        (
            {"translations": {"en": {"title": "T"}}},
            "The 'en' translation needs both a title and a message.",
        ),
        (
            {"translations": {"en": {"title": "T" * 201, "message": "M"}}},
            "The 'en' title is longer than 200 characters.",
        ),
        (
            {"translations": {"en": {"title": "T", "message": "M" * 10001}}},
            "The 'en' message is longer than 10000 characters.",
        ),
        (
            {"publish_at": "later", "expires_at": "earlier"},
            "expires_at must be after publish_at.",
        ),
        (
            {"publish_at": "later", "expires_at": "later"},
            "expires_at must be after publish_at.",
        ),
        (
            {"publish_at": datetime(2030, 1, 1, 9, 0)},
            "publish_at and expires_at must be timezone-aware.",
        ),
        (
            # Naive beside aware: a clear message, not a TypeError from comparing them.
            {"publish_at": datetime(2030, 1, 1, 9, 0), "expires_at": "later"},
            "publish_at and expires_at must be timezone-aware.",
        ),
    ),
)
def test_send_alarm_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    Group.objects.create(name="Night shift")
    times = {"later": ahead(hours=2), "earlier": ahead(hours=1)}
    kwargs = {k: times.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    translations = kwargs.pop("translations", text("en"))

    with pytest.raises(ValueError) as excinfo:
        api.send_alarm(translations, **kwargs)

    assert message in str(excinfo.value)
    assert not Alarm.objects.exists()
    assert not AlarmChange.objects.exists()


def test_send_alarm_is_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(AlarmTranslation.objects, "bulk_create", broken)

    with pytest.raises(RuntimeError):
        api.send_alarm(text("en", "ko"))

    assert not Alarm.objects.exists()


# -- withdraw -------------------------------------------------------------------


def test_withdraw_a_queryset() -> None:
    live = make_alarm(publish_at=ago(hours=1))
    scheduled = make_alarm(publish_at=ahead(hours=1))
    already = make_alarm(withdrawn_at=ago(hours=1))
    untouched = make_alarm()
    withdrawn_at = already.withdrawn_at
    AlarmChange.objects.all().delete()

    count = api.withdraw(Alarm.objects.exclude(pk=untouched.pk))

    assert count == 2
    assert set(Alarm.objects.withdrawn().values_list("pk", flat=True)) == {
        live.pk,
        scheduled.pk,
        already.pk,
    }
    already.refresh_from_db()
    assert already.withdrawn_at == withdrawn_at  # the first withdrawal time is kept
    assert sorted(changes()) == sorted([(live.pk, "alarm", None), (scheduled.pk, "alarm", None)])
    assert Alarm.objects.live().get() == untouched


def test_withdraw_a_list_of_alarms() -> None:
    alarm = make_alarm()

    assert api.withdraw([alarm]) == 1
    assert api.withdraw([alarm]) == 0
    alarm.refresh_from_db()
    assert alarm.status == "withdrawn"


# -- receipts -------------------------------------------------------------------


def test_mark_seen_records_the_first_time_only() -> None:
    alice = make_user("alice")
    first, second = make_alarm(), make_alarm()

    assert api.mark_seen(alice, [first.pk]) == 1
    seen_at = AlarmReceipt.objects.get(user=alice, alarm=first).seen_at
    assert api.mark_seen(alice, [first.pk, second.pk]) == 1

    receipts = {r.alarm_id: r for r in AlarmReceipt.objects.filter(user=alice)}
    assert receipts[first.pk].seen_at == seen_at
    assert receipts[second.pk].seen_at is not None
    assert receipts[first.pk].dismissed_at is None
    # Seeing is not something other streams need to hear about.
    assert not changes(kind="dismiss")


def test_dismiss_hides_the_alarm_for_that_user_only() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    alarm = make_alarm()

    assert api.dismiss(alice, [alarm.pk]) == 1

    receipt = AlarmReceipt.objects.get(user=alice, alarm=alarm)
    assert receipt.dismissed_at is not None
    assert receipt.seen_at is not None  # dismissed implies seen, for the counts
    assert not Alarm.objects.for_user(alice).exists()
    assert Alarm.objects.for_user(bob).get() == alarm
    assert changes(kind="dismiss") == [(alarm.pk, "dismiss", alice.pk)]
    # Twice is a no-op, and writes no second journal row.
    assert api.dismiss(alice, [alarm.pk]) == 0
    assert len(changes(kind="dismiss")) == 1


def test_dismiss_after_seen_updates_the_receipt() -> None:
    alice = make_user("alice")
    alarm = make_alarm()
    api.mark_seen(alice, [alarm.pk])
    seen_at = AlarmReceipt.objects.get().seen_at

    assert api.dismiss(alice, [str(alarm.pk)]) == 1

    receipt = AlarmReceipt.objects.get()
    assert receipt.seen_at == seen_at
    assert receipt.dismissed_at is not None


def test_receipts_ignore_alarms_the_user_may_not_see() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    bobs = make_alarm(audience=Audience.SELECTED, users=[bob])
    staff_only = make_alarm(audience=Audience.STAFF)
    own = make_alarm(audience=Audience.SELECTED, users=[alice])

    assert api.dismiss(alice, [bobs.pk, staff_only.pk, own.pk, 999999]) == 1
    assert api.mark_seen(alice, [bobs.pk, staff_only.pk]) == 0

    assert list(AlarmReceipt.objects.values_list("user__username", "alarm_id")) == [
        ("alice", own.pk)
    ]
    assert changes(kind="dismiss") == [(own.pk, "dismiss", alice.pk)]


def test_receipts_for_anonymous_visitors_are_not_recorded() -> None:
    alarm = make_alarm(audience=Audience.EVERYONE)

    assert api.mark_seen(AnonymousUser(), [alarm.pk]) == 0
    assert api.dismiss(AnonymousUser(), [alarm.pk]) == 0
    assert not AlarmReceipt.objects.exists()


def test_public_api() -> None:
    assert sorted(api.__all__) == [
        "AlarmEnded",
        "InvalidAlarm",
        "Published",
        "delete_alarms",
        "dismiss",
        "mark_seen",
        "publish",
        "send_alarm",
        "withdraw",
    ]


@pytest.mark.parametrize(("verb", "field"), [("dismiss", "dismissed_at"), ("mark_seen", "seen_at")])
def test_a_receipt_written_meanwhile_by_another_request_keeps_this_ones_field(
    monkeypatch: pytest.MonkeyPatch, verb: str, field: str
) -> None:
    """The seen and the dismiss of one toast posted at once: each request finds no
    receipt, and the one that inserts second must not lose its field."""
    reader = make_user("racer")
    alarm = make_alarm()
    other = "seen_at" if field == "dismissed_at" else "dismissed_at"
    shown = api._shown_languages

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        # After this request's read of the receipts, before its insert.
        AlarmReceipt.objects.create(user=reader, alarm=alarm, **{other: timezone.now()})
        return shown(*args, **kwargs)

    monkeypatch.setattr(api, "_shown_languages", meanwhile)

    getattr(api, verb)(reader, [alarm.pk])

    receipt = AlarmReceipt.objects.get(user=reader, alarm=alarm)
    assert getattr(receipt, field) is not None
    assert getattr(receipt, other) is not None

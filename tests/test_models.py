from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from alarms.models import Alarm, AlarmReceipt, AlarmTranslation
from tests.factories import ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db


def test_one_translation_per_language() -> None:
    alarm = make_alarm(("en",))

    with pytest.raises(IntegrityError), transaction.atomic():
        AlarmTranslation.objects.create(alarm=alarm, language_code="en", title="T", message="M")
    # Another language, or the same language on another alarm, is fine.
    AlarmTranslation.objects.create(alarm=alarm, language_code="ko", title="T", message="M")
    make_alarm(("en",))


def test_translation_constraint_message_in_validation() -> None:
    alarm = make_alarm(("en",))
    duplicate = AlarmTranslation(alarm=alarm, language_code="en", title="T", message="M")

    with pytest.raises(ValidationError) as excinfo:
        duplicate.validate_constraints()

    assert "already has a translation in that language" in str(excinfo.value)


@pytest.mark.parametrize("offset", (0, -60))
def test_expiry_must_come_after_publication_in_the_database(offset: int) -> None:
    publish_at = ahead(hours=1)
    expires_at = ahead(hours=1, seconds=offset) if offset else publish_at

    with pytest.raises(IntegrityError), transaction.atomic():
        Alarm.objects.create(publish_at=publish_at, expires_at=expires_at)


def test_open_ended_and_later_expiry_are_allowed() -> None:
    Alarm.objects.create(publish_at=ago(hours=1), expires_at=None)
    Alarm.objects.create(publish_at=ago(hours=1), expires_at=ago(minutes=59))

    assert Alarm.objects.count() == 2


def test_clean_explains_a_bad_window() -> None:
    alarm = Alarm(publish_at=ahead(hours=2), expires_at=ahead(hours=1))

    with pytest.raises(ValidationError) as excinfo:
        alarm.full_clean()

    assert excinfo.value.message_dict["expires_at"] == [
        "The expiry must come after the publication time."
    ]


def test_language_must_be_a_site_language() -> None:
    alarm = make_alarm(("en",))
    translation = AlarmTranslation(alarm=alarm, language_code="fr", title="T", message="M")

    with pytest.raises(ValidationError) as excinfo:
        translation.full_clean()
    assert "language_code" in excinfo.value.message_dict

    # The choices follow LANGUAGES at run time, not as frozen by the migration.
    with override_settings(LANGUAGES=[("en", "English"), ("fr", "French")]):
        translation.full_clean()


def test_str_uses_the_default_language() -> None:
    alarm = Alarm.objects.create()
    assert str(alarm) == f"Alarm #{alarm.pk}"

    AlarmTranslation.objects.create(alarm=alarm, language_code="ko", title="제목", message="M")
    assert str(alarm) == "제목"  # any translation beats none

    english = AlarmTranslation.objects.create(
        alarm=alarm, language_code="en", title="Title", message="M"
    )
    assert str(alarm) == "Title"
    assert str(english) == "Title [en]"


def test_receipt_one_per_user_and_alarm() -> None:
    alarm = make_alarm(("en",))
    user = make_user("alice")
    receipt = AlarmReceipt.objects.create(alarm=alarm, user=user)

    assert str(receipt) == f"alice / {alarm.pk}"
    with pytest.raises(IntegrityError), transaction.atomic():
        AlarmReceipt.objects.create(alarm=alarm, user=user)


# Offsets in minutes from now (None: not set), turned into times when the test runs.
@pytest.mark.parametrize(
    ("publish", "expires", "withdrawn", "status"),
    (
        (-1, None, None, "live"),
        (-2, 60, None, "live"),
        (60, None, None, "scheduled"),
        (-2, -1, None, "expired"),
        (60, None, -1, "withdrawn"),
        (-2, -1, 0, "withdrawn"),
    ),
)
def test_status(publish: int, expires: int | None, withdrawn: int | None, status: str) -> None:
    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else timezone.now() + timedelta(minutes=minutes)

    alarm = Alarm.objects.create(
        publish_at=at(publish), expires_at=at(expires), withdrawn_at=at(withdrawn)
    )

    assert alarm.status == status


def test_deleting_an_alarm_deletes_translations_and_receipts() -> None:
    alarm = make_alarm(("en", "ko"))
    AlarmReceipt.objects.create(alarm=alarm, user=make_user("alice"))

    alarm.delete()

    assert not AlarmTranslation.objects.exists()
    assert not AlarmReceipt.objects.exists()

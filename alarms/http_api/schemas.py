"""What the API takes and gives: pydantic models, from which the OpenAPI document is made.

They check shapes and types only. Every rule about an alarm (languages, the
default language, sizes, safe links, audiences, times, storm control) is
``alarms.api.publish``'s, so the admin, the commands, the webhooks and this API
refuse the same sends with the same messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from django.core.exceptions import ValidationError
from ninja import Schema
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field

from alarms import rules
from alarms.models import Audience, Level
from alarms.validators import validate_storable_text


class Status(StrEnum):
    """``alarms.rules.status``: the first that holds of withdrawn, scheduled, expired, live."""

    LIVE = rules.LIVE
    SCHEDULED = rules.SCHEDULED
    EXPIRED = rules.EXPIRED
    WITHDRAWN = rules.WITHDRAWN


def _storable(value: str) -> str:
    try:
        validate_storable_text(value)
    except ValidationError as exc:
        raise ValueError(exc.messages[0]) from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


StorableText = Annotated[str, AfterValidator(_storable)]
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]


# -- what a sender sends -------------------------------------------------------------


class TranslationIn(Schema):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(description=f"At most {rules.MAX_TITLE} characters.")
    message: str = Field(description=f"At most {rules.MAX_MESSAGE} characters.")


class AlarmIn(Schema):
    """An alarm, described in full: a send with the key of an existing alarm makes
    that alarm what it describes (what it leaves out takes its default)."""

    model_config = ConfigDict(extra="forbid")

    translations: dict[str, TranslationIn] = Field(
        description="Language code (of the site's LANGUAGES) to title and message; "
        "the site's default language is required."
    )
    level: Level = Level.INFO
    audience: Audience | None = Field(
        None,
        description='Default: "selected" when users or groups are given, else the '
        "token's default audience.",
    )
    users: list[str] = Field(default_factory=list, description="Usernames (audience selected).")
    groups: list[str] = Field(default_factory=list, description="Group names (audience selected).")
    url: str = Field("", description="An http(s) address or a path on this site.")
    publish_at: datetime | None = Field(
        None, description="With a time zone offset. Default: now (for a new alarm)."
    )
    expires_at: datetime | None = Field(None, description="With a time zone offset.")
    external_id: str | None = Field(
        None,
        description=f"Your key for this alarm (1 to {rules.MAX_EXTERNAL_ID} characters): a "
        "send with the key of an existing alarm updates it. Or the Idempotency-Key header.",
    )


class AlarmFilters(Schema):
    status: Status | None = None
    level: Level | None = None
    audience: Audience | None = None
    external_id: StorableText | None = Field(None, max_length=rules.MAX_EXTERNAL_ID)
    mine: bool = Field(False, description="Only the alarms this token created.")
    published_after: UtcTime | None = Field(None, description="publish_at at or after this.")
    published_before: UtcTime | None = Field(None, description="publish_at before this.")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=10**9)


# -- what a sender gets --------------------------------------------------------------


class TranslationOut(Schema):
    title: str
    message: str


class Counts(Schema):
    seen: int
    dismissed: int


class Receipts(Schema):
    seen: int = Field(description="Signed-in users the alarm was shown to.")
    dismissed: int = Field(description="Signed-in users who dismissed it.")
    languages: dict[str, Counts] = Field(
        description='Per language the alarm was shown in; "unknown" for receipts '
        "recorded before languages were."
    )


class AlarmOut(Schema):
    id: int
    status: Status
    level: Level
    audience: Audience
    users: list[str]
    groups: list[str]
    url: str
    publish_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None
    external_id: str | None
    created_by: str | None = Field(description="The username of the user who created it.")
    created_by_token: str | None = Field(description="The name of the token that created it.")
    created_at: datetime
    updated_at: datetime
    translations: dict[str, TranslationOut]
    receipts: Receipts


class PublishedOut(AlarmOut):
    created: bool = Field(description="A new alarm (201), or an existing one (200).")
    changed: bool = Field(description="False: the alarm already was as sent; nothing written.")


class AlarmPage(Schema):
    count: int = Field(description="Alarms that match the filters, on every page.")
    next: str | None = Field(description="The next page, as a path with its query.")
    previous: str | None
    items: list[AlarmOut]


# -- what a reader gets (/me/...) ------------------------------------------------------


class MyFilters(Schema):
    lang: str | None = Field(
        None,
        max_length=35,
        description="The language to show the texts in. Default: the user's stored "
        "language, else the request's (language cookie, Accept-Language). A language "
        "the site does not speak is passed over.",
    )
    level: Level | None = None
    q: StorableText | None = Field(
        None,
        max_length=200,
        description="Only alarms whose title or message, in the language shown, "
        "contains this (case-insensitive).",
    )
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=10**9)


class MyAlarm(Schema):
    id: int
    level: Level
    title: str
    message: str
    language: str = Field(description="The language of the title and message shown.")
    dir: str = Field(description='"ltr" or "rtl": the direction of that language.')
    url: str
    published_at: datetime
    expires_at: datetime | None
    unread: bool = Field(description="Live now and not dismissed: what the badge counts.")
    seen_at: datetime | None = Field(description="When the user was first shown it.")
    dismissed_at: datetime | None = Field(description="When the user dismissed it.")


class MyAlarmPage(Schema):
    count: int = Field(description="Alarms that match the filters, on every page.")
    language: str = Field(description="The language asked for (each item says its own).")
    next: str | None = Field(description="The next page, as a path with its query.")
    previous: str | None
    items: list[MyAlarm]


class UnreadCount(Schema):
    unread: int = Field(
        description="Alarms live now, visible to the user, not dismissed by them: the badge."
    )
    unseen: int = Field(description="Of those, the ones the user was never shown.")


class ErrorItem(Schema):
    loc: list[str | int] = Field(description='Where: ["body", "translations", "fr", "title"].')
    msg: str
    type: str


class Errors(Schema):
    errors: list[ErrorItem]

"""The operations of ``/alarms/api/v1/``: publish, read, list, withdraw.

Each goes through the one service, ``alarms.api`` (publish, withdraw), and its
rules; what is here is reading requests and describing alarms.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Query, Router
from ninja.params.functions import Header
from ninja.responses import Status as Answer

from alarms import api as service
from alarms.hooks import alertmanager
from alarms.http_api.auth import BearerToken, token_of
from alarms.http_api.errors import ApiError
from alarms.http_api.schemas import (
    AlarmFilters,
    AlarmIn,
    AlarmOut,
    AlarmPage,
    Errors,
    PublishedOut,
)
from alarms.models import Alarm, AlarmReceipt, TokenScope
from alarms.querysets import AlarmQuerySet
from alarms.rules import MAX_EXTERNAL_ID
from alarms.validators import validate_storable_text

router = Router(tags=["alarms"])

PUBLISH = BearerToken(TokenScope.PUBLISH)
READ = BearerToken(TokenScope.READ)
WITHDRAW = BearerToken(TokenScope.WITHDRAW)
UNKNOWN_LANGUAGE = "unknown"


def errors(*codes: int) -> dict[int, type[Errors]]:
    """The error answers an operation may give, for the OpenAPI document."""
    return dict.fromkeys(codes, Errors)


# -- reading alarms ---------------------------------------------------------------------


def alarms() -> AlarmQuerySet:
    return (
        Alarm.objects.with_status()
        .select_related("created_by", "created_by_token")
        .prefetch_related("translations", "users", "groups")
    )


def by_id(alarm_id: int) -> Alarm:
    # An id past what the database stores finds nothing (Django 5.0 on): a 404 too.
    return get_object_or_404(alarms(), pk=alarm_id)


def by_key(key: str) -> Alarm:
    found = None
    if len(key) <= MAX_EXTERNAL_ID:
        try:
            validate_storable_text(key)
        except ValidationError:
            pass  # no alarm has it, and a database may refuse to look (NUL)
        else:
            found = alarms().filter(external_id=key).first()
    if found is None:
        raise ApiError(
            404, f"No alarm has the external id {key!r}.", loc=["path", "key"], type="not_found"
        )
    return found


def receipt_counts(alarm_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Seen and dismissed receipts per alarm, in all and per language shown."""
    counts: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"seen": 0, "dismissed": 0, "languages": {}}
    )
    rows = (
        AlarmReceipt.objects.filter(alarm_id__in=alarm_ids)
        .order_by()
        .values_list("alarm_id", "language")
        .annotate(
            seen=Count("pk", filter=Q(seen_at__isnull=False)),
            dismissed=Count("pk", filter=Q(dismissed_at__isnull=False)),
        )
    )
    for alarm_id, language, seen, dismissed in rows:
        total = counts[alarm_id]
        total["seen"] += seen
        total["dismissed"] += dismissed
        total["languages"][language or UNKNOWN_LANGUAGE] = {"seen": seen, "dismissed": dismissed}
    return counts


def describe(alarm: Alarm, counts: dict[str, Any] | None = None) -> dict[str, Any]:
    if counts is None:
        counts = receipt_counts([alarm.pk])[alarm.pk]
    return {
        "id": alarm.pk,
        "status": getattr(alarm, "status_code", None) or alarm.status,
        "level": alarm.level,
        "audience": alarm.audience,
        "users": sorted(u.get_username() for u in alarm.users.all()),
        "groups": sorted(g.name for g in alarm.groups.all()),
        "url": alarm.url,
        "publish_at": alarm.publish_at,
        "expires_at": alarm.expires_at,
        "withdrawn_at": alarm.withdrawn_at,
        "external_id": alarm.external_id,
        "created_by": alarm.created_by.get_username() if alarm.created_by else None,
        "created_by_token": alarm.created_by_token.name if alarm.created_by_token else None,
        "created_at": alarm.created_at,
        "updated_at": alarm.updated_at,
        "translations": {
            t.language_code: {"title": t.title, "message": t.message}
            for t in alarm.translations.all()
        },
        "receipts": counts,
    }


def location(alarm: Alarm) -> str:
    return reverse("alarms:api:alarm", kwargs={"alarm_id": alarm.pk})


# -- operations ----------------------------------------------------------------------


@router.post(
    "/alarms",
    auth=PUBLISH,
    response={201: PublishedOut, 200: PublishedOut, **errors(400, 401, 403, 409, 413, 422, 429)},
    url_name="alarms",
    summary="Publish an alarm, or update the one with this key",
)
def publish(  # its body parameter is errors.BODY_PARAMETER
    request: HttpRequest,
    response: HttpResponse,
    payload: AlarmIn,
    idempotency_key: Annotated[str | None, Header(None, alias="Idempotency-Key")] = None,
) -> Answer[dict[str, Any]]:
    """Scope `publish`. With an external id (in the body, or the `Idempotency-Key`
    header, which must then agree), a send whose key names an alarm updates that
    alarm: 200, and `changed` false when it already was as sent. 201 for a new alarm;
    409 if the key names an alarm that was withdrawn."""
    key, key_loc = payload.external_id, ["body", "external_id"]
    if idempotency_key is not None:
        if key is not None and key != idempotency_key:
            raise ApiError(
                422,
                "The Idempotency-Key header and external_id differ: send one, or the same in both.",
                loc=["header", "Idempotency-Key"],
                type="key_mismatch",
            )
        key, key_loc = idempotency_key, ["header", "Idempotency-Key"]
    if key is not None and key.startswith(alertmanager.KEY_PREFIX):
        # The webhook's keys: an API client must not update or shadow its incidents.
        raise ApiError(
            422,
            f"External ids starting with {alertmanager.KEY_PREFIX!r} belong to the "
            "Alertmanager webhook; choose another prefix (for example 'ci:').",
            loc=key_loc,
            type="reserved_key",
        )
    token = token_of(request)
    try:
        published = service.publish(
            {code: text.model_dump() for code, text in payload.translations.items()},
            level=payload.level,
            audience=payload.audience,
            users=payload.users,
            groups=payload.groups,
            url=payload.url,
            publish_at=payload.publish_at,
            expires_at=payload.expires_at,
            token=token,
            external_id=key,
        )
    except service.AlarmEnded as exc:
        raise ApiError(409, str(exc), loc=key_loc, type="alarm_withdrawn") from None
    except service.InvalidAlarm as exc:
        if exc.field == ("external_id",):
            raise ApiError(422, str(exc), loc=key_loc, type="invalid_alarm") from None
        raise
    saved = alarms().get(pk=published.alarm.pk)
    response["Location"] = location(saved)
    body = {**describe(saved), "created": published.created, "changed": published.changed}
    return Answer(201 if published.created else 200, body)


@router.get(
    "/alarms",
    auth=READ,
    response={200: AlarmPage, **errors(401, 403, 413, 422)},
    summary="List alarms, newest publication first",
)
def list_alarms(request: HttpRequest, filters: Query[AlarmFilters]) -> dict[str, Any]:
    """Scope `read`. Paged by `limit` (at most 200) and `offset`; `next` and
    `previous` are the neighbouring pages."""
    qs = alarms()
    if filters.status is not None:
        # The names of the statuses are the AlarmQuerySet methods that select them.
        qs = getattr(qs, filters.status.value)()
    if filters.level is not None:
        qs = qs.filter(level=filters.level)
    if filters.audience is not None:
        qs = qs.filter(audience=filters.audience)
    if filters.external_id is not None:
        qs = qs.filter(external_id=filters.external_id)
    if filters.mine:
        qs = qs.filter(created_by_token=token_of(request))
    if filters.published_after is not None:
        qs = qs.filter(publish_at__gte=filters.published_after)
    if filters.published_before is not None:
        qs = qs.filter(publish_at__lt=filters.published_before)
    count = qs.count()
    page = list(qs[filters.offset : filters.offset + filters.limit])
    counts = receipt_counts([a.pk for a in page])
    return {
        "count": count,
        **neighbours(request, filters.offset, filters.limit, count),
        "items": [describe(a, counts[a.pk]) for a in page],
    }


def neighbours(request: HttpRequest, offset: int, limit: int, count: int) -> dict[str, Any]:
    """``next`` and ``previous`` of a page of ``limit`` items at ``offset`` of ``count``."""
    return {
        "next": _page(request, offset + limit) if offset + limit < count else None,
        "previous": _page(request, max(offset - limit, 0)) if offset > 0 else None,
    }


def _page(request: HttpRequest, offset: int) -> str:
    query = request.GET.copy()
    query["offset"] = str(offset)
    return f"{request.path}?{urlencode(sorted(query.items()))}"


@router.get(
    "/alarms/{int:alarm_id}",
    auth=READ,
    response={200: AlarmOut, **errors(401, 403, 404, 413, 422)},
    url_name="alarm",
    summary="Read an alarm, with its status and receipt counts",
)
def read_alarm(request: HttpRequest, alarm_id: int) -> dict[str, Any]:
    """Scope `read`."""
    return describe(by_id(alarm_id))


@router.get(
    "/alarms/by-external-id/{key}",
    auth=READ,
    response={200: AlarmOut, **errors(401, 403, 404, 413)},
    url_name="alarm-by-external-id",
    summary="Read the alarm with this external id",
)
def read_alarm_by_key(request: HttpRequest, key: str) -> dict[str, Any]:
    """Scope `read`. A key with a slash cannot be written in the path: list with
    `?external_id=` instead."""
    return describe(by_key(key))


def _withdraw(alarm: Alarm) -> dict[str, Any]:
    # Through the service: it writes the journal rows that make open pages retract it.
    service.withdraw(Alarm.objects.filter(pk=alarm.pk))
    return describe(alarms().get(pk=alarm.pk))


@router.post(
    "/alarms/{int:alarm_id}/withdraw",
    auth=WITHDRAW,
    response={200: AlarmOut, **errors(401, 403, 404, 413, 422)},
    url_name="withdraw",
    summary="Withdraw an alarm now",
)
def withdraw(request: HttpRequest, alarm_id: int) -> dict[str, Any]:
    """Scope `withdraw`. Open pages remove the alarm at once. Withdrawing it again
    changes nothing and answers the same."""
    return _withdraw(by_id(alarm_id))


@router.post(
    "/alarms/by-external-id/{key}/withdraw",
    auth=WITHDRAW,
    response={200: AlarmOut, **errors(401, 403, 404, 413)},
    url_name="withdraw-by-external-id",
    summary="Withdraw the alarm with this external id now",
)
def withdraw_by_key(request: HttpRequest, key: str) -> dict[str, Any]:
    """Scope `withdraw`. As withdrawing by id."""
    return _withdraw(by_key(key))

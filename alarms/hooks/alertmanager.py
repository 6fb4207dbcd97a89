"""``POST /alarms/hooks/alertmanager/``: Prometheus Alertmanager's webhook, as alarms.

Alertmanager's ``webhook_config`` posts a group of alerts (format version 4) with
a bearer token; each alert becomes one alarm through ``alarms.api``, the path
every sender takes. docs/alertmanager.md is the operator's side of what follows.

- **One alarm per incident.** The key (``Alarm.external_id``) is
  ``alertmanager:<fingerprint>:<startsAt in UTC>``: the fingerprint names the
  alert (its label set), ``startsAt`` the incident. ``firing`` publishes the
  alarm or updates it (a repeated notification changes nothing, so open pages do
  not show it again); ``resolved`` withdraws it, so open pages retract it. A
  withdrawn alarm is never brought back, so an alert firing again after its
  resolution, which Alertmanager gives a new ``startsAt``, is a new alarm.
- **The latest incident of a fingerprint wins.** A ``firing`` whose incident is
  older than one already known for the fingerprint (live or withdrawn) is stale,
  a late delivery or an HA peer behind the other: ignored. A ``firing`` of a newer
  incident withdraws the older ones still live (their resolution was lost), in the
  transaction that publishes it. A ``resolved`` withdraws every live incident of
  the fingerprint that started by its ``endsAt``; for an unknown one it is a no-op,
  and a stale ``firing`` of a withdrawn incident stays ignored (``api.AlarmEnded``).
- **Validation** by pydantic models, in a plain Django view rather than a ninja
  router: one fixed payload, and answers Alertmanager acts on (401, 403, 422,
  429 with ``Retry-After``) that need no API framework, whether or not the
  project installs the HTTP API. A body that is not JSON (lone surrogates
  included) is a 400, JSON that is not a version 4 message a 422; never a 500.
- **What Alertmanager cannot fix is mended, not refused**: text is cut to the
  model's limits (with "…"), NUL characters are dropped, an unsafe or too long
  link is skipped for the next candidate, and an annotation in a language the
  site does not speak is ignored and logged once.
- **What configuration must fix is refused**, alert by alert: an ``alarm_group``
  naming no group, or a token whose default audience "selected" names no group.
  The other alerts of the notification are processed; the answer is a 422
  naming the refused ones, so Alertmanager logs the failure and sends the
  group again at its next ``group_interval`` (the alerts already written are
  then no-ops).
- **Mapping.** ``severity`` label: critical, error, warning, info as such,
  anything else (or none) warning. Title: ``summary`` annotation, else the
  ``alertname`` label; message: ``description``, else the title; both in
  ``LANGUAGE_CODE``, ``summary_<lang>``/``description_<lang>`` in any language of
  ``LANGUAGES`` (``_`` for ``-``: ``summary_pt_br``; ``summary_<LANGUAGE_CODE>``
  wins over ``summary``). Link: the ``runbook_url`` annotation, else the alert's
  ``generatorURL``, if it passes the service's safe-link rule. Audience: the
  group named by the ``alarm_group`` label, else the token's default audience
  (and groups); only the token can name a wider audience.
- **Scopes.** The token needs both ``publish`` and ``withdraw``, checked on every
  request: a token lacking ``withdraw`` fails at its first notification, not at
  the first resolution hours later.
- **Storm control.** Resolved alerts go first (they free room), then the firing
  ones in the order sent, each in its own transaction. ``StormLimitExceeded``
  stops there with a 429 and ``Retry-After``. Alertmanager 0.25 retries only 5xx
  at once and ignores ``Retry-After``; after a 429 its notification log is not
  updated, so it sends the whole group again at the next ``group_interval``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Literal

from django.conf import settings
from django.db import router, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from alarms import api, storm, tokens
from alarms.models import Alarm, AlarmToken, Level, TokenScope
from alarms.rules import MAX_MESSAGE, MAX_TITLE, MAX_URL
from alarms.translation import default_language
from alarms.validators import is_safe_link

__all__ = ["GROUP_LABEL", "KEY_PREFIX", "Alert", "Message", "incident_key", "receive"]

logger = logging.getLogger("alarms.hooks")

KEY_PREFIX = "alertmanager:"
GROUP_LABEL = "alarm_group"
SCOPES: frozenset[str] = frozenset({TokenScope.PUBLISH, TokenScope.WITHDRAW})
LEVELS = {
    "critical": Level.CRITICAL,
    "error": Level.ERROR,
    "warning": Level.WARNING,
    "info": Level.INFO,
}
ELLIPSIS = "…"


# -- the payload ------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+02:00 is before year 1 in UTC
        raise ValueError("the time is out of range in UTC") from None


class Alert(BaseModel):
    """One alert of a notification; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    starts_at: AwareDatetime = Field(alias="startsAt")
    # Zero ("0001-01-01T00:00:00Z") while the alert fires.
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    # Alertmanager's is 16 hex digits; other senders of this format use their own.
    fingerprint: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,64}$")]

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


class Message(BaseModel):
    """A webhook notification, format version 4 (Alertmanager 0.16 and later)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    alerts: list[Alert]


# -- from an alert to an alarm ----------------------------------------------------


def incident_key(fingerprint: str, starts_at: datetime) -> str:
    """The alarm's external id. The time is fixed-width UTC, so keys of one
    fingerprint sort by their incident's start."""
    return f"{KEY_PREFIX}{fingerprint}:{_utc(starts_at).isoformat(timespec='microseconds')}"


def storable(text: str) -> str:
    """``text`` stripped and without NUL, which PostgreSQL cannot store. (Lone
    surrogates, the other text no database takes, do not get this far: the JSON
    parser refuses them.)"""
    return text.replace("\0", "").strip()


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def level_of(alert: Alert) -> str:
    return LEVELS.get(alert.labels.get("severity", "").strip().lower(), Level.WARNING)


def link_of(alert: Alert) -> str:
    """The runbook, else the generator's page; one that the safe-link rule refuses is skipped."""
    for candidate in (alert.annotations.get("runbook_url", ""), alert.generator_url):
        url = candidate.strip()
        if url and len(url) <= MAX_URL and is_safe_link(url):
            return url
    return ""


def translations_of(alert: Alert) -> dict[str, dict[str, str]]:
    """``{language: {"title", "message"}}`` from the annotations, the default language always."""
    known = {code.lower(): code for code, _name in settings.LANGUAGES}
    default = default_language()
    # language -> {"summary": ..., "description": ...}; plain names are the default
    # language's, unless named with its code too.
    found: dict[str, dict[str, str]] = {}
    plain: dict[str, str] = {}
    for name, value in alert.annotations.items():
        part, sep, suffix = name.partition("_")
        text = storable(value)
        if part not in ("summary", "description") or not text:
            continue
        if not sep:
            plain[part] = text
            continue
        language = known.get(suffix.lower().replace("_", "-"))
        if language is None:
            _unknown_language(suffix)
            continue
        found.setdefault(language, {})[part] = text
    for part, text in plain.items():
        found.setdefault(default, {}).setdefault(part, text)
    found.setdefault(default, {})
    name = storable(alert.labels.get("alertname", "")) or alert.fingerprint
    return {
        language: {
            "title": cut(parts.get("summary") or name, MAX_TITLE),
            "message": cut(parts.get("description") or parts.get("summary") or name, MAX_MESSAGE),
        }
        for language, parts in found.items()
    }


_warned_languages: set[str] = set()


def _unknown_language(code: str) -> None:
    # Once per code and process: Alertmanager repeats its notifications. Bounded,
    # since the codes come from outside.
    if code not in _warned_languages and len(_warned_languages) < 100:
        _warned_languages.add(code)
        logger.warning(
            "Alertmanager hook: annotations in language %r are ignored: this site speaks %s.",
            code,
            ", ".join(code for code, _name in settings.LANGUAGES),
            extra={"event": "alertmanager_unknown_language", "language": code},
        )


# -- applying one alert -----------------------------------------------------------


def fire(alert: Alert, token: AlarmToken) -> str:
    """Publish or update the alert's alarm; what happened: published, updated,
    unchanged or ignored (a stale incident)."""
    key = incident_key(alert.fingerprint, alert.starts_at)
    group = storable(alert.labels.get(GROUP_LABEL, ""))
    alias = router.db_for_write(Alarm)
    with transaction.atomic(using=alias):
        incidents = Alarm.objects.using(alias).filter(
            external_id__startswith=f"{KEY_PREFIX}{alert.fingerprint}:"
        )
        if incidents.filter(external_id__gt=key).exists():
            return "ignored"
        api.withdraw(incidents.filter(external_id__lt=key, withdrawn_at__isnull=True))
        try:
            result = api.publish(
                translations_of(alert),
                level=level_of(alert),
                groups=[group] if group else (),
                url=link_of(alert),
                token=token,
                external_id=key,
            )
        except api.AlarmEnded:
            return "ignored"
    if result.created:
        return "published"
    return "updated" if result.changed else "unchanged"


def resolve(alert: Alert) -> str:
    """Withdraw the alert's incidents that started by its end: withdrawn or ignored."""
    ended = max(alert.starts_at, alert.ends_at or alert.starts_at)
    live = Alarm.objects.using(router.db_for_write(Alarm)).filter(
        external_id__startswith=f"{KEY_PREFIX}{alert.fingerprint}:",
        external_id__lte=incident_key(alert.fingerprint, ended),
        withdrawn_at__isnull=True,
    )
    return "withdrawn" if api.withdraw(live) else "ignored"


# -- the view ---------------------------------------------------------------------


@csrf_exempt
@require_POST
def receive(request: HttpRequest) -> JsonResponse:
    secret = tokens.parse_authorization(request.headers.get("Authorization", ""))
    token = tokens.authenticate(secret)
    if token is None:
        response = JsonResponse({"error": "A valid bearer token is required."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="alarms"'
        return response
    missing = sorted(SCOPES - token.scope_set)
    if missing:
        return JsonResponse(
            {
                "error": f"The token lacks the scopes {', '.join(missing)}: the hook needs "
                "publish and withdraw."
            },
            status=403,
        )
    try:
        message = Message.model_validate_json(request.body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        not_json = any(error["type"] == "json_invalid" for error in errors)
        return JsonResponse(
            {
                "error": "The body is not valid JSON."
                if not_json
                else "Not an Alertmanager webhook message (version 4).",
                "detail": errors,
            },
            status=400 if not_json else 422,
        )
    if message.truncated_alerts:
        logger.warning(
            "Alertmanager hook: %d alerts of group %s were left out by max_alerts.",
            message.truncated_alerts,
            message.group_key,
            extra={"event": "alertmanager_truncated", "truncated": message.truncated_alerts},
        )
    done: Counter[str] = Counter()
    refused: list[dict[str, str]] = []
    # Resolved first: a withdrawal needs no room under storm control and makes some.
    for alert in sorted(message.alerts, key=lambda a: a.status == "firing"):
        try:
            done[fire(alert, token) if alert.status == "firing" else resolve(alert)] += 1
        except storm.StormLimitExceeded as exc:
            return _storm(exc, message, done)
        except ValueError as exc:
            refused.append({"fingerprint": alert.fingerprint, "error": str(exc)})
    logger.debug(
        "Alertmanager hook: group %s: %d alerts: %s",
        message.group_key,
        len(message.alerts),
        dict(done),
        extra={"event": "alertmanager_webhook", "alerts": len(message.alerts), **done},
    )
    if refused:
        logger.warning(
            "Alertmanager hook: %d alerts of group %s refused: %s",
            len(refused),
            message.group_key,
            "; ".join(r["error"] for r in refused),
            extra={"event": "alertmanager_refused", "refused": len(refused)},
        )
        return JsonResponse({**done, "refused": refused}, status=422)
    return JsonResponse(dict(done))


def _storm(exc: storm.StormLimitExceeded, message: Message, done: Counter[str]) -> JsonResponse:
    logger.warning(
        "Alertmanager hook: group %s stopped by storm control after %s: %s",
        message.group_key,
        dict(done),
        exc,
        extra={"event": "alertmanager_storm"},
    )
    response = JsonResponse({**done, "error": str(exc)}, status=429)
    if exc.next_at is not None:
        wait = (exc.next_at - timezone.now()).total_seconds()
        response["Retry-After"] = str(max(1, math.ceil(wait)))
    return response

"""Escalation by email (``ALARMS["ESCALATE"]``, docs/escalation.md).

A live alarm of an escalating level that a user it targets has not seen (nor
dismissed) ``AFTER`` minutes after its publication is emailed to that user once,
in their stored language and time zone, with a link that marks it seen.

Once per alarm and user, whatever the number of processes: the work is claimed
in the database first (:class:`alarms.models.AlarmEscalation`, unique on the
pair) by an ``INSERT ... ON CONFLICT DO NOTHING``, and a claim is renewed, only
by its holder, just before the SMTP exchange. A claim left unsent for
``LEASE`` seconds belongs to a sender that died; another process takes it over.

A crash after the SMTP server accepted a mail and before ``sent_at`` is written
sends that mail again once the lease is over: at least once, by choice (a
critical alarm that silently never reaches its reader is the worse failure).
The window is one ``UPDATE``; an orderly stop (SIGTERM) never falls in it, and
the repeat carries the same ``Message-ID``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import router, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Now
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from alarms import signals
from alarms.conf import escalate_config
from alarms.models import Alarm, AlarmEscalation, AlarmReceipt, Level, Preferences
from alarms.preferences import LEVEL_ORDER, chosen_language, for_user, is_muted
from alarms.querysets import AlarmQuerySet, audience_users
from alarms.translation import default_language, direction
from alarms.validators import is_safe_link

__all__ = [
    "Escalator",
    "PassResult",
    "build_message",
    "due_alarms",
    "make_token",
    "read_token",
    "recipients",
]

logger = logging.getLogger("alarms.escalation")

SALT = "alarms.escalation.seen"
# Claims taken at a time: small, so that processes side by side share the work.
CLAIM_CHUNK = 20
# SMTP exchanges for one alarm and user before it is given up (the error stays
# on the row, for the admin).
MAX_ATTEMPTS = 5
# Failures in a row after which a pass stops: the mail server is down.
MAX_FAILURES_IN_A_ROW = 3
# A released claim's time: long past any lease.
RELEASED = datetime(2000, 1, 1, tzinfo=UTC)


# -- who gets one -------------------------------------------------------------


def due_alarms(config: dict[str, Any]) -> AlarmQuerySet:
    """Live alarms of an escalating level, published ``AFTER`` minutes ago or more
    (by the database clock, as every time window)."""
    return Alarm.objects.live().filter(
        level__in=config["LEVELS"],
        publish_at__lte=Now() - timedelta(minutes=config["AFTER"]),
    )


def muting_floors(level: str) -> list[str]:
    """The ``Preferences.mute_below`` values that mute ``level`` (``is_muted``)."""
    return [floor for floor in LEVEL_ORDER if is_muted(level, floor)]


def eligible_users(alarm: Alarm) -> QuerySet[Any]:
    """The users ``alarm`` may be emailed to: in its audience, active, with an
    address, who have neither seen nor dismissed it and have not muted its level."""
    email = get_user_model().get_email_field_name()
    users = (
        audience_users(alarm)
        .filter(is_active=True)
        .exclude(**{f"{email}__isnull": True})
        .exclude(**{email: ""})
    )
    done = AlarmReceipt.objects.filter(alarm=alarm).filter(
        Q(seen_at__isnull=False) | Q(dismissed_at__isnull=False)
    )
    users = users.exclude(pk__in=done.values("user_id"))
    floors = muting_floors(alarm.level)
    if floors:
        muted = Preferences.objects.filter(mute_below__in=floors)
        users = users.exclude(pk__in=muted.values("user_id"))
    return users


def reclaimable(lease: float) -> Q:
    """Claims another process may take: unsent, not given up, and released or
    older than the lease (their sender died)."""
    return Q(sent_at__isnull=True, attempts__lt=MAX_ATTEMPTS) & (
        Q(claimed_by="") | Q(claimed_at__lt=Now() - timedelta(seconds=lease))
    )


def recipients(alarm: Alarm, config: dict[str, Any]) -> QuerySet[Any]:
    """``eligible_users`` who have no email of it, sent or claimed, in id order."""
    taken = AlarmEscalation.objects.filter(alarm=alarm).exclude(reclaimable(config["LEASE"]))
    return eligible_users(alarm).exclude(pk__in=taken.values("user_id")).order_by("pk")


# -- the link -----------------------------------------------------------------


def make_token(user_id: int, alarm_id: int) -> str:
    """A signed, timestamped token for "``user_id`` has seen ``alarm_id``"."""
    return signing.dumps([user_id, alarm_id], salt=SALT)


def read_token(token: str, max_age: timedelta) -> tuple[int, int]:
    """``(user_id, alarm_id)`` of a token; ``signing.SignatureExpired`` when it is
    older than ``max_age``, ``signing.BadSignature`` for anything else wrong."""
    value = signing.loads(token, salt=SALT, max_age=max_age)
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise signing.BadSignature("Not an escalation token.")
    return value[0], value[1]


def absolute(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


# -- the email ----------------------------------------------------------------


def user_language(user: Any) -> str:
    """The user's stored language if the site speaks it, else ``LANGUAGE_CODE``."""
    return language_of(for_user(user))


def language_of(prefs: Preferences | None) -> str:
    return chosen_language(prefs) or default_language()


def zone_of(prefs: Preferences | None) -> tzinfo:
    """The stored time zone if it is a known one, else ``TIME_ZONE``."""
    if prefs and prefs.time_zone:
        try:
            return zoneinfo.ZoneInfo(prefs.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_default_timezone()


def build_message(alarm: Alarm, user: Any, config: dict[str, Any]) -> EmailMultiAlternatives:
    """The email of ``alarm`` to ``user``: text and HTML parts, in their language and zone."""
    prefs = for_user(user)
    language = language_of(prefs)
    zone = zone_of(prefs)
    base_url: str = config["BASE_URL"]
    address = getattr(user, get_user_model().get_email_field_name())
    with translation.override(language), timezone.override(zone):
        payload = alarm.reader_payload(language)
        link = payload["url"]
        if link.startswith("/"):
            link = absolute(base_url, link)
        context = {
            "alarm": alarm,
            "user": user,
            "level": alarm.level,
            "level_label": str(Level(alarm.level).label) if alarm.level in Level else alarm.level,
            "title": payload["title"],
            "message": payload["message"],
            "text_language": payload["language"],
            "text_dir": payload["dir"],
            "language": language,
            "dir": direction(language),
            "published_at": alarm.publish_at,
            "time_zone": str(zone),
            "link": link if is_safe_link(link) else "",
            "seen_url": absolute(
                base_url, reverse("alarms:email_seen", args=[make_token(user.pk, alarm.pk)])
            ),
            "centre_url": absolute(base_url, reverse("alarms:centre")),
        }
        subject = render_to_string("alarms/email/escalation_subject.txt", context)
        text = render_to_string("alarms/email/escalation.txt", context)
        html = render_to_string("alarms/email/escalation.html", context)
    host = urlsplit(base_url).hostname or "localhost"
    message = EmailMultiAlternatives(
        # One line: a title cannot hold a line break, but a header must not either.
        subject=" ".join(subject.split()),
        body=text,
        from_email=config["FROM"] or settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={
            # The same for every attempt: a mail sent again after a crash is one
            # message to the mail clients that de-duplicate by Message-ID.
            "Message-ID": f"<alarm-{alarm.pk}.user-{user.pk}.escalation@{host}>",
            "Content-Language": language,
            # RFC 3834: no vacation replies to an automatic message.
            "Auto-Submitted": "auto-generated",
            "X-Auto-Response-Suppress": "All",
        },
    )
    message.attach_alternative(html, "text/html")
    return message


# -- the mail backend -----------------------------------------------------------

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def mail_connection() -> Any:
    """A connection of the default mailer: ``mailers.default`` where the project
    has ``MAILERS`` (Django 6.1, where ``get_connection()`` is deprecated), else
    ``get_connection()`` from the ``EMAIL_*`` settings."""
    from django.core import mail

    mailers = getattr(mail, "mailers", None)
    if mailers is not None and hasattr(settings, "MAILERS"):
        return mailers.default
    return get_connection(fail_silently=False)


def mail_backend() -> tuple[str, float | None]:
    """The default mailer's backend (dotted path) and SMTP timeout, from
    ``MAILERS["default"]`` or from ``EMAIL_BACKEND`` and ``EMAIL_TIMEOUT``."""
    if hasattr(settings, "MAILERS"):
        mailers: dict[str, dict[str, Any]] = settings.MAILERS
        default = mailers.get("default", {})
        options = default.get("OPTIONS", {})
        return default.get("BACKEND", SMTP_BACKEND), options.get("timeout")
    return settings.EMAIL_BACKEND, settings.EMAIL_TIMEOUT


# -- a pass -------------------------------------------------------------------


def owner_name() -> str:
    """Who holds a claim: host, process id, and a random part (pids are reused)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class PassResult:
    """What one pass did: emails sent, failed (to be tried again), and claims
    found no longer due (seen, dismissed, withdrawn meanwhile)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


class Escalator:
    """Sends the escalation emails that are due, claim by claim.

    ``stop`` (a ``threading.Event``) ends a pass between two emails: the claims
    not yet tried are released for the next pass or another process.
    """

    def __init__(
        self, config: dict[str, Any] | None = None, *, stop: threading.Event | None = None
    ) -> None:
        config = config or escalate_config()
        if config is None:
            raise ValueError("Escalation is off: ALARMS['ESCALATE'] is not set.")
        self.config = config
        self.owner = owner_name()
        self.stop = stop or threading.Event()
        self.alias = router.db_for_write(AlarmEscalation)

    def run_once(self, limit: int | None = None) -> PassResult:
        """One pass: at most ``limit`` (default ``BATCH``) SMTP exchanges."""
        budget = limit if limit is not None else int(self.config["BATCH"])
        result = PassResult()
        connection: Any = None
        failures = 0
        untried: set[int] = set()
        outcome = ""
        try:
            alarms = due_alarms(self.config).order_by("publish_at", "pk")
            for alarm in alarms.prefetch_related("translations"):
                while budget > 0 and not self.stop.is_set():
                    users = recipients(alarm, self.config).values_list("pk", flat=True)
                    claims = self.claim(alarm, list(users[: min(CLAIM_CHUNK, budget)]))
                    if not claims:
                        break
                    untried = {c.pk for c in claims}
                    for claim in claims:
                        if budget <= 0 or self.stop.is_set():
                            break
                        if connection is None:
                            # Opened once per pass (and again after a failure); a
                            # server that is down ends the pass here, claims released.
                            connection = mail_connection()
                            connection.open()
                        untried.discard(claim.pk)
                        outcome = self.deliver(claim, alarm, connection)
                        if outcome == "ended":
                            break
                        if outcome == "sent":
                            result.sent += 1
                            failures = 0
                        elif outcome == "failed":
                            result.failed += 1
                            failures += 1
                            # A broken connection is opened again for the next one.
                            connection.close()
                            connection = None
                            if failures >= MAX_FAILURES_IN_A_ROW:
                                raise EscalationError(
                                    f"{failures} emails in a row failed; the pass stops "
                                    "(see the error column of the escalations)."
                                )
                        elif outcome == "dropped":
                            result.dropped += 1
                        if outcome in ("sent", "failed"):
                            budget -= 1
                    if untried:
                        self.release(untried)
                        untried = set()
                    if outcome == "ended":
                        break
                if budget <= 0 or self.stop.is_set():
                    break
        finally:
            if untried:
                self.release(untried)
            if connection is not None:
                connection.close()
        return result

    def claim(self, alarm: Alarm, user_ids: list[int]) -> list[AlarmEscalation]:
        """Claim the emails of ``alarm`` to ``user_ids``; those this process got.

        New pairs by an insert that skips the ones another process holds (the
        unique constraint decides), abandoned claims by an update whose condition
        the database checks again on the row it locks: two processes never both
        get one.
        """
        if not user_ids:
            return []
        db = AlarmEscalation.objects.using(self.alias)
        now = timezone.now()
        db.bulk_create(
            [
                AlarmEscalation(alarm=alarm, user_id=u, claimed_by=self.owner, claimed_at=now)
                for u in user_ids
            ],
            ignore_conflicts=True,
        )
        # This process's clock set claimed_at above; from here on the database's.
        db.filter(alarm=alarm, user_id__in=user_ids).filter(
            Q(claimed_by=self.owner) | reclaimable(self.config["LEASE"])
        ).update(claimed_by=self.owner, claimed_at=Now())
        return list(
            db.filter(
                alarm=alarm, user_id__in=user_ids, claimed_by=self.owner, sent_at__isnull=True
            )
            .select_related("user")
            .order_by("user_id")
        )

    def release(self, pks: set[int]) -> None:
        """Give back claims not tried: the next pass, or another process, takes them."""
        AlarmEscalation.objects.using(self.alias).filter(
            pk__in=pks, claimed_by=self.owner, sent_at__isnull=True
        ).update(claimed_by="", claimed_at=RELEASED)

    def deliver(self, claim: AlarmEscalation, alarm: Alarm, connection: Any) -> str:
        """Send one claimed email: "sent", "failed", "dropped" (the user no longer
        due), "ended" (the alarm no longer due) or "lost" (another process took
        the claim over)."""
        db = AlarmEscalation.objects.using(self.alias)
        mine = db.filter(pk=claim.pk, claimed_by=self.owner, sent_at__isnull=True)
        # Renewed just before the SMTP exchange: the lease now covers it alone.
        if not mine.update(claimed_at=Now(), attempts=F("attempts") + 1):
            return "lost"
        user = claim.user
        # Seen, dismissed, withdrawn, muted... since the claim: not sent, and the
        # row goes, so that the pair is judged afresh should it become due again.
        if not due_alarms(self.config).filter(pk=alarm.pk).exists():
            mine.delete()
            return "ended"
        if not eligible_users(alarm).filter(pk=user.pk).exists():
            mine.delete()
            return "dropped"
        try:
            connection.send_messages([build_message(alarm, user, self.config)])
        except Exception as exc:
            logger.warning(
                "Escalation email of alarm %s to user %s failed: %r", alarm.pk, user.pk, exc
            )
            db.filter(pk=claim.pk, claimed_by=self.owner).update(error=repr(exc)[:2000])
            return "failed"
        with transaction.atomic(using=self.alias):
            # Whoever holds the claim now: the mail went.
            if db.filter(pk=claim.pk, sent_at__isnull=True).update(sent_at=Now(), error=""):
                signals.send_on_commit(
                    signals.alarm_escalated, using=self.alias, alarm=alarm, user=user
                )
        logger.info("Escalated alarm %s to user %s by email.", alarm.pk, user.pk)
        return "sent"


class EscalationError(RuntimeError):
    """A pass that had to stop (the mail server keeps failing)."""

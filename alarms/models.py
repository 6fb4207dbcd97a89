from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, router, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from alarms import journal, rules
from alarms.querysets import AlarmQuerySet, AlarmTranslationQuerySet
from alarms.translation import default_language, language_choices
from alarms.validators import validate_link, validate_storable_text


class Level(models.TextChoices):
    INFO = "info", _("Info")
    SUCCESS = "success", _("Success")
    WARNING = "warning", _("Warning")
    ERROR = "error", _("Error")
    CRITICAL = "critical", _("Critical")


class Audience(models.TextChoices):
    EVERYONE = rules.EVERYONE, _("Everyone, including anonymous visitors")
    AUTHENTICATED = rules.AUTHENTICATED, _("Signed-in users")
    STAFF = rules.STAFF, _("Staff")
    SELECTED = rules.SELECTED, _("Selected users and groups")


class Alarm(models.Model):
    level = models.CharField(_("level"), max_length=10, choices=Level, default=Level.INFO)
    audience = models.CharField(
        _("audience"), max_length=16, choices=Audience, default=Audience.AUTHENTICATED
    )
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("users"),
        blank=True,
        related_name="targeted_alarms",
        help_text=_("Only with the audience “Selected users and groups”."),
    )
    groups = models.ManyToManyField(
        "auth.Group",
        verbose_name=_("groups"),
        blank=True,
        related_name="targeted_alarms",
        help_text=_("Only with the audience “Selected users and groups”."),
    )
    url = models.CharField(
        _("link"),
        max_length=rules.MAX_URL,
        blank=True,
        validators=[validate_link],
        help_text=_("Optional: an http(s) address or a path on this site."),
    )
    publish_at = models.DateTimeField(_("publish at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    withdrawn_at = models.DateTimeField(_("withdrawn at"), null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_by_token = models.ForeignKey(
        "alarms.AlarmToken",
        verbose_name=_("created by token"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="alarms",
        editable=False,
    )
    # The sender's key for this alarm (an HTTP API idempotency key, an Alertmanager
    # fingerprint): sending with a key that names an alarm updates that alarm.
    external_id = models.CharField(
        _("external id"),
        max_length=rules.MAX_EXTERNAL_ID,
        null=True,
        blank=True,
        unique=True,
        editable=False,
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = AlarmQuerySet.as_manager()

    class Meta:
        verbose_name = _("alarm")
        verbose_name_plural = _("alarms")
        ordering = ("-publish_at", "-id")
        indexes = (
            # "Live now": not withdrawn, published, not expired.
            models.Index(
                fields=("publish_at", "expires_at"),
                condition=models.Q(withdrawn_at__isnull=True),
                name="alarms_alarm_live_idx",
            ),
            models.Index(fields=("audience",), name="alarms_alarm_audience_idx"),
            # A resuming stream asks what expired while it was away: without this,
            # a scan of every alarm kept (RETENTION_DAYS) per reconnect.
            models.Index(fields=("expires_at",), name="alarms_alarm_expires_idx"),
        )
        constraints = (
            models.CheckConstraint(
                condition=models.Q(expires_at__isnull=True)
                | models.Q(expires_at__gt=models.F("publish_at")),
                name="alarms_alarm_expires_after_publish",
                violation_error_message=_("The expiry must come after the publication time."),
            ),
        )

    def __str__(self) -> str:
        translation = self.default_translation()
        return translation.title if translation else f"Alarm #{self.pk}"

    # Every write records its journal row in its own transaction (alarms.journal):
    # the admin, alarms.api and plain ORM code all reach open streams this way.

    def save(self, *args: Any, **kwargs: Any) -> None:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)
            # save() has just set the database it wrote to.
            journal.record([self.pk], using=cast(str, self._state.db))

    def delete(self, using: Any = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        using = using or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            details = journal.deletion_details([self.pk], using=using)
            result = super().delete(using=using, keep_parents=keep_parents)
            journal.record_deleted(details, using=using)
        return result

    def clean(self) -> None:
        if self.expires_at and self.publish_at and self.expires_at <= self.publish_at:
            raise ValidationError(
                {"expires_at": _("The expiry must come after the publication time.")}
            )

    def default_translation(self) -> AlarmTranslation | None:
        if self.pk is None:
            return None
        translations = list(self.translations.all())
        default = default_language()
        for t in translations:
            if t.language_code == default:
                return t
        return translations[0] if translations else None

    @property
    def status(self) -> str:
        return rules.status(self.publish_at, self.expires_at, timezone.now(), self.withdrawn_at)

    def is_visible_to(self, user: Any) -> bool:
        """``rules.can_see`` for an alarm already loaded (its users and groups
        are read only for the audience "selected", from a prefetch if there is one)."""
        signed_in = bool(getattr(user, "is_authenticated", False))
        members = signed_in and self.audience == Audience.SELECTED
        return rules.can_see(
            self.audience,
            {u.pk for u in self.users.all()} if members else (),
            {g.pk for g in self.groups.all()} if members else (),
            user_id=user.pk if signed_in else None,
            is_staff=signed_in and bool(user.is_staff),
            viewer_group_ids={g.pk for g in user.groups.all()} if members else (),
        )

    def reader_payload(self, language: str) -> dict[str, Any]:
        """``rules.reader_payload`` for this alarm, from its translations (prefetched
        if they were)."""
        return rules.reader_payload(
            id=self.pk,
            level=self.level,
            url=self.url,
            publish_at=self.publish_at,
            expires_at=self.expires_at,
            translations={t.language_code: (t.title, t.message) for t in self.translations.all()},
            language=language,
        )


class AlarmTranslation(models.Model):
    alarm = models.ForeignKey(
        Alarm, verbose_name=_("alarm"), on_delete=models.CASCADE, related_name="translations"
    )
    language_code = models.CharField(
        _("language"), max_length=rules.MAX_LANGUAGE_CODE, choices=language_choices
    )
    title = models.CharField(
        _("title"), max_length=rules.MAX_TITLE, validators=[validate_storable_text]
    )
    message = models.TextField(
        _("message"), max_length=rules.MAX_MESSAGE, validators=[validate_storable_text]
    )

    objects = AlarmTranslationQuerySet.as_manager()

    # Set by from_db() and save(): the alarm this row belonged to when loaded.
    _loaded_alarm_id: int | None

    class Meta:
        verbose_name = _("translation")
        verbose_name_plural = _("translations")
        ordering = ("alarm", "language_code")
        constraints = (
            models.UniqueConstraint(
                fields=("alarm", "language_code"),
                name="alarms_translation_one_per_language",
                violation_error_message=_("This alarm already has a translation in that language."),
            ),
        )

    def __str__(self) -> str:
        return f"{self.title} [{self.language_code}]"

    def save(self, *args: Any, **kwargs: Any) -> None:
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)
            loaded = getattr(self, "_loaded_alarm_id", None)
            # save() has just set the database it wrote to.
            journal.record(
                {self.alarm_id, loaded or self.alarm_id}, using=cast(str, self._state.db)
            )
        self._loaded_alarm_id = self.alarm_id

    def delete(self, using: Any = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        using = using or router.db_for_write(type(self), instance=self)
        alarm_id = self.alarm_id
        with transaction.atomic(using=using, savepoint=False):
            result = super().delete(using=using, keep_parents=keep_parents)
            journal.record([alarm_id], using=using)
        return result

    @classmethod
    def from_db(
        cls,
        db: str | None,
        field_names: Collection[str],
        values: Collection[Any],
        **kwargs: Any,
    ) -> AlarmTranslation:
        # kwargs: Django 6.1's fetch_mode, which its own from_db() takes.
        instance = super().from_db(db, field_names, values, **kwargs)
        # The alarm it belonged to when loaded: a save that moves it changes both.
        instance._loaded_alarm_id = instance.__dict__.get("alarm_id")
        return instance


class AlarmReceipt(models.Model):
    """What one user has done with one alarm: when it was first shown, when dismissed."""

    alarm = models.ForeignKey(
        Alarm, verbose_name=_("alarm"), on_delete=models.CASCADE, related_name="receipts"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="alarm_receipts",
    )
    seen_at = models.DateTimeField(_("seen at"), null=True, blank=True)
    dismissed_at = models.DateTimeField(_("dismissed at"), null=True, blank=True)
    # The translation the user was shown (a code of LANGUAGES), recorded when the
    # receipt is first written: the HTTP API counts receipts per language. Blank
    # for receipts written before it was recorded.
    language = models.CharField(
        _("language"), max_length=rules.MAX_LANGUAGE_CODE, blank=True, default=""
    )

    class Meta:
        verbose_name = _("receipt")
        verbose_name_plural = _("receipts")
        ordering = ("-id",)
        constraints = (
            # user first: every lookup is "this user's receipts".
            models.UniqueConstraint(fields=("user", "alarm"), name="alarms_receipt_one_per_user"),
        )

    def __str__(self) -> str:
        return f"{self.user} / {self.alarm_id}"


class AlarmEscalation(models.Model):
    """One email of an unseen alarm to one user (``alarms.escalation``), claimed first.

    The row is the claim: a process inserts it (one per alarm and user, by the
    unique constraint) before it sends, renews ``claimed_at`` just before the
    SMTP exchange, and sets ``sent_at`` once the server accepted the mail. A row
    left unsent for longer than ``ESCALATE["LEASE"]`` is taken over by another
    process: its sender is taken to have died.
    """

    alarm = models.ForeignKey(
        Alarm, verbose_name=_("alarm"), on_delete=models.CASCADE, related_name="escalations"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="alarm_escalations",
    )
    # The process holding the claim (host, pid and a random part); blank: released.
    claimed_by = models.CharField(_("claimed by"), max_length=100, blank=True, default="")
    claimed_at = models.DateTimeField(_("claimed at"))
    # SMTP exchanges started for it (a retry after a failure or a dead sender adds one).
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    # The last failure, for the admin and the logs.
    error = models.TextField(_("error"), blank=True, default="")

    class Meta:
        verbose_name = _("escalation")
        verbose_name_plural = _("escalations")
        ordering = ("-id",)
        constraints = (
            models.UniqueConstraint(fields=("alarm", "user"), name="alarms_escalation_once"),
        )

    def __str__(self) -> str:
        return f"{self.user} / {self.alarm_id}"


def mute_choices() -> list[tuple[str, str]]:
    # Every level but the lowest (nothing is below it) can be a floor; critical
    # alarms are never muted, so "below critical" is the most one can mute.
    return [(level.value, str(level.label)) for level in Level if level != Level.INFO]


class Preferences(models.Model):
    """What one signed-in reader chose, on every device (``alarms.preferences``).

    Blank means "not chosen": the browser's language (cookie, Accept-Language),
    the browser's time zone, nothing muted.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="alarm_preferences",
    )
    language = models.CharField(
        _("language"),
        max_length=rules.MAX_LANGUAGE_CODE,
        blank=True,
        default="",
        choices=language_choices,
        help_text=_("Alarms, pages and emails in this language on every device."),
    )
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("An IANA name such as Europe/Paris; blank: the browser's."),
    )
    mute_below = models.CharField(
        _("mute alarms below"),
        max_length=10,
        blank=True,
        default="",
        choices=mute_choices,
        help_text=_("Alarms below this level are not shown. Critical alarms always are."),
    )
    desktop_from = models.CharField(
        _("desktop notifications from"),
        max_length=10,
        choices=Level,
        default=Level.CRITICAL,
        help_text=_("Alarms at or above this level raise a desktop notification."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("reader preferences")
        verbose_name_plural = _("reader preferences")
        ordering = ("user",)

    def __str__(self) -> str:
        return str(self.user)


class TokenScope(models.TextChoices):
    PUBLISH = "publish", _("Publish: create and update alarms")
    WITHDRAW = "withdraw", _("Withdraw alarms")
    READ = "read", _("Read alarms and their counts")
    # A personal token: it reads as the user who made it, never as anyone else.
    ME = "me", _("Me: read my own alarms (a personal token of the user who makes it)")


class AlarmToken(models.Model):
    """A bearer token for the HTTP API and the webhooks (``alarms.tokens``).

    Only a SHA-256 digest of the secret is stored: the secret is shown once, when
    the token is made. A token is refused from the moment it is revoked or expires.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    # Space-separated TokenScope values (a CharField, not a JSONField, whose system
    # check needs a database connection).
    scopes = models.CharField(_("scopes"), max_length=100, default=TokenScope.PUBLISH)
    # The first characters of the secret, to tell tokens apart in lists and logs.
    prefix = models.CharField(_("prefix"), max_length=16, editable=False)
    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    audience = models.CharField(
        _("default audience"),
        max_length=16,
        choices=Audience,
        default=Audience.AUTHENTICATED,
        help_text=_("For alarms whose sender names no audience (the webhooks)."),
    )
    groups = models.ManyToManyField(
        "auth.Group",
        verbose_name=_("default groups"),
        blank=True,
        related_name="+",
        help_text=_("With the default audience “Selected users and groups”."),
    )
    storm_limit = models.PositiveIntegerField(
        _("storm limit"),
        null=True,
        blank=True,
        help_text=_(
            "Alarms this token may publish within the storm window (STORM_WINDOW); "
            "empty: the site's STORM_LIMIT."
        ),
    )
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    def is_usable(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class AlarmChange(models.Model):
    """The change journal the broker follows: one row per write that streams must see.

    Row ids need not follow commit order on PostgreSQL: the broker's reader holds
    back rows above an id not yet committed and passes over one rolled back
    (``alarms.journal``, ``alarms.broker.reads.JournalCursor``), so it never
    skips a transaction that committed late.
    The alarm id is a plain integer so that a deleted alarm's row survives.
    """

    class Kind(models.TextChoices):
        ALARM = "alarm", _("alarm changed")
        DISMISS = "dismiss", _("dismissed by a user")
        # A user's access changed (groups, flags, password, deleted): their
        # open streams are authorised again. alarm_id is 0.
        ACCESS = "access", _("a user's access changed")
        # A session ended (logout, flush): the streams opened with it close.
        SESSION = "session", _("a session ended")
        # An operator's "Send a test to me" (alarms.operator): delivered to that
        # user's open streams only, never replayed; alarm_id is 0, the payloads
        # are in detail.
        TEST = "test", _("a test sent to its author")
        # A user's preferences changed (language, time zone, mute): their open
        # streams close, and reconnect as the new preferences say. alarm_id is 0.
        PREFS = "prefs", _("a user's preferences changed")

    alarm_id = models.BigIntegerField(_("alarm id"))
    kind = models.CharField(_("kind"), max_length=8, choices=Kind, default=Kind.ALARM)
    user_id = models.BigIntegerField(_("user id"), null=True, blank=True)
    # For SESSION rows: a digest of the session key (alarms.journal.session_digest),
    # never the key itself.
    session = models.CharField(_("session digest"), max_length=64, blank=True, default="")
    # For an alarm's deletion: its audience and publication time
    # (alarms.journal.deletion_details), so a resume retracts it only for readers
    # who may have had it on screen.
    # JSON text, not a JSONField: that field's system check needs a database
    # connection, and the journal is read by the broker only.
    detail = models.TextField(_("detail"), blank=True, default="")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("change")
        verbose_name_plural = _("changes")
        ordering = ("id",)

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.alarm_id}"


class AlarmPresence(models.Model):
    """Who one process's broker has streams open for, per language (``alarms.reach``).

    Each broker writes its own row, at most every ``PRESENCE_INTERVAL`` seconds
    and only when its streams changed, and touches it while they stay open; a
    row older than ``PRESENCE_TTL`` belongs to a process that is gone and is
    not counted. The admin reads these rows for the live reach of an alarm.
    """

    process = models.CharField(_("process"), max_length=100, unique=True)
    updated_at = models.DateTimeField(_("updated at"), db_index=True)
    # JSON text, as AlarmChange.detail: {"v": 1, "languages": {code: {"anonymous": n,
    # "users": [sorted user ids]}}}.
    data = models.TextField(_("data"), default="")

    class Meta:
        verbose_name = _("presence")
        verbose_name_plural = _("presence")
        ordering = ("process",)

    def __str__(self) -> str:
        return self.process

"""Authoring alarms: one alarm, its translations inline, status and counts in the list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db import transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from alarms import api, operator, reach, rules, signals, tokens
from alarms.forms import AlarmAdminForm, AlarmTokenForm, AlarmTranslationFormSet, language_name
from alarms.models import Alarm, AlarmEscalation, AlarmReceipt, AlarmToken, AlarmTranslation

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_stubs_ext import StrOrPromise

    from alarms.querysets import AlarmQuerySet

    # Django's admin classes take no type parameters at run time; the stubs' do.
    _AlarmAdminBase = admin.ModelAdmin[Alarm]
    _ReceiptAdminBase = admin.ModelAdmin[AlarmReceipt]
    _TranslationInlineBase = admin.StackedInline[AlarmTranslation, Alarm]
else:
    _AlarmAdminBase = _ReceiptAdminBase = admin.ModelAdmin
    _TranslationInlineBase = admin.StackedInline

STATUS_LABELS = {
    rules.SCHEDULED: _("Scheduled"),
    rules.LIVE: _("Live"),
    rules.EXPIRED: _("Expired"),
    rules.WITHDRAWN: _("Withdrawn"),
}


def _receipt_count(**filters: Any) -> Coalesce:
    # A subquery per count: joins on receipts and translations in one query
    # would multiply each other's rows.
    counts = (
        AlarmReceipt.objects.filter(alarm=OuterRef("pk"), **filters)
        .order_by()
        .values("alarm")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, Any], ...]:
        return tuple(STATUS_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        # The names of the values are the AlarmQuerySet methods that define them.
        value = self.value()
        return getattr(queryset, value)() if value in STATUS_LABELS else queryset


class LanguageFilter(admin.SimpleListFilter):
    title = _("language")
    parameter_name = "language"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        has = [(code, name) for code, name in settings.LANGUAGES]
        # "Missing X" finds the alarms that still need a translator.
        missing = [
            (f"-{code}", _("Missing %(language)s") % {"language": name})
            for code, name in settings.LANGUAGES
        ]
        return has + missing

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if not value:
            return queryset
        code = value.removeprefix("-")
        translated = Exists(
            AlarmTranslation.objects.filter(alarm=OuterRef("pk"), language_code=code)
        )
        return queryset.filter(~translated if value.startswith("-") else translated)


class AlarmChangeList(ChangeList):
    """The alarm change list, with each row's live reach worked out for the page at once."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluates the page's queryset once; the template iterates the same one.
        annotate_reach(list(self.result_list))


def annotate_reach(alarms: list[Alarm]) -> None:
    """Set ``reach_now`` on each alarm: its readers online now and how many of them get
    a fallback. One read of the presence rows, the staff and the selected alarms'
    users and groups for the whole page, never a query per row."""
    if not alarms:
        return
    found = reach.online()
    members = reach.Members()
    selected = [a.pk for a in alarms if a.audience == rules.SELECTED]
    users: dict[int, set[int]] = {pk: set() for pk in selected}
    groups: dict[int, set[int]] = {pk: set() for pk in selected}
    if selected:
        for relation, into, column in (
            (Alarm.users.through, users, "user_id"),
            (Alarm.groups.through, groups, "group_id"),
        ):
            rows = relation.objects.filter(alarm_id__in=selected).values_list("alarm_id", column)
            for alarm_id, member in rows:
                into[alarm_id].add(member)
        members.load_groups(set().union(*groups.values()))
    for alarm in alarms:
        target = reach.Target(
            alarm.audience,
            frozenset(users.get(alarm.pk, ())),
            frozenset(groups.get(alarm.pk, ())),
        )
        codes = [t.language_code for t in alarm.translations.all()]
        alarm.reach_now = reach.count(found, target, codes, members)  # type: ignore[attr-defined]


class AlarmTranslationInline(_TranslationInlineBase):
    model = AlarmTranslation
    formset = AlarmTranslationFormSet
    fields = ("language_code", "title", "message")
    min_num = 0

    def get_extra(self, request: HttpRequest, obj: Alarm | None = None, **kwargs: Any) -> int:
        present = obj.translations.count() if obj is not None and obj.pk else 0
        return max(len(settings.LANGUAGES) - present, 0)

    def get_max_num(self, request: HttpRequest, obj: Alarm | None = None, **kwargs: Any) -> int:
        return len(settings.LANGUAGES)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and db_field.name in ("title", "message"):
            # Each row may be in another script: the browser reads the direction
            # from the text typed (Arabic right to left), whatever the admin's language.
            formfield.widget.attrs["dir"] = "auto"
        return formfield


@admin.register(Alarm)
class AlarmAdmin(_AlarmAdminBase):
    class Media:
        # alarms.css: the live preview shows each language in the toast's own markup.
        css = {"all": ("alarms/alarms.css", "alarms/admin.css")}

    form = AlarmAdminForm
    # The test send, the live preview and the live reach (alarms/operator.py).
    change_form_template = "alarms/admin/alarm_change_form.html"
    inlines = (AlarmTranslationInline,)
    list_display = (
        "__str__",
        "status_display",
        "level",
        "audience",
        "languages_present",
        "languages_missing",
        "seen_count",
        "dismissed_count",
        "online_now",
        "publish_at",
        "expires_at",
    )
    list_filter = (StatusFilter, "level", "audience", LanguageFilter)
    search_fields = ("translations__title", "translations__message")
    date_hierarchy = "publish_at"
    filter_horizontal = ("users", "groups")
    readonly_fields = (
        "preview",
        "withdrawn_at",
        "created_by",
        "created_by_token",
        "external_id",
        "created_at",
        "updated_at",
    )
    actions = ("withdraw_now", "duplicate_as_draft")
    fieldsets = (
        (None, {"fields": ("level", "audience", "publish_at", "expires_at", "withdrawn")}),
        (
            _("Selected users and groups"),
            {
                "classes": ("collapse",),
                "fields": ("users", "groups"),
                "description": _("Only with the audience “Selected users and groups”."),
            },
        ),
        (_("Link"), {"classes": ("collapse",), "fields": ("url",)}),
        (_("Preview"), {"fields": ("preview",)}),
        (
            _("History"),
            {
                "classes": ("collapse",),
                "fields": (
                    "withdrawn_at",
                    "created_by",
                    "created_by_token",
                    "external_id",
                    "created_at",
                    "updated_at",
                ),
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alarm]:
        # The default manager's queryset: Alarm.objects is an AlarmQuerySet manager.
        queryset = cast("AlarmQuerySet", super().get_queryset(request))
        return (
            queryset.with_status()
            .prefetch_related("translations")
            .annotate(
                seen=_receipt_count(seen_at__isnull=False),
                dismissed=_receipt_count(dismissed_at__isnull=False),
            )
        )

    # -- change list columns -----------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AlarmChangeList

    @admin.display(description=_("online now / fallback"))
    def online_now(self, obj: Alarm) -> str:
        found: reach.Reach | None = getattr(obj, "reach_now", None)
        if found is None:
            return "-"
        return f"{found.readers} / {found.fallback}"

    @admin.display(description=_("status"), ordering="status_code")
    def status_display(self, obj: Alarm) -> str:
        return str(STATUS_LABELS[getattr(obj, "status_code", None) or obj.status])

    @admin.display(description=_("languages"))
    def languages_present(self, obj: Alarm) -> str:
        present = {t.language_code for t in obj.translations.all()}
        return ", ".join(code for code, _name in settings.LANGUAGES if code in present)

    @admin.display(description=_("missing"))
    def languages_missing(self, obj: Alarm) -> str:
        present = {t.language_code for t in obj.translations.all()}
        return ", ".join(code for code, _name in settings.LANGUAGES if code not in present)

    @admin.display(description=_("seen"), ordering="seen")
    def seen_count(self, obj: Alarm) -> int:
        return getattr(obj, "seen", 0)

    @admin.display(description=_("dismissed"), ordering="dismissed")
    def dismissed_count(self, obj: Alarm) -> int:
        return getattr(obj, "dismissed", 0)

    # -- change form -------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "operator/test/",
                self.admin_site.admin_view(self.test_send_view),
                name=f"{info[0]}_{info[1]}_test",
            ),
            path(
                "operator/reach/",
                self.admin_site.admin_view(self.reach_view),
                name=f"{info[0]}_{info[1]}_reach",
            ),
        ]
        # Before the admin's own: its "<path:object_id>/" would take these.
        return own + super().get_urls()

    def test_send_view(self, request: HttpRequest) -> JsonResponse:
        return operator.test_send(self, request)

    def reach_view(self, request: HttpRequest) -> JsonResponse:
        return operator.reach_view(self, request)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Alarm | None = None,
    ) -> HttpResponse:
        context["alarms_operator"] = operator.form_context(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description=_("Preview"))
    def preview(self, obj: Alarm) -> SafeString | StrOrPromise:
        if obj.pk is None:
            return _("Save the alarm to see how it reads in each language.")
        if not obj.translations.all():
            return _("No translations yet.")
        rows = []
        for code, name in settings.LANGUAGES:
            # What the stream sends a reader of this language.
            payload = obj.reader_payload(code)
            chosen = payload["language"]
            if chosen == code:
                note = ""
            else:
                note = _("No %(language)s translation: these readers get %(fallback)s.") % {
                    "language": name,
                    "fallback": language_name(chosen),
                }
            title, message = payload["title"], payload["message"]
            rows.append((name, note, chosen, payload["dir"], obj.level, title, message))
        # Every piece of alarm text goes through format_html's escaping.
        return format_html(
            '<div class="alarms-admin-preview">{}</div>',
            format_html_join(
                "",
                # Styled by alarms/admin.css (Media): no style attribute, which a
                # strict Content-Security-Policy refuses.
                '<section class="alarms-admin-preview__lang"><h4>{} <small>{}</small></h4>'
                '<div lang="{}" dir="{}" class="alarms-admin-preview__card '
                'alarms-admin-preview-{}"><strong>{}</strong>'
                '<p class="alarms-admin-preview__message">{}</p></div></section>',
                rows,
            ),
        )

    def save_model(self, request: HttpRequest, obj: Alarm, form: Any, change: bool) -> None:
        if not change:
            # The admin serves signed-in staff only.
            obj.created_by = cast("User", request.user)
        withdrawn = form.cleaned_data.get("withdrawn", False)
        if withdrawn and obj.withdrawn_at is None:
            obj.withdrawn_at = timezone.now()
            # For save_related: this save withdraws it.
            obj._alarms_withdrawn_now = True  # type: ignore[attr-defined]
        elif not withdrawn:
            obj.withdrawn_at = None
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # The signals of alarms.signals, once the admin's transaction commits; an
        # unchanged form saved again is no change.
        if getattr(form.instance, "_alarms_withdrawn_now", False):
            signal = signals.alarm_withdrawn
        elif not change:
            signal = signals.alarm_created
        elif form.has_changed() or any(formset.has_changed() for formset in formsets):
            signal = signals.alarm_updated
        else:
            return
        alias = form.instance._state.db
        signals.send_on_commit(signal, using=alias, alarm=form.instance)

    def delete_model(self, request: HttpRequest, obj: Alarm) -> None:
        # Through the API: it sends alarm_deleted after the commit.
        api.delete_alarms([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        api.delete_alarms(queryset)

    # -- actions -----------------------------------------------------------

    @admin.action(description=_("Withdraw now"), permissions=("change",))
    def withdraw_now(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        # Through the API: it writes the change journal that open streams follow.
        count = api.withdraw(queryset)
        self.message_user(
            request,
            ngettext(
                "Withdrew %(count)d alarm; open pages remove it now.",
                "Withdrew %(count)d alarms; open pages remove them now.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description=_("Duplicate as a new draft"), permissions=("add",))
    def duplicate_as_draft(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        now = timezone.now()
        copies = []
        with transaction.atomic():
            for alarm in queryset.prefetch_related("translations", "users", "groups"):
                window = alarm.expires_at - alarm.publish_at if alarm.expires_at else None
                # Withdrawn, so the copy can never go live before an operator publishes it.
                copy = Alarm.objects.create(
                    level=alarm.level,
                    audience=alarm.audience,
                    url=alarm.url,
                    publish_at=now,
                    expires_at=now + window if window else None,
                    withdrawn_at=now,
                    # The admin serves signed-in staff only.
                    created_by=cast("User", request.user),
                )
                AlarmTranslation.objects.bulk_create(
                    AlarmTranslation(
                        alarm=copy, language_code=t.language_code, title=t.title, message=t.message
                    )
                    for t in alarm.translations.all()
                )
                copy.users.set(alarm.users.all())
                copy.groups.set(alarm.groups.all())
                copies.append(copy)
        self.message_user(
            request,
            ngettext(
                "Copied %(count)d alarm with its translations and audience as a withdrawn "
                "draft (%(ids)s): nobody sees it until you untick “Withdrawn” and save.",
                "Copied %(count)d alarms with their translations and audiences as withdrawn "
                "drafts (%(ids)s): nobody sees them until you untick “Withdrawn” and save.",
                len(copies),
            )
            % {"count": len(copies), "ids": ", ".join(f"#{c.pk}" for c in copies)},
            messages.SUCCESS,
        )


@admin.register(AlarmReceipt)
class AlarmReceiptAdmin(_ReceiptAdminBase):
    """Read-only: receipts are written by readers, never by operators."""

    list_display = ("alarm", "user", "seen_at", "dismissed_at")
    list_filter = (
        ("seen_at", admin.EmptyFieldListFilter),
        ("dismissed_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("alarm", "user")
    search_fields = ("user__username", "alarm__translations__title")
    raw_id_fields = ("alarm", "user")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlarmReceipt]:
        return super().get_queryset(request).prefetch_related("alarm__translations")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# -- escalation emails --------------------------------------------------------------

if TYPE_CHECKING:
    _EscalationAdminBase = admin.ModelAdmin[AlarmEscalation]
else:
    _EscalationAdminBase = admin.ModelAdmin


@admin.register(AlarmEscalation)
class AlarmEscalationAdmin(_EscalationAdminBase):
    """Read-only: written by ``escalate_alarms``. Deleting a row lets the email be
    sent again (after fixing an address that failed)."""

    list_display = ("alarm", "user", "sent_at", "attempts", "claimed_at", "error")
    list_filter = (("sent_at", admin.EmptyFieldListFilter),)
    list_select_related = ("alarm", "user")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("alarm", "user")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlarmEscalation]:
        return super().get_queryset(request).prefetch_related("alarm__translations")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# -- API tokens -------------------------------------------------------------------

if TYPE_CHECKING:
    _TokenAdminBase = admin.ModelAdmin[AlarmToken]
else:
    _TokenAdminBase = admin.ModelAdmin


@admin.register(AlarmToken)
class AlarmTokenAdmin(_TokenAdminBase):
    """Tokens of the HTTP API and the webhooks. A new token's secret is shown once,
    on the page after the add form, and never again: only its digest is stored,
    and the digest is never shown."""

    form = AlarmTokenForm
    list_display = (
        "name",
        "prefix_display",
        "scopes",
        "audience",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "audience")
    search_fields = ("name", "prefix")
    filter_horizontal = ("groups",)
    actions = ("revoke",)
    readonly_fields = ("prefix_display", "last_used_at", "revoked_at", "created_by", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "scopes", "expires_at")}),
        (
            _("Defaults for the alarms it sends"),
            {"fields": ("audience", "groups", "storm_limit")},
        ),
        (
            _("History"),
            {
                "fields": (
                    "prefix_display",
                    "last_used_at",
                    "revoked_at",
                    "created_by",
                    "created_at",
                )
            },
        ),
    )

    @admin.display(description=_("prefix"), ordering="prefix")
    def prefix_display(self, obj: AlarmToken) -> str:
        return f"{obj.prefix}…" if obj.prefix else ""

    def get_fieldsets(self, request: HttpRequest, obj: AlarmToken | None = None) -> Any:
        # A token being made has no history yet.
        return self.fieldsets if obj is not None else self.fieldsets[:2]

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> AlarmToken:
        if change:
            return cast(AlarmToken, super().save_form(request, form, change))
        data = form.cleaned_data
        token, secret = tokens.create_token(
            data["name"],
            scopes=data["scopes"].split(),
            audience=data["audience"],
            groups=data["groups"],
            storm_limit=data["storm_limit"],
            expires_at=data["expires_at"],
            created_by=request.user,
        )
        form.instance = token
        # For response_add, and nowhere else: never stored, never logged.
        token._alarms_secret = secret  # type: ignore[attr-defined]
        return token

    def save_model(self, request: HttpRequest, obj: AlarmToken, form: Any, change: bool) -> None:
        if change:  # a new token was saved by create_token
            super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:  # a new token's groups were set by create_token
            super().save_related(request, form, formsets, change)

    def response_add(
        self, request: HttpRequest, obj: AlarmToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(obj, "_alarms_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        # A page of its own rather than a message: messages are stored (in a cookie
        # or the session) until shown, and the secret must not be. The admin's views
        # are never cached.
        return TemplateResponse(
            request,
            "alarms/admin/token_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": _("Token “%(name)s” created") % {"name": obj.name},
                "token": obj,
                "secret": secret,
            },
        )

    @admin.action(description=_("Revoke: refuse from the next request on"), permissions=("change",))
    def revoke(self, request: HttpRequest, queryset: QuerySet[AlarmToken]) -> None:
        revoked = [token for token in queryset if token.revoked_at is None]
        for token in revoked:
            tokens.revoke(token)
        self.message_user(
            request,
            ngettext(
                "Revoked %(count)d token: it is refused from now on.",
                "Revoked %(count)d tokens: they are refused from now on.",
                len(revoked),
            )
            % {"count": len(revoked)},
            messages.SUCCESS,
        )

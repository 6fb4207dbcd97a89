"""Forms: the admin's alarm and its inline translations, validated together, and
a reader's preferences."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from alarms import preferences, storm
from alarms.models import Alarm, AlarmToken, AlarmTranslation, Audience, Preferences, TokenScope
from alarms.translation import default_language

if TYPE_CHECKING:
    # Django's form classes take no type parameters at run time; the stubs' do.
    _AlarmFormBase = forms.ModelForm[Alarm]
    _TokenFormBase = forms.ModelForm[AlarmToken]
    _PreferencesFormBase = forms.ModelForm[Preferences]
    _TranslationFormSetBase = BaseInlineFormSet[
        AlarmTranslation, Alarm, forms.ModelForm[AlarmTranslation]
    ]
else:
    _AlarmFormBase = _TokenFormBase = _PreferencesFormBase = forms.ModelForm
    _TranslationFormSetBase = BaseInlineFormSet


def language_name(code: str) -> str:
    return str(dict(settings.LANGUAGES).get(code, code))


class AlarmAdminForm(_AlarmFormBase):
    #: True for the admin's "Send a test to me" (``alarms.operator``): the same
    #: validation, but storm control does not apply, since nothing is published.
    test_send = False

    # withdrawn_at is not editable on the model; the checkbox sets or clears it
    # so that a draft (see the "duplicate" action) can be published from here.
    withdrawn = forms.BooleanField(
        label=_("Withdrawn"),
        required=False,
        help_text=_(
            "Ticked: nobody sees the alarm, and open pages remove it at once. "
            "Untick to publish a draft."
        ),
    )

    class Meta:
        model = Alarm
        fields = ("level", "audience", "users", "groups", "url", "publish_at", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["withdrawn"].initial = self.instance.withdrawn_at is not None

    def clean(self) -> dict[str, Any]:
        # ModelForm.clean() returns cleaned_data; the stubs allow None for any form.
        super().clean()
        cleaned = self.cleaned_data
        audience = cleaned.get("audience")
        users = cleaned.get("users")
        groups = cleaned.get("groups")
        has_targets = bool(users) or bool(groups)
        if audience == Audience.SELECTED and not has_targets:
            self.add_error(
                "audience",
                _(
                    "Choose at least one user or group for the audience "
                    "“Selected users and groups”."
                ),
            )
        elif audience and audience != Audience.SELECTED and has_targets:
            message = _(
                "Users and groups only apply to the audience “Selected users and groups”: "
                "clear them or change the audience."
            )
            for name, value in (("users", users), ("groups", groups)):
                if value:
                    self.add_error(name, message)
        if not self.errors and self._reaches_readers_anew(cleaned):
            # The admin validates inside the transaction that saves, so the lock
            # check() takes lasts until this alarm is committed.
            try:
                storm.check(
                    cleaned["audience"],
                    publish_at=cleaned["publish_at"],
                    expires_at=cleaned.get("expires_at"),
                    user_ids=[u.pk for u in users or ()],
                    group_ids=[g.pk for g in groups or ()],
                    exclude=self.instance.pk,
                )
            except storm.StormLimitExceeded as exc:
                raise ValidationError(str(exc), code="storm_limit") from exc
        return cleaned

    def _reaches_readers_anew(self, cleaned: dict[str, Any]) -> bool:
        """Whether saving publishes the alarm to an audience, so storm control applies.

        A withdrawn alarm reaches nobody; an edit that keeps the audience and the
        publication (a typo fixed, an expiry moved) sends nothing new. Compared with
        the saved alarm rather than the form's initial data, which a client may omit.
        """
        if cleaned.get("withdrawn") or self.test_send:
            return False
        old = self.instance
        if old.pk is None or old.withdrawn_at is not None:
            return True
        # To the second: the admin's widgets drop microseconds.
        if cleaned["publish_at"].replace(microsecond=0) != old.publish_at.replace(microsecond=0):
            return True
        if cleaned["audience"] != old.audience:
            return True
        users = {u.pk for u in cleaned.get("users") or ()}
        groups = {g.pk for g in cleaned.get("groups") or ()}
        return users != set(old.users.values_list("pk", flat=True)) or groups != set(
            old.groups.values_list("pk", flat=True)
        )


class AlarmTranslationFormSet(_TranslationFormSetBase):
    """One row per site language; the default language required, none twice.

    Extra rows come prefilled with the languages the alarm does not have yet;
    a prefilled row left without title and message is unchanged, so ignored.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        instance = kwargs.get("instance")
        present: set[str] = set()
        if instance is not None and instance.pk is not None:
            present = set(instance.translations.values_list("language_code", flat=True))
        kwargs.setdefault(
            "initial",
            [{"language_code": code} for code, _name in settings.LANGUAGES if code not in present],
        )
        super().__init__(*args, **kwargs)

    def clean(self) -> None:
        if any(self.errors):
            # Rows with their own errors say so; the checks below need clean rows.
            return
        seen: set[str] = set()
        duplicates: list[str] = []
        for form in self.forms:
            if not form.has_changed() and form.instance.pk is None:
                continue
            # A private formset method, used as Django's own clean() uses it; not in the stubs.
            if self.can_delete and self._should_delete_form(form):  # type: ignore[attr-defined]
                continue
            code = form.cleaned_data.get("language_code")
            if not code:
                continue
            if code in seen and code not in duplicates:
                duplicates.append(code)
            seen.add(code)
        errors = [
            ValidationError(
                _("There are two translations in %(language)s: keep one."),
                code="duplicate_language",
                params={"language": language_name(code)},
            )
            for code in duplicates
        ]
        if default_language() not in seen:
            errors.append(
                ValidationError(
                    _(
                        "A translation in %(language)s, the default language of the site, is "
                        "required: readers without their own language get it."
                    ),
                    code="default_language_missing",
                    params={"language": language_name(default_language())},
                )
            )
        if errors:
            raise ValidationError(errors)
        super().clean()


class AlarmTokenForm(_TokenFormBase):
    """An API token: its scopes as checkboxes. The admin makes a new one with
    ``alarms.tokens.create_token``, which draws the secret."""

    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=TokenScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[TokenScope.PUBLISH],
    )

    class Meta:
        model = AlarmToken
        fields = ("name", "scopes", "audience", "groups", "storm_limit", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["scopes"] = self.instance.scopes.split()

    def clean_scopes(self) -> str:
        # The model keeps them space-separated.
        return " ".join(sorted(set(self.cleaned_data["scopes"])))

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        changed = "expires_at" in self.changed_data
        if changed and expires_at is not None and expires_at <= timezone.now():
            raise ValidationError(_("Choose a time in the future."), code="expired")
        return expires_at

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("audience") == Audience.SELECTED and not cleaned.get("groups"):
            self.add_error(
                "groups",
                _(
                    "Choose at least one group for the default audience "
                    "“Selected users and groups”."
                ),
            )
        return cleaned


def time_zone_choices() -> list[tuple[str, Any]]:
    return [("", _("The browser's")), *((z, z) for z in sorted(preferences.zone_names()))]


class PreferencesForm(_PreferencesFormBase):
    """A reader's preferences. Each field's help text and errors are tied to its
    input (``aria-describedby``), for the page's screen-reader users."""

    time_zone = forms.ChoiceField(
        label=capfirst(Preferences._meta.get_field("time_zone").verbose_name),
        required=False,
        choices=time_zone_choices,
        help_text=_("Times on alarms and in the admin are shown in this zone."),
        error_messages={"invalid_choice": _("“%(value)s” is not a time zone this site knows.")},
    )

    class Meta:
        model = Preferences
        fields = ("language", "time_zone", "mute_below", "desktop_from")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The blank choice named for what it means, not "---------".
        for name, blank in (
            ("language", _("As the browser asks")),
            ("mute_below", _("Mute nothing")),
        ):
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            field.choices = [("", blank), *list(cast("list[Any]", field.choices))[1:]]

    def full_clean(self) -> None:
        super().full_clean()
        for name, field in self.fields.items():
            bound = self[name]
            ids = [f"{bound.auto_id}_helptext"] if field.help_text else []
            if self.errors.get(name):
                ids.append(f"{bound.auto_id}_error")
                field.widget.attrs["aria-invalid"] = "true"
            if ids:
                field.widget.attrs["aria-describedby"] = " ".join(ids)

    def clean_time_zone(self) -> str:
        zone: str = self.cleaned_data["time_zone"]
        if zone and not preferences.valid_time_zone(zone):
            raise ValidationError(
                _("“%(value)s” is not a time zone this site knows."),
                code="invalid_choice",
                params={"value": zone},
            )
        return zone

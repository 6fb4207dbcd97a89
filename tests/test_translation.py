from __future__ import annotations

import gettext
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import translation

import alarms
from alarms.models import Audience, Level
from alarms.translation import choose_language, direction, language_choices, supported_language


@pytest.mark.parametrize(
    ("wanted", "available", "chosen"),
    (
        # Exact code first, whatever the case.
        ("ko", ("en", "ko", "ja"), "ko"),
        ("pt-br", ("pt-br", "pt", "en"), "pt-br"),
        ("PT-BR", ("en", "pt-BR"), "pt-br"),
        # Then the generic language.
        ("pt-br", ("pt", "en"), "pt"),
        ("ko-kr", ("en", "ko"), "ko"),
        # Then LANGUAGE_CODE.
        ("fr", ("ja", "en", "ko"), "en"),
        (None, ("ja", "en"), "en"),
        ("", ("ko", "en"), "en"),
        # Then any translation, the same one every time.
        ("fr", ("ko", "ja"), "ja"),
        (None, ("ar",), "ar"),
        # Nothing to choose from.
        ("en", (), None),
    ),
)
def test_choose_language(
    wanted: str | None, available: tuple[str, ...], chosen: str | None
) -> None:
    assert choose_language(wanted, available) == chosen


def test_a_script_variant_is_never_taken_for_another() -> None:
    # Traditional Chinese readers get the generic or the default language, not Simplified.
    assert choose_language("zh-hant", ("zh-hans", "en")) == "en"
    assert choose_language("zh-hant", ("zh-hans", "zh", "en")) == "zh"
    assert choose_language("zh-hans", ("zh-hant", "en")) == "en"
    assert choose_language("zh-hant", ("zh-hans", "zh-hant")) == "zh-hant"


@override_settings(LANGUAGE_CODE="ko")
def test_the_default_comes_from_settings() -> None:
    assert choose_language("fr", ("en", "ko", "ja")) == "ko"


@override_settings(LANGUAGE_CODE="pt-br")
def test_a_regional_default_falls_back_to_its_language() -> None:
    assert choose_language("fr", ("en", "pt")) == "pt"


@pytest.mark.parametrize(
    ("code", "way"),
    (
        ("ar", "rtl"),
        ("ar-eg", "rtl"),
        ("he", "rtl"),
        ("fa", "rtl"),
        ("en", "ltr"),
        ("ko", "ltr"),
        ("ja", "ltr"),
        ("xx", "ltr"),
        ("dv", "rtl"),  # not in Django's table: the module's own list
    ),
)
def test_direction(code: str, way: str) -> None:
    assert direction(code) == way


def test_language_choices_follow_settings() -> None:
    assert [code for code, _name in language_choices()] == ["en", "ko", "ja", "ar"]
    with override_settings(LANGUAGES=[("en", "English"), ("he", "Hebrew")]):
        assert language_choices() == [("en", "English"), ("he", "Hebrew")]


@pytest.mark.parametrize(
    ("code", "supported"),
    (("ko", "ko"), ("KO", "ko"), ("ja-jp", "ja"), ("fr", None), (None, None), ("x" * 16, None)),
)
def test_supported_language(code: str | None, supported: str | None) -> None:
    assert supported_language(code) == supported


# -- the app's own interface strings ----------------------------------------------

LOCALE = Path(alarms.__file__).resolve().parent / "locale"


@pytest.mark.parametrize("code", ("ko", "ja", "ar"))
def test_interface_is_translated(code: str) -> None:
    # Compiled catalogues ship with the app: no gettext tools needed at install.
    assert (LOCALE / code / "LC_MESSAGES" / "django.mo").is_file()
    with translation.override(code):
        assert str(Level.CRITICAL.label) != "Critical"
        assert str(Audience.SELECTED.label) != "Selected users and groups"
        assert translation.gettext("Withdraw now") != "Withdraw now"


@pytest.mark.parametrize("code", ("ko", "ja", "ar"))
def test_catalogue_has_no_empty_translation(code: str) -> None:
    with (LOCALE / code / "LC_MESSAGES" / "django.mo").open("rb") as mo:
        catalogue = gettext.GNUTranslations(mo)
    po = (LOCALE / code / "LC_MESSAGES" / "django.po").read_text(encoding="utf-8")
    msgids = po.count("\nmsgid ") - 1  # less the header
    assert len(catalogue._catalog) - 1 >= msgids  # type: ignore[attr-defined]
    assert all(catalogue._catalog.values())  # type: ignore[attr-defined]

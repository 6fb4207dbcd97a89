from __future__ import annotations

import ast
import gettext
import re
import shutil
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import RequestFactory, override_settings
from django.utils import translation

import alarms
from alarms.models import Audience, Level
from alarms.translation import (
    choose_language,
    direction,
    language_choices,
    parse_accept_language,
    request_language,
    supported_language,
)


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


# -- tags as clients spell them: underscores, any case, legacy codes ----------------

SITE = [
    ("en", "English"),
    ("he", "Hebrew"),
    ("pt-br", "Brazilian Portuguese"),
    ("id", "Indonesian"),
    ("nb", "Norwegian Bokmål"),
    ("ro", "Romanian"),
    ("zh-hant", "Traditional Chinese"),
    ("ko", "Korean"),
]


@override_settings(LANGUAGES=SITE)
@pytest.mark.parametrize(
    ("code", "supported"),
    (
        # Underscores and any case.
        ("pt_BR", "pt-br"),
        ("PT-br", "pt-br"),
        ("PT_br", "pt-br"),
        ("pt-BR", "pt-br"),
        ("he_IL", "he"),
        ("HE", "he"),
        # Withdrawn ISO 639 codes, with or without a region.
        ("iw", "he"),
        ("IW", "he"),
        ("iw-IL", "he"),
        ("iw_IL", "he"),
        ("in", "id"),
        ("in-ID", "id"),
        ("mo", "ro"),
        # Norwegian: the macrolanguage for Bokmål, which Django ships.
        ("no", "nb"),
        ("no_NO", "nb"),
        ("nb-NO", "nb"),
        ("nn", None),
        # Django's Chinese fallbacks, now for any spelling.
        ("zh_TW", "zh-hant"),
        ("zh-Hant", "zh-hant"),
        ("zh_Hant_HK", "zh-hant"),
        ("ZH-HK", "zh-hant"),
        # Django's regional variant of the language: Portuguese readers get Brazilian.
        ("pt_PT", "pt-br"),
        # Unknown or malformed: None, for the caller's LANGUAGE_CODE.
        ("fr", None),
        ("fr_FR", None),
        ("pt_BR.UTF-8", None),
        ("../he", None),
        ("he/../en", None),
        ("he_", None),
        ("_he", None),
        ("he--il", None),
        ("h e", None),
        ("*", None),
        ("iw-" + "x" * 13, None),
        ("\u212ao", None),  # the Kelvin sign, which lower() turns into "k"
        ("h\u0435", None),  # a Cyrillic e
        ("\u05e2\u05d1", None),
        ("he\0", None),
        ("", None),
        (None, None),
    ),
)
def test_supported_language_reads_tags_as_clients_send_them(
    code: str | None, supported: str | None
) -> None:
    assert supported_language(code) == supported


EMPTY_MO = struct.pack("<7I", 0x950412DE, 0, 0, 28, 28, 0, 28)


def test_yiddish_by_its_legacy_code(tmp_path: Path) -> None:
    # Django takes no language without a catalogue, and ships none for Yiddish.
    (tmp_path / "yi" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "yi" / "LC_MESSAGES" / "django.mo").write_bytes(EMPTY_MO)
    with override_settings(LANGUAGES=[("en", "English"), ("yi", "Yiddish")]):
        assert supported_language("ji") is None
        with override_settings(LOCALE_PATHS=[tmp_path]):
            assert supported_language("yi") == "yi"
            assert supported_language("ji") == "yi"
            assert supported_language("JI_us") == "yi"


@pytest.mark.parametrize(
    ("wanted", "available", "chosen"),
    (
        ("pt_BR", ("pt-br", "pt", "en"), "pt-br"),
        ("PT_br", ("pt", "en"), "pt"),
        ("iw", ("he", "en"), "he"),
        ("iw_IL", ("he", "en"), "he"),
        ("in", ("id", "en"), "id"),
        ("no", ("nb", "en"), "nb"),
        ("nb-NO", ("no", "en"), "no"),
        # The tag itself before its alias.
        ("no", ("no", "nb", "en"), "no"),
        # Malformed: the default, no error.
        ("../ko", ("ko", "en"), "en"),
        ("k" * 100, ("ko", "en"), "en"),
        ("\u212ao", ("ko", "en"), "en"),
    ),
)
def test_choose_language_reads_tags_as_clients_send_them(
    wanted: str, available: tuple[str, ...], chosen: str
) -> None:
    assert choose_language(wanted, available) == chosen


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


# -- the catalogues are complete: every string translated, checked and compiled ----

CODES = ("ko", "ja", "ar")


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        return (self.msgctxt, self.msgid, self.msgid_plural)


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file, header included (its msgid is "")."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int] | None = None

    def put(where: tuple[str, int], text: str) -> None:
        assert entry is not None
        name, index = where
        if name == "msgstr":
            entry.msgstr[index] = entry.msgstr.get(index, "") + text
        else:
            setattr(entry, name, (getattr(entry, name) or "") + text)

    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry is not None:
                entries.append(entry)
            entry, target = None, None
            continue
        if entry is None:
            entry = Entry()
        if line.startswith("#~"):
            # An obsolete entry: read on, so that it is reported by its msgid.
            entry.obsolete = True
            line = line[2:].strip()
            if not line or line.startswith("|"):
                continue
        if line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            continue
        if line.startswith("#"):
            continue
        if line.startswith('"'):
            assert target is not None, f"{path}: a string continues nothing: {line!r}"
            put(target, ast.literal_eval(line))
            continue
        keyword, _, literal = line.partition(" ")
        match = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
        if match:
            target = ("msgstr", int(match[1]))
        elif keyword in ("msgid", "msgid_plural", "msgctxt", "msgstr"):
            target = (keyword, 0)
        else:
            raise AssertionError(f"{path}: cannot read {line!r}")
        put(target, ast.literal_eval(literal))
    return entries


def catalogue(code: str) -> list[Entry]:
    return read_po(LOCALE / code / "LC_MESSAGES" / "django.po")


def messages(code: str) -> list[Entry]:
    return [entry for entry in catalogue(code) if entry.msgid]


def compiled(code: str) -> gettext.GNUTranslations:
    with (LOCALE / code / "LC_MESSAGES" / "django.mo").open("rb") as mo:
        return gettext.GNUTranslations(mo)


def nplurals(code: str) -> int:
    header = catalogue(code)[0].msgstr[0]
    match = re.search(r"^Plural-Forms:\s*nplurals=(\d+);", header, re.MULTILINE)
    assert match, f"{code}: no Plural-Forms in the header"
    return int(match[1])


def label(entry: Entry) -> str:
    return repr(entry.msgid[:60])


@pytest.mark.parametrize("code", CODES)
def test_every_entry_is_translated_and_checked(code: str) -> None:
    forms = nplurals(code)
    problems = []
    for entry in messages(code):
        if entry.obsolete:
            problems.append(f"obsolete (run makemessages --no-obsolete): {label(entry)}")
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {label(entry)}")
        wanted = range(forms) if entry.msgid_plural is not None else range(1)
        if sorted(entry.msgstr) != list(wanted):
            problems.append(f"{len(entry.msgstr)} forms instead of {len(wanted)}: {label(entry)}")
        if not all(entry.msgstr.get(index, "").strip() for index in wanted):
            problems.append(f"untranslated: {label(entry)}")
    assert not problems, f"{code}:\n" + "\n".join(problems)


PERCENT = re.compile(
    r"%(?:\((?P<name>\w+)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?P<kind>[diouxXeEfFgGcrsa%])"
)
BRACES = re.compile(r"\{\{|\}\}|\{(?P<name>[^{}!:]*)(?:![rsa])?(?::[^{}]*)?\}")


def placeholders(text: str, flags: set[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    if "python-format" in flags:
        for match in PERCENT.finditer(text):
            if match["kind"] != "%":
                found[match[0]] += 1
    if "python-brace-format" in flags:
        for match in BRACES.finditer(text):
            if match["name"] is not None:
                found["{" + match["name"] + "}"] += 1
    return found


@pytest.mark.parametrize("code", CODES)
def test_translations_keep_the_placeholders(code: str) -> None:
    # A plural form that stands for one number only (Arabic's zero, one and two)
    # may spell the number out instead of using its placeholder, as msgfmt -c allows.
    plural = compiled(code).plural
    single = {index for index, hits in Counter(plural(n) for n in range(1000)).items() if hits == 1}
    problems = []
    for entry in messages(code):
        if entry.msgid_plural is None:
            wanted = placeholders(entry.msgid, entry.flags)
            got = placeholders(entry.msgstr.get(0, ""), entry.flags)
            if got != wanted:
                problems.append(f"{label(entry)}: {dict(got)} instead of {dict(wanted)}")
            continue
        wanted = placeholders(entry.msgid_plural, entry.flags)
        for index, text in sorted(entry.msgstr.items()):
            got = placeholders(text, entry.flags)
            if got == wanted or (index in single and not got - wanted):
                continue
            problems.append(f"{label(entry)}[{index}]: {dict(got)} instead of {dict(wanted)}")
    assert not problems, f"{code}:\n" + "\n".join(problems)


@pytest.mark.parametrize("code", CODES)
def test_compiled_catalogue_matches_the_po(code: str) -> None:
    # The .mo ships with the app: compilemessages must have run after the last edit.
    mo = compiled(code)._catalog  # type: ignore[attr-defined]
    stale = []
    for entry in messages(code):
        msgid = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        if entry.msgid_plural is None:
            same = mo.get(msgid) == entry.msgstr.get(0)
        else:
            same = all(mo.get((msgid, i)) == text for i, text in entry.msgstr.items())
        if not same:
            stale.append(label(entry))
    assert not stale, f"{code}: compile the catalogue again (compilemessages):\n" + "\n".join(stale)


def test_catalogues_follow_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every string the app marks for translation is in every catalogue, and no other."""
    if shutil.which("xgettext") is None:
        pytest.skip("GNU gettext (xgettext) is not installed: cannot extract the strings")
    app = tmp_path / "alarms"
    shutil.copytree(
        LOCALE.parent, app, ignore=shutil.ignore_patterns("locale", "__pycache__", "static")
    )
    # A locale folder in the copy, so that makemessages writes nowhere else.
    (app / "locale" / "xx" / "LC_MESSAGES").mkdir(parents=True)
    monkeypatch.chdir(app)
    call_command("makemessages", locale=["xx"], no_obsolete=True, verbosity=0)
    extracted = {e.key for e in read_po(app / "locale" / "xx" / "LC_MESSAGES" / "django.po")}
    extracted.discard((None, "", None))
    assert extracted, "no strings extracted"
    for code in CODES:
        present = {entry.key for entry in messages(code) if not entry.obsolete}
        missing = sorted(msgid[:60] for _ctxt, msgid, _plural in extracted - present)
        extra = sorted(msgid[:60] for _ctxt, msgid, _plural in present - extracted)
        assert not missing and not extra, (
            f"{code}: the catalogue is behind the source; run makemessages in alarms/.\n"
            f"missing: {missing}\nno longer in the source: {extra}"
        )


@pytest.mark.parametrize(
    ("header", "tags"),
    (
        ("", []),
        ("ko", ["ko"]),
        ("pt_BR, en;q=0.5", ["pt_BR", "en"]),
        # By weight, then in the header's order.
        ("en;q=0.5, iw, ja;q=0.5, ko;q=0.9", ["iw", "ko", "en", "ja"]),
        ("ko ; Q = 0.8 , ja", ["ja", "ko"]),
        # q=0 is "not this"; a malformed weight drops its entry only.
        ("ko;q=0, ja", ["ja"]),
        ("ko;q=2, ja;q=-1, ar;q=nan, he;q=1e0, en;q=0.0001, fr;q=0.5", ["fr"]),
        (" , ;;, ja", ["ja"]),
        ("*, ko;q=0.1", ["*", "ko"]),
    ),
)
def test_parse_accept_language_keeps_what_django_would_drop(header: str, tags: list[str]) -> None:
    assert parse_accept_language(header) == tags


def test_parse_accept_language_cuts_a_long_header_at_a_comma() -> None:
    assert parse_accept_language("ko;q=0.9," * 1_200) == ["ko"] * 55
    assert parse_accept_language("x" * 10_000) == []


@override_settings(LANGUAGES=SITE, LANGUAGE_CODE="en")
@pytest.mark.parametrize(
    ("header", "cookie", "language"),
    (
        ("iw", None, "he"),
        ("pt_BR", None, "pt-br"),
        ("fr, in_ID;q=0.5, en;q=0.1", None, "id"),
        ("fr, de", None, "en"),
        ("*, ko", None, "en"),
        ("ko", "iw_IL", "he"),
        # A cookie naming no language is passed over, as Django does.
        ("ko", "xx", "ko"),
        ("", None, "en"),
    ),
)
def test_request_language_reads_header_and_cookie_tags(
    header: str, cookie: str | None, language: str
) -> None:
    request = RequestFactory().get("/", HTTP_ACCEPT_LANGUAGE=header)
    if cookie:
        request.COOKIES["django_language"] = cookie
    assert request_language(request) == language
    # Django itself serves LANGUAGE_CODE to these legacy and underscore tags.
    if header in ("iw", "pt_BR"):
        assert translation.get_language_from_request(request) == "en"

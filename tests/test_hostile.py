"""Hostile and bad input through the admin, the API, the alarm centre and the receipts.

Every case ends in a clear 4xx, a validation error, a ``ValueError`` or a safe
fallback: never a 500, a database error, or another user's alarm.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from alarms import api, events
from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmTranslation, Audience
from alarms.translation import supported_language
from alarms.validators import is_safe_link, validate_link
from tests.factories import ago, make_alarm, make_user
from tests.helpers import ADD_URL, SCRIPT_TITLE, change_url, form_data, hostile_message

pytestmark = pytest.mark.django_db

CENTRE_URL = reverse("alarms:centre")
UNSAFE_LINK = "Enter an http:// or https:// address"
NUL_REFUSED = "Null characters are not allowed."

# Every way of smuggling script or another origin into a link that browsers accept.
HOSTILE_LINKS = [
    "javascript:alert(1)",
    " javascript:alert(1)",  # browsers strip leading C0 controls and spaces
    "\x01javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",  # browsers drop tab, CR and LF anywhere in a URL
    "java\nscript:alert(1)",
    "java\rscript:alert(1)",
    "javascript\t:alert(1)",
    "\u3000javascript:alert(1)",
    "javascript://example.com/%0aalert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example",
    "///evil.example",
    "\\\\evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    " /evil.example",
    "https:evil.example",
    "https:/evil.example",
    "https:\\\\evil.example",
    "https://evil.example\\@good.example",
    "%6Aavascript:alert(1)",
    "javascript%3Aalert(1)",
    "&#106;avascript:alert(1)",
    "http://[::1",  # urlsplit raises ValueError on this one
    "https://example.com/\0",
    "https://example.com/ x",
]
# Same-origin paths that only look odd: percent-escapes stay escaped in a path.
ODD_BUT_SAFE_LINKS = ["/%2F%2Fevil.example", "/%5Cevil.example", "/alarms/?next=//evil.example"]

# -- links: the validator, the API, the admin, the centre -------------------------------


@pytest.mark.parametrize("url", HOSTILE_LINKS)
def test_validator_refuses_hostile_links(url: str) -> None:
    assert is_safe_link(url) is False
    with pytest.raises(ValidationError) as info:
        validate_link(url)
    assert info.value.code == "unsafe_link"


@pytest.mark.parametrize("url", HOSTILE_LINKS)
def test_api_refuses_hostile_links_with_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="Unsafe link"):
        api.send_alarm({"en": {"title": "t", "message": "m"}}, url=url)
    assert not Alarm.objects.exists()


LONG_LINK = "https://example.com/" + "a" * 2_000  # over the column's 2,000


def test_api_refuses_a_link_longer_than_the_column() -> None:
    # Not a DataError from PostgreSQL's varchar(2000), nor stored by SQLite.
    with pytest.raises(ValueError, match="longer than 2000"):
        api.send_alarm({"en": {"title": "t", "message": "m"}}, url=LONG_LINK)
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("url", [u for u in HOSTILE_LINKS if u != " /evil.example"])
def test_admin_refuses_hostile_links(admin_client: Client, url: str) -> None:
    response = admin_client.post(ADD_URL, form_data(url=url))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "url" in errors
    assert not Alarm.objects.exists()


def test_admin_refuses_a_link_longer_than_the_column(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data(url=LONG_LINK))

    assert response.status_code == 200
    assert "url" in response.context["adminform"].form.errors
    assert not Alarm.objects.exists()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value or "" for name, value in attrs if name in ("href", "src", "action")]


def page_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


# PostgreSQL cannot store a NUL at all, so that one never reaches a page.
@pytest.mark.parametrize("url", [u for u in HOSTILE_LINKS if "\0" not in u])
def test_centre_never_renders_a_hostile_link_stored_behind_the_validators_back(
    client: Client, url: str
) -> None:
    reader = make_user("reader")
    # Straight to the table, as a shell, a fixture or an old row would.
    make_alarm(title="Linked", url=url)
    client.force_login(reader)

    response = client.get(CENTRE_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Linked" in html
    assert "alarms-entry__link" not in html
    assert all(is_safe_link(href) for href in page_links(html) if not href.startswith("#"))


@pytest.mark.parametrize("url", ODD_BUT_SAFE_LINKS)
def test_centre_keeps_percent_escaped_paths_escaped(client: Client, url: str) -> None:
    make_alarm(url=url)
    client.force_login(make_user("reader"))

    html = client.get(CENTRE_URL).content.decode()

    assert f'class="alarms-entry__link" href="{url.replace("&", "&amp;")}"' in html


# -- alarm text: markup, control characters, line ends, NUL, length ------------------------


def test_api_stores_hostile_text_exactly() -> None:
    message = hostile_message()
    assert len(message) == api.MAX_MESSAGE

    alarm = api.send_alarm({"en": {"title": SCRIPT_TITLE, "message": message}})

    stored = alarm.translations.get()
    assert (stored.title, stored.message) == (SCRIPT_TITLE, message)


@pytest.mark.parametrize(
    ("title", "message"),
    [("t" * (api.MAX_TITLE + 1), "m"), ("t", hostile_message(api.MAX_MESSAGE + 1))],
)
def test_api_refuses_text_over_the_limits(title: str, message: str) -> None:
    with pytest.raises(ValueError, match="longer than"):
        api.send_alarm({"en": {"title": title, "message": message}})
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("code", ["xx", "en\0", "en-evil", "", "../en", "e" * 10_000])
def test_api_refuses_unknown_language_codes(code: str) -> None:
    with pytest.raises(ValueError, match="Unknown language"):
        api.send_alarm({"en": {"title": "t", "message": "m"}, code: {"title": "t", "message": "m"}})
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("field", ["title", "message"])
def test_api_refuses_nul_with_a_value_error(field: str) -> None:
    text = {"title": "Title", "message": "Message"}
    text[field] = "before\0after"
    # Not a DataError from PostgreSQL, nor stored by SQLite.
    with pytest.raises(ValueError, match="Null characters are not allowed"):
        api.send_alarm({"en": text})
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("field", ["title", "message"])
def test_model_validation_refuses_nul(field: str) -> None:
    alarm = make_alarm(())
    translation = AlarmTranslation(alarm=alarm, language_code="en", title="t", message="m")
    setattr(translation, field, "before\0after")

    with pytest.raises(ValidationError) as info:
        translation.full_clean()

    assert list(info.value.message_dict) == [field]


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"])
def test_model_validation_refuses_lone_surrogates(text: str) -> None:
    # Neither database can store them (they are not encodable as UTF-8).
    translation = AlarmTranslation(
        alarm=make_alarm(()), language_code="en", title=text, message=text
    )

    with pytest.raises(ValidationError) as info:
        translation.full_clean()

    assert sorted(info.value.message_dict) == ["message", "title"]


def test_admin_stores_hostile_text_exactly(admin_client: Client) -> None:
    message = hostile_message()

    response = admin_client.post(ADD_URL, form_data([("en", SCRIPT_TITLE, message)]))

    assert response.status_code == 302
    stored = AlarmTranslation.objects.get()
    assert (stored.title, stored.message) == (SCRIPT_TITLE, message)


@pytest.mark.parametrize("field", ["title", "message"])
def test_admin_refuses_nul_with_a_validation_error(admin_client: Client, field: str) -> None:
    row = {"title": "Title", "message": "Message"}
    row[field] = "before\0after"

    response = admin_client.post(ADD_URL, form_data([("en", row["title"], row["message"])]))

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.errors[0][field] == [NUL_REFUSED]
    assert not Alarm.objects.exists()


def test_admin_refuses_nul_in_the_link(admin_client: Client) -> None:
    response = admin_client.post(ADD_URL, form_data(url="/a\0b"))

    assert response.status_code == 200
    assert "url" in response.context["adminform"].form.errors
    assert not Alarm.objects.exists()


@pytest.mark.parametrize(
    ("title", "message", "field"),
    [("t" * 201, "m", "title"), ("t", hostile_message(10_001), "message")],
)
def test_admin_refuses_text_over_the_limits(
    admin_client: Client, title: str, message: str, field: str
) -> None:
    response = admin_client.post(ADD_URL, form_data([("en", title, message)]))

    assert response.status_code == 200
    assert field in response.context["inline_admin_formsets"][0].formset.errors[0]
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("code", ["xx", "en\0", "EN", "en-evil", "x" * 5000])
def test_admin_refuses_unknown_language_codes(admin_client: Client, code: str) -> None:
    response = admin_client.post(
        ADD_URL, form_data([("en", "Title", "Message"), (code, "Title", "Message")])
    )

    assert response.status_code == 200
    assert "language_code" in response.context["inline_admin_formsets"][0].formset.errors[1]
    assert not Alarm.objects.exists()


def test_admin_preview_escapes_hostile_text(admin_client: Client) -> None:
    alarm = make_alarm(())
    AlarmTranslation.objects.create(
        alarm=alarm, language_code="en", title=SCRIPT_TITLE, message=hostile_message(500)
    )

    response = admin_client.get(change_url(alarm))

    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;" in html


def test_centre_escapes_hostile_text(client: Client) -> None:
    alarm = make_alarm(())
    AlarmTranslation.objects.create(
        alarm=alarm, language_code="en", title=SCRIPT_TITLE, message=hostile_message()
    )
    client.force_login(make_user("reader"))

    response = client.get(CENTRE_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "</textarea></p>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# -- the alarm centre: other users' alarms, bad posts, bad languages ------------------------


@pytest.fixture
def others() -> dict[str, Any]:
    """Alarms the reader must never see, and the reader."""
    alice = make_user("alice")
    night = Group.objects.create(name="Night")
    reader = make_user("reader")
    return {
        "reader": reader,
        "alice": alice,
        "alices": make_alarm(title="For alice", audience=Audience.SELECTED, users=[alice]),
        "nights": make_alarm(title="For night", audience=Audience.SELECTED, groups=[night]),
        "staffs": make_alarm(title="For staff", audience=Audience.STAFF),
        "expired": make_alarm(
            title="Old, alice",
            audience=Audience.SELECTED,
            users=[alice],
            publish_at=ago(hours=2),
            expires_at=ago(hours=1),
        ),
        "public": make_alarm(title="For all", audience=Audience.AUTHENTICATED),
    }


def test_centre_lists_none_of_another_users_alarms(client: Client, others: dict[str, Any]) -> None:
    client.force_login(others["reader"])

    response = client.get(CENTRE_URL)

    listed = [e.id for e in response.context["unread"] + response.context["earlier"]]
    assert listed == [others["public"].pk]
    html = response.content.decode()
    for name in ("alices", "nights", "staffs", "expired"):
        assert f'data-alarms-item="{others[name].pk}"' not in html
        assert f'name="dismiss" value="{others[name].pk}"' not in html
    assert "alice" not in html.lower()


def test_centre_dismiss_of_another_users_alarm_changes_nothing(
    client: Client, others: dict[str, Any]
) -> None:
    client.force_login(others["reader"])
    before = AlarmChange.objects.count()

    response = client.post(CENTRE_URL, {"dismiss": others["alices"].pk}, follow=True)

    assert response.redirect_chain == [(CENTRE_URL, 302)]
    assert not AlarmReceipt.objects.exists()
    assert AlarmChange.objects.count() == before
    assert not list(response.context["messages"])


def test_centre_dismiss_of_a_missing_alarm_changes_nothing(client: Client) -> None:
    client.force_login(make_user("reader"))

    response = client.post(CENTRE_URL, {"dismiss": "999999999"})

    assert response.status_code == 302
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize("raw", ["", "abc", "-1", "1.5", "1e3", "0x10", "²", "9" * 19, "1 OR 1=1"])
def test_centre_dismiss_of_a_malformed_id_is_a_400(client: Client, raw: str) -> None:
    client.force_login(make_user("reader"))

    response = client.post(CENTRE_URL, {"dismiss": raw})

    assert response.status_code == 400
    assert not AlarmReceipt.objects.exists()


def test_centre_dismiss_without_csrf_is_refused(others: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(others["reader"])

    response = client.post(CENTRE_URL, {"dismiss_all": "1"})

    assert response.status_code == 403
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize(
    "accept_language",
    [
        "a" * 10_240,
        "ko;q=0.9," * 1_200,
        "xx-evil;q=2, *;q=-1, ;;;, \u00e9\u00e9, en-\x7f",
        ",".join(f"x{i}-{i}" for i in range(2_000)),
    ],
)
def test_centre_survives_huge_or_garbage_accept_language(
    client: Client, accept_language: str
) -> None:
    make_alarm(("en", "ko"))
    client.force_login(make_user("reader"))

    response = client.get(CENTRE_URL, headers={"accept-language": accept_language})

    assert response.status_code == 200
    (entry,) = response.context["unread"]
    assert entry.language in ("en", "ko")
    assert response["Content-Language"] in ("en", "ko")


@pytest.mark.parametrize("cookie", ["xx", "../../etc/passwd", "x" * 4000, "ar\0", "en-"])
def test_centre_survives_a_garbage_language_cookie(client: Client, cookie: str) -> None:
    make_alarm(("en", "ar"))
    client.force_login(make_user("reader"))
    client.cookies["django_language"] = cookie

    response = client.get(CENTRE_URL)

    assert response.status_code == 200
    assert response.context["unread"][0].language in ("en", "ar")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x" * 10_000, None),
        ("xx", None),
        ("../../etc/passwd", None),
        ("en\0", None),
        ("en\r\nSet-Cookie: a=b", None),
        ("\u0627\u0644", None),
        ("", None),
        (None, None),
        ("EN", "en"),
        ("ar-EVIL", "ar"),
    ],
)
def test_unknown_language_codes_fall_back(code: str | None, expected: str | None) -> None:
    assert supported_language(code) == expected


# -- seen and dismiss -----------------------------------------------------------------------


def post_ids(client: Client, action: str, body: Any, **extra: Any) -> Any:
    return client.post(
        reverse(f"alarms:{action}"),
        json.dumps(body) if not isinstance(body, bytes | str) else body,
        content_type="application/json",
        **extra,
    )


@pytest.mark.parametrize("action", ["seen", "dismiss"])
def test_receipts_for_missing_or_other_users_alarms_change_nothing(
    client: Client, others: dict[str, Any], action: str
) -> None:
    client.force_login(others["reader"])
    foreign = [others[name].pk for name in ("alices", "nights", "staffs", "expired")]
    journal = AlarmChange.objects.count()

    response = post_ids(client, action, {"ids": [*foreign, 999_999_999]})

    assert (response.status_code, response.json()) == (200, {"updated": 0})
    assert not AlarmReceipt.objects.exists()
    assert AlarmChange.objects.count() == journal


@pytest.mark.parametrize("action", ["seen", "dismiss"])
def test_receipts_count_only_the_readers_own_alarms(
    client: Client, others: dict[str, Any], action: str
) -> None:
    client.force_login(others["reader"])

    response = post_ids(client, action, {"ids": [others["alices"].pk, others["public"].pk]})

    assert response.json() == {"updated": 1}
    assert list(AlarmReceipt.objects.values_list("user", "alarm")) == [
        (others["reader"].pk, others["public"].pk)
    ]


@pytest.mark.parametrize("action", ["seen", "dismiss"])
def test_receipts_without_csrf_are_refused(others: dict[str, Any], action: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(others["reader"])

    response = post_ids(client, action, {"ids": [others["public"].pk]})

    assert response.status_code == 403
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize("action", ["seen", "dismiss"])
def test_receipts_of_visitors_are_refused(client: Client, action: str) -> None:
    alarm = make_alarm(audience=Audience.EVERYONE)

    response = post_ids(client, action, {"ids": [alarm.pk]})

    assert response.status_code == 403
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize("action", ["seen", "dismiss"])
def test_receipts_refuse_get(client: Client, action: str) -> None:
    client.force_login(make_user("reader"))
    assert client.get(reverse(f"alarms:{action}"), {"ids": "1"}).status_code == 405


def test_receipts_take_a_full_batch_but_refuse_a_bigger_one(client: Client) -> None:
    reader = make_user("reader")
    client.force_login(reader)
    alarm = make_alarm()

    full = post_ids(client, "seen", {"ids": [alarm.pk, *range(10**9, 10**9 + 199)]})
    over = post_ids(client, "dismiss", {"ids": [alarm.pk, *range(10**9, 10**9 + 200)]})

    assert (full.status_code, full.json()) == (200, {"updated": 1})
    assert over.status_code == 400
    assert "At most" in over.json()["error"]
    assert AlarmReceipt.objects.get().dismissed_at is None


def test_receipts_refuse_a_big_form_batch(client: Client) -> None:
    client.force_login(make_user("reader"))

    response = client.post(reverse("alarms:dismiss"), {"ids": [str(i) for i in range(1, 202)]})

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # Over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): RequestDataTooBig.
        (json.dumps({"ids": [1], "pad": "x" * 3_000_000}), "application/json"),
        ("ids=1&" + "x=1&" * 800_000, "application/x-www-form-urlencoded"),
        # Over DATA_UPLOAD_MAX_NUMBER_FIELDS: TooManyFieldsSent.
        ("&".join(["ids=1"] * 1_500), "application/x-www-form-urlencoded"),
    ],
)
def test_receipts_refuse_huge_bodies(client: Client, body: str, content_type: str) -> None:
    client.force_login(make_user("reader"))

    response = client.post(reverse("alarms:dismiss"), body, content_type=content_type)

    assert response.status_code == 400
    assert not AlarmReceipt.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"ids"',
        b"null",
        b'{"ids": []}',
        b'{"ids": "1,2"}',
        b'{"ids": {"1": 1}}',
        b'{"ids": [1.5]}',
        b'{"ids": [true]}',
        b'{"ids": [-1]}',
        b'{"ids": [null]}',
        b'{"ids": ["1 "]}',
        b'{"ids": ["\\u00b2"]}',
        b'{"ids": [1e400]}',
        b'{"ids": [9999999999999999999]}',
        b'{"ids": [[1]]}',
        b'{"ids": [NaN]}',
    ],
)
def test_receipts_refuse_malformed_bodies_with_a_400(client: Client, body: bytes) -> None:
    client.force_login(make_user("reader"))

    response = post_ids(client, "dismiss", body)

    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert not AlarmReceipt.objects.exists()


def test_receipts_refuse_deeply_nested_json_with_a_400(client: Client) -> None:
    client.force_login(make_user("reader"))
    client.raise_request_exception = False

    response = post_ids(client, "dismiss", b'{"ids": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")

    assert response.status_code == 400


# -- event ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "-1-5",
        "1--5",
        "+1-5",
        " 1-5x",
        "99999999999999999999999-1",
        str(2**63) + "-1",
        "0-99999999999999999999",
        "1-" + str(253_402_300_800_000),  # one millisecond after 9999-12-31
        "\u0661-\u0662",
        "1-\u00b2",
        "\U0001f600-1",
        "1-1\0",
        "1" * 65,
    ],
)
def test_malformed_event_ids_are_refused(raw: str) -> None:
    assert events.parse_event_id(raw) is None


def test_the_largest_event_id_still_parses() -> None:
    raw = events.format_event_id(2**63 - 1, 253_402_300_799_999)
    assert events.parse_event_id(raw) == (2**63 - 1, 253_402_300_799_999)

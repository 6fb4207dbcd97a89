"""The admin's translation inputs take their direction from the text typed (``dir="auto"``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from alarms import api
from tests.factories import TEXT, make_user
from tests.helpers import ADD_URL, change_url

pytestmark = pytest.mark.django_db

ROW = re.compile(r"translations-(\d+|__prefix__)-(title|message|language_code)")


class Fields(HTMLParser):
    """The form fields of a page by name: (tag, attributes)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("input", "textarea", "select") and found.get("name"):
            self.fields[str(found["name"])] = (tag, found)


def rows(html: str) -> dict[str, dict[str, tuple[str, dict[str, str | None]]]]:
    """The inline's fields by row ("0", "1", ..., "__prefix__" for "Add another") and name."""
    found: dict[str, dict[str, tuple[str, dict[str, str | None]]]] = {}
    for name, field in Fields(html).fields.items():
        match = ROW.fullmatch(name)
        if match:
            found.setdefault(match[1], {})[match[2]] = field
    return found


@pytest.fixture
def staff_client(client: Client) -> Client:
    client.force_login(make_user("editor", is_staff=True, is_superuser=True))
    return client


def assert_text_inputs_read_either_way(page: Any) -> None:
    assert page.status_code == 200
    found = rows(page.content.decode())
    assert "__prefix__" in found and len(found) > 1
    for fields in found.values():
        title_tag, title = fields["title"]
        message_tag, message = fields["message"]
        assert (title_tag, message_tag) == ("input", "textarea")
        assert title["dir"] == "auto"
        assert message["dir"] == "auto"
        # The admin's own classes stay: only the direction is added.
        assert "vTextField" in str(title.get("class"))
        # Language codes are not text.
        assert "dir" not in fields["language_code"][1]


def test_add_page(staff_client: Client) -> None:
    assert_text_inputs_read_either_way(staff_client.get(ADD_URL))


def test_change_page(staff_client: Client) -> None:
    alarm = api.send_alarm(
        {code: {"title": title, "message": message} for code, (title, message) in TEXT.items()}
    )
    page = staff_client.get(change_url(alarm))
    assert_text_inputs_read_either_way(page)

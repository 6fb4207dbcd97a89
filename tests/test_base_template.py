"""The alarm centre in any project: ``ALARMS["BASE_TEMPLATE"]`` or the app's standalone page."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.template import TemplateDoesNotExist
from django.template.loader import get_template

from alarms import api
from tests.demo import demo_project  # noqa: F401

pytestmark = pytest.mark.django_db

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ar": {"title": "تدريب على الحريق", "message": "غادروا عبر الدرج الشرقي."},
}


def templates(*dirs: Path) -> list[dict[str, Any]]:
    """A project's TEMPLATES: the apps' templates, and only the given folders of its own."""
    return [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": list(dirs),
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ],
            },
        }
    ]


class Page(HTMLParser):
    """The start tags of a page, with their attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        """The tags named ``tag`` with these attributes (``data_x`` for ``data-x``)."""
        wanted = {key.replace("_", "-"): value for key, value in attrs.items()}
        return [
            found
            for name, found in self.tags
            if name == tag and all(found.get(key) == value for key, value in wanted.items())
        ]

    def first(self, tag: str) -> dict[str, str | None]:
        return self.all(tag)[0]


@pytest.fixture
def bare(settings: Any) -> Any:
    """A project without a base.html, and without ALARMS["BASE_TEMPLATE"] (the default)."""
    settings.TEMPLATES = templates()
    settings.ALARMS = {k: v for k, v in settings.ALARMS.items() if k != "BASE_TEMPLATE"}
    with pytest.raises(TemplateDoesNotExist):
        get_template("base.html")
    return settings


@pytest.fixture
def reader(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("reader", password="pw")


def used(response: Any) -> list[str]:
    return [t.name for t in response.templates]


def test_the_centre_works_without_a_base_html(bare: Any, client: Any, reader: Any) -> None:
    alarm = api.send_alarm(TEXTS, level="warning")
    client.force_login(reader)

    response = client.get("/alarms/")

    assert response.status_code == 200
    assert "alarms/standalone.html" in used(response)
    page = Page(response.content.decode())
    assert page.first("html") == {"lang": "en", "dir": "ltr"}
    assert "Alarm centre" in page.text
    assert page.all("li", data_alarms_item=str(alarm.pk))
    # The page is live: the toasts' script, and the badge with the unread alarm.
    assert page.first("script")["data-stream-url"] == "/alarms/stream/"
    badges = [a for name, a in page.tags if name == "a" and "data-alarms-badge" in a]
    assert [a["data-count"] for a in badges] == ["1"]
    assert page.all("main")


def test_the_standalone_page_follows_the_language(bare: Any, client: Any, reader: Any) -> None:
    api.send_alarm(TEXTS)
    client.force_login(reader)
    client.cookies["django_language"] = "ar"

    page = Page(client.get("/alarms/").content.decode())

    assert page.first("html") == {"lang": "ar", "dir": "rtl"}
    assert TEXTS["ar"]["title"] in page.text


def test_the_standalone_page_shows_messages(bare: Any, client: Any, reader: Any) -> None:
    alarm = api.send_alarm(TEXTS)
    client.force_login(reader)

    response = client.post("/alarms/", {"dismiss": alarm.pk}, follow=True)

    assert response.status_code == 200
    assert "Dismissed 1 alarm." in Page(response.content.decode()).text


def test_the_anonymous_reader_is_still_sent_to_sign_in(bare: Any, client: Any) -> None:
    assert client.get("/alarms/").status_code == 302


def test_a_configured_base_template_is_used(
    bare: Any, client: Any, reader: Any, tmp_path: Path
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "layout.html").write_text(
        '<!doctype html><html lang="en"><title>{% block title %}{% endblock %} | Site</title>'
        '<body><div id="site-layout">{% block content %}{% endblock %}</div></body></html>',
        encoding="utf-8",
    )
    bare.TEMPLATES = templates(tmp_path)
    bare.ALARMS = {**bare.ALARMS, "BASE_TEMPLATE": "site/layout.html"}
    api.send_alarm(TEXTS)
    client.force_login(reader)

    response = client.get("/alarms/")

    assert response.status_code == 200
    assert "site/layout.html" in used(response)
    assert "alarms/standalone.html" not in used(response)
    html = response.content.decode()
    assert "<title>Alarm centre | Site</title>" in html
    assert html.index('id="site-layout"') < html.index('class="alarms-centre"')


@pytest.mark.usefixtures("demo_project")
def test_the_demo_keeps_its_own_layout(client: Any, reader: Any) -> None:
    client.force_login(reader)

    response = client.get("/alarms/")

    assert response.status_code == 200
    assert "base.html" in used(response)
    assert "alarms/standalone.html" not in used(response)
    assert Page(response.content.decode()).all("header", **{"class": "site-header"})

"""Desktop notifications, server side: the level floor the tag sends, the centre's opt-in."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory

from alarms.models import Preferences
from alarms.templatetags.alarms import toasts_html


class Attributes(HTMLParser):
    """Each start tag's attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def first(self, tag: str, **wanted: str | None) -> dict[str, str | None]:
        return next(
            attrs
            for name, attrs in self.tags
            if name == tag and all(k in attrs and attrs[k] == v for k, v in wanted.items())
        )


def floor(request: object) -> str | None:
    html = Template("{% load alarms %}{% alarms_toasts %}").render(Context({"request": request}))
    return Attributes(html).first("script")["data-desktop-from"]


def build(**overrides: object) -> str:
    options: dict[str, object] = {
        "css_url": "/c.css",
        "js_url": "/a.js",
        "stream_url": "/s/",
        "seen_url": "/seen/",
        "dismiss_url": "/d/",
        "csrf_token": "t",
        "csrf_cookie": "csrftoken",
        "language": "en",
        "authenticated": True,
        "scope": "x",
        "words": {},
    }
    options.update(overrides)
    return toasts_html(**options)  # type: ignore[arg-type]


def test_the_floor_is_a_data_attribute_and_unknown_levels_are_critical():
    assert Attributes(build()).first("script")["data-desktop-from"] == "critical"
    assert Attributes(build(desktop_from="warning")).first("script")["data-desktop-from"] == (
        "warning"
    )
    for bad in ("", "loud", '"><script>'):
        assert Attributes(build(desktop_from=bad)).first("script")["data-desktop-from"] == (
            "critical"
        )


@pytest.mark.django_db
def test_the_tag_reads_the_readers_floor(
    rf: RequestFactory, django_user_model, django_assert_num_queries
):
    def request_of(user: object) -> object:
        # A request each time: the preferences are read once per request.
        request = rf.get("/")
        request.user = user
        return request

    with django_assert_num_queries(0):
        assert floor(request_of(AnonymousUser())) == "critical"

    reader = django_user_model.objects.create_user("reader")
    with django_assert_num_queries(1):
        assert floor(request_of(reader)) == "critical"  # no preferences saved
    Preferences.objects.create(user=reader, desktop_from="warning")
    assert floor(request_of(reader)) == "warning"


@pytest.mark.django_db
def test_the_centre_renders_the_opt_in_hidden_until_the_script_runs(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("reader"))
    html = client.get("/alarms/").content.decode()
    tags = Attributes(html)
    block = tags.first("section", **{"data-alarms-notify": None})
    # Without JavaScript nothing shows: the button could not do anything.
    assert "hidden" in block and block["data-state"] == "default"
    button = tags.first("button", **{"data-alarms-notify-button": None})
    assert button["type"] == "button" and button["aria-describedby"] == "alarms-notify-status"
    assert tags.first("p", id="alarms-notify-status")["role"] == "status"
    # Every state the script can show has its words in the page.
    states = {
        state
        for _name, attrs in tags.tags
        if "data-when" in attrs
        for state in (attrs["data-when"] or "").split()
    }
    assert states == {"default", "dismissed", "granted", "denied", "unsupported", "insecure"}
    # Near the top: before the list of unread alarms.
    assert html.index("data-alarms-notify") < html.index('id="alarms-unread"')

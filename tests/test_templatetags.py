from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import translation

from alarms import api
from alarms.templatetags.alarms import badge_html, toasts_html, user_scope

WORDS = {"region": "Alarms", "dismiss": "Dismiss", "more": "+%(count)s more"}


class Tags(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def first(self, tag: str) -> dict[str, str | None]:
        return next(attrs for name, attrs in self.tags if name == tag)


def build(**overrides: object) -> str:
    options: dict[str, object] = {
        "css_url": "/static/alarms/alarms.css",
        "js_url": "/static/alarms/alarms.js",
        "stream_url": "/alarms/stream/",
        "seen_url": "/alarms/seen/",
        "dismiss_url": "/alarms/dismiss/",
        "csrf_token": "tok",
        "csrf_cookie": "csrftoken",
        "language": "ko",
        "authenticated": True,
        "scope": "abc",
        "words": WORDS,
    }
    options.update(overrides)
    return toasts_html(**options)  # type: ignore[arg-type]


def test_toasts_html_configures_the_script_by_data_attributes():
    tags = Tags(build())
    script = tags.first("script")
    assert script["src"] == "/static/alarms/alarms.js"
    assert "defer" in script
    assert script["data-stream-url"] == "/alarms/stream/"
    assert script["data-seen-url"] == "/alarms/seen/"
    assert script["data-dismiss-url"] == "/alarms/dismiss/"
    assert script["data-csrf-token"] == "tok"
    assert script["data-language"] == "ko"
    assert script["data-authenticated"] == "true"
    assert script["data-auto-hide"] == "6000"
    assert script["data-max-visible"] == "3"
    assert json.loads(script["data-labels"] or "") == WORDS
    assert tags.first("link")["href"] == "/static/alarms/alarms.css"
    region = tags.first("div")
    assert region["id"] == script["data-region"] == "alarms-region"
    assert "nonce" not in script


def test_toasts_html_escapes_and_carries_the_nonce():
    html = build(csrf_token='"><script>x</script>', nonce="n0nce", authenticated=False)
    assert "<script>x" not in html
    tags = Tags(html)
    assert tags.first("script")["data-csrf-token"] == '"><script>x</script>'
    assert tags.first("script")["nonce"] == "n0nce"
    assert tags.first("link")["nonce"] == "n0nce"
    assert tags.first("script")["data-authenticated"] == "false"


def test_badge_html():
    tags = Tags(badge_html(url="/alarms/", ids=[3, 7], label="Unread alarms"))
    badge = tags.first("a")
    assert badge["href"] == "/alarms/"
    assert badge["data-ids"] == "3,7"
    assert badge["data-count"] == "2"
    assert "alarms-badge--empty" not in (badge["class"] or "")
    empty = Tags(badge_html(url="/alarms/", ids=[], label="x")).first("a")
    assert "alarms-badge--empty" in (empty["class"] or "")
    assert ">99+<" in badge_html(url="/", ids=range(150), label="x")


def test_user_scope_is_stable_and_opaque(django_user_model):
    user = django_user_model(pk=42, username="u")
    assert user_scope(AnonymousUser()) == "anon"
    assert user_scope(user) == user_scope(user)
    assert "42" not in user_scope(user)


def render(template: str, request: object) -> str:
    return Template("{% load alarms %}" + template).render(Context({"request": request}))


@pytest.mark.django_db
def test_tags_in_a_template(rf: RequestFactory, django_user_model):
    request = rf.get("/")
    request.user = AnonymousUser()
    request.csp_nonce = "abc123"
    with translation.override("ja"):
        html = render("{% alarms_toasts auto_hide=2500 max_visible=5 %}", request)
    script = Tags(html).first("script")
    assert script["data-language"] == "ja"
    assert script["data-auto-hide"] == "2500"
    assert script["data-max-visible"] == "5"
    assert script["data-scope"] == "anon"
    assert script["nonce"] == "abc123"
    assert script["data-csrf-token"]
    assert render("{% alarms_badge %}", request) == ""

    user = django_user_model.objects.create_user("reader")
    alarm = api.send_alarm({"en": {"title": "t", "message": "m"}})
    api.send_alarm({"en": {"title": "t", "message": "m"}}, audience="staff")
    request.user = user
    badge = Tags(render("{% alarms_badge %}", request)).first("a")
    assert badge["data-ids"] == str(alarm.pk)
    assert badge["href"] == "/alarms/"
    api.dismiss(user, [alarm.pk])
    assert Tags(render("{% alarms_badge %}", request)).first("a")["data-count"] == "0"


def test_toasts_without_request_render_nothing():
    assert Template("{% load alarms %}{% alarms_toasts %}").render(Context({})) == ""

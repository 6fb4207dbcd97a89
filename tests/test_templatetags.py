from __future__ import annotations

import gettext
import json
from html.parser import HTMLParser
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import translation
from django.utils.functional import SimpleLazyObject, empty
from django.utils.translation import ngettext

import alarms
from alarms import api
from alarms.templatetags.alarms import badge_html, labels, plural_rule, toasts_html, user_scope

LOCALE = Path(alarms.__file__).resolve().parent / "locale"

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
        "payloads_url": "/alarms/payloads/",
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
    # A module script: deferred by itself, and able to import the client's modules.
    assert script["type"] == "module"
    assert "defer" not in script
    assert script["data-stream-url"] == "/alarms/stream/"
    assert script["data-seen-url"] == "/alarms/seen/"
    assert script["data-dismiss-url"] == "/alarms/dismiss/"
    assert script["data-payloads-url"] == "/alarms/payloads/"
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
    assert script["data-payloads-url"] == "/alarms/payloads/"
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


# -- plural forms ---------------------------------------------------------------------

ARABIC_MORE = [
    "لا تنبيهات أخرى",
    "+تنبيه واحد آخر",
    "+تنبيهان آخران",
    "+%(count)s تنبيهات أخرى",
    "+%(count)s تنبيهًا آخر",
    "+%(count)s تنبيه آخر",
]


def client_form(forms: list[str | None], rule: str, count: int) -> str:
    """What alarms.js shows for ``count``: the form the rule picks, else the last one."""
    form = forms[gettext.c2py(rule)(count)]
    return form if form else forms[-1]  # type: ignore[return-value]


def test_plural_forms_come_from_the_apps_catalogue():
    catalogue = gettext.translation("django", LOCALE, ["ar"])
    with translation.override("ar"):
        words = labels()
        rule = plural_rule()[0]
    assert words["more"] == ARABIC_MORE
    assert words["more"] == [
        catalogue.ngettext("+%(count)s more", "+%(count)s more", n) for n in (0, 1, 2, 3, 11, 100)
    ]
    assert [gettext.c2py(rule)(n) for n in (0, 1, 2, 3, 11, 100)] == [0, 1, 2, 3, 4, 5]
    with translation.override("ko"):
        assert labels()["more"] == ["+%(count)s개 더"]
        assert plural_rule()[0] == "0"
    with translation.override("en"):
        assert labels()["more"] == ["+%(count)s more", "+%(count)s more"]
        assert plural_rule()[0] == "n != 1"


@pytest.mark.parametrize("code", [code for code, _name in settings.LANGUAGES] + ["fr", "ru", "cs"])
def test_the_client_picks_the_form_django_picks(code: str):
    with translation.override(code):
        forms = labels()["more"]
        rule = plural_rule()[0]
        for count in range(1, 1000):
            expected = ngettext("+%(count)s more", "+%(count)s more", count)
            assert client_form(forms, rule, count) == expected, count


@pytest.mark.django_db
def test_the_tag_sends_the_rule_and_the_forms(rf: RequestFactory):
    request = rf.get("/")
    request.user = AnonymousUser()
    with translation.override("ar"):
        script = Tags(render("{% alarms_toasts %}", request)).first("script")
    rule = gettext.c2py(script["data-plural-rule"] or "")
    assert [rule(n) for n in (0, 1, 2, 3, 11, 100, 103, 111)] == [0, 1, 2, 3, 4, 5, 3, 4]
    assert json.loads(script["data-labels"] or "")["more"] == ARABIC_MORE


def test_toasts_html_defaults_to_the_germanic_rule():
    assert Tags(build()).first("script")["data-plural-rule"] == "n != 1"


# -- the host's CSP nonce -------------------------------------------------------------


class LazyNonce(SimpleLazyObject):
    """Like Django 6's LazyNonce and django-csp's request.csp_nonce: false until read."""

    def __bool__(self) -> bool:
        return self._wrapped is not empty


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["django-csp", "context"])
def test_toasts_carry_a_lazy_nonce(rf: RequestFactory, where: str):
    request = rf.get("/")
    request.user = AnonymousUser()
    nonce = LazyNonce(lambda: "lazy-n0nce")
    assert not nonce
    context = {"request": request}
    if where == "django-csp":
        request.csp_nonce = nonce
    else:
        context["csp_nonce"] = nonce  # Django 6's csp context processor
    html = Template("{% load alarms %}{% alarms_toasts %}").render(Context(context))
    tags = Tags(html)
    assert tags.first("script")["nonce"] == tags.first("link")["nonce"] == "lazy-n0nce"
    assert nonce  # read, so the middleware puts it in the header


@pytest.mark.django_db
@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django 6's own CSP middleware")
def test_toasts_carry_django_6s_nonce(rf: RequestFactory):
    from django.middleware.csp import ContentSecurityPolicyMiddleware

    request = rf.get("/")
    request.user = AnonymousUser()
    ContentSecurityPolicyMiddleware(lambda r: None).process_request(request)
    html = render("{% alarms_toasts %}", request)
    nonce = Tags(html).first("script")["nonce"]
    assert nonce and nonce == str(request._csp_nonce)

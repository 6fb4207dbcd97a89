from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.http import HttpRequest
from django.test import Client, RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.module_loading import import_string

from alarms import api, preferences
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.connect import connect
from alarms.broker.loads import Load, load_batch
from alarms.broker.memory import MemoryBroker
from alarms.broker.reads import ConnectState
from alarms.broker.sessions import Login
from alarms.forms import PreferencesForm
from alarms.models import Alarm, AlarmChange, Preferences
from alarms.views.stream import requested_language
from tests.helpers import en, run_broker, until
from tests.sse import Event, parse
from tests.test_broker import en_ko


@pytest.fixture(autouse=True)
def _language_kept() -> Iterator[None]:
    """The requests here activate other languages in this thread: not for the next test."""
    with translation.override(translation.get_language()):
        yield


@pytest.mark.parametrize(
    ("level", "floor", "muted"),
    [
        ("info", "", False),
        ("info", "warning", True),
        ("success", "warning", True),
        ("warning", "warning", False),
        ("error", "critical", True),
        ("critical", "critical", False),
        ("info", "nonsense", False),
    ],
)
def test_is_muted(level: str, floor: str, muted: bool) -> None:
    assert preferences.is_muted(level, floor) is muted


@pytest.mark.django_db
def test_stored_language_follows_the_browser_until_chosen(django_user_model) -> None:
    from django.contrib.auth.models import AnonymousUser

    user = django_user_model.objects.create_user("reader")
    assert preferences.chosen_language(preferences.for_user(AnonymousUser())) is None
    assert preferences.chosen_language(preferences.for_user(user)) is None
    Preferences.objects.create(user=user, language="")
    assert preferences.chosen_language(preferences.for_user(user)) is None
    Preferences.objects.filter(user=user).update(language="ko")
    assert preferences.chosen_language(preferences.for_user(user)) == "ko"


# -- the service and its journal row ---------------------------------------------------


def _prefs_rows(user: Any) -> list[tuple[int, str, int | None]]:
    return list(AlarmChange.objects.filter(kind="prefs").values_list("alarm_id", "kind", "user_id"))


@pytest.mark.django_db
def test_a_change_writes_one_prefs_row_for_the_user(django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    preferences.update(user, language="ko")
    assert _prefs_rows(user) == [(0, "prefs", user.pk)]
    preferences.update(user, language="ko")  # no change, no row
    preferences.update(user, announce=False, time_zone="Asia/Seoul")  # detected: no row
    assert len(_prefs_rows(user)) == 1
    preferences.update(user, mute_below="warning")
    assert len(_prefs_rows(user)) == 2
    stored = Preferences.objects.get(user=user)
    assert (stored.language, stored.time_zone, stored.mute_below) == ("ko", "Asia/Seoul", "warning")
    assert str(AlarmChange.Kind.PREFS.label) == "a user's preferences changed"


@pytest.mark.django_db
def test_update_refuses_what_is_no_preference(django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    with pytest.raises(TypeError):
        preferences.update(user, colour="red")
    assert not Preferences.objects.exists()


def test_muted_levels_agree_with_is_muted() -> None:
    for floor in ("", *preferences.LEVEL_ORDER):
        for level in preferences.LEVEL_ORDER:
            assert (level in preferences.muted_levels(floor)) is preferences.is_muted(level, floor)
    assert "critical" not in preferences.muted_levels("critical")


# -- the form and the page ---------------------------------------------------------------


@pytest.mark.django_db
def test_form_refuses_an_unknown_time_zone_and_ties_the_error_to_its_input(
    django_user_model,
) -> None:
    user = django_user_model.objects.create_user("reader")
    form = PreferencesForm(
        {"language": "", "time_zone": "Mars/Olympus", "mute_below": "", "desktop_from": "error"},
        instance=Preferences(user=user),
    )
    assert not form.is_valid()
    assert list(form.errors) == ["time_zone"]
    html = str(form["time_zone"])
    assert 'aria-invalid="true"' in html
    assert 'aria-describedby="id_time_zone_helptext id_time_zone_error"' in html
    assert 'aria-describedby="id_language_helptext"' in str(form["language"])


@pytest.mark.django_db
def test_page_sends_anonymous_visitors_to_sign_in(client) -> None:
    response = client.get(reverse("alarms:preferences"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_page_saves_without_javascript_and_shows_errors(client, django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    client.force_login(user)
    url = reverse("alarms:preferences")
    page = client.get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert b'<label for="id_mute_below">' in page.content
    bad = client.post(
        url,
        {"language": "xx", "time_zone": "Nowhere/Else", "mute_below": "", "desktop_from": "error"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert bad.status_code == 400
    assert b'id="id_time_zone_error"' in bad.content
    assert b'id="id_language_error"' in bad.content
    assert not Preferences.objects.exists()  # nothing half-saved
    good = client.post(
        url,
        {
            "language": "ko",
            "time_zone": "Asia/Seoul",
            "mute_below": "warning",
            "desktop_from": "error",
        },
    )
    assert good.status_code == 302
    stored = Preferences.objects.get(user=user)
    assert (stored.language, stored.time_zone, stored.mute_below, stored.desktop_from) == (
        "ko",
        "Asia/Seoul",
        "warning",
        "error",
    )
    assert good.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert _prefs_rows(user) == [(0, "prefs", user.pk)]
    # The next page is in the stored language, whatever the browser asks for.
    again = client.get(url, HTTP_ACCEPT_LANGUAGE="en")
    assert b'lang="ko"' in again.content
    assert again["Content-Language"] == "ko"


@pytest.mark.django_db
def test_the_centre_links_the_page_and_marks_muted_alarms(client, django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    client.force_login(user)
    api.send_alarm(en("Quiet"), level="info", audience="authenticated")
    api.send_alarm(en("Loud"), level="error", audience="authenticated")
    preferences.update(user, mute_below="warning")
    page = client.get(reverse("alarms:centre"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert reverse("alarms:preferences") in page
    # Both listed; only the muted one marked.
    assert "Quiet" in page and "Loud" in page
    quiet = page[page.index("Quiet") - 600 : page.index("Quiet")]
    loud = page[page.index("Loud") - 600 : page.index("Loud")]
    assert "(muted)" in quiet.split("<li")[-1]
    assert "(muted)" not in loud.split("<li")[-1]


# -- the middleware -----------------------------------------------------------------------


@pytest.mark.django_db
def test_middleware_activates_a_signed_in_users_language_and_zone(
    client, django_user_model
) -> None:
    user = django_user_model.objects.create_user("reader")
    alarm = api.send_alarm(en("Timed"), audience="authenticated")
    Alarm.objects.filter(pk=alarm.pk).update(publish_at=datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    client.force_login(user)
    url = reverse("alarms:centre")
    plain = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'lang="en"' in plain and "12:30 a.m." in plain  # UTC, the site's zone
    preferences.update(user, time_zone="Asia/Seoul", language="ja")
    zoned = client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'lang="ja"' in zoned
    assert "09:30" in zoned or "9:30" in zoned  # Seoul is UTC+9
    # The zone is the request's only: the next (anonymous) request has the site's.
    client.logout()
    assert timezone.get_current_timezone_name() == settings.TIME_ZONE
    anonymous = client.get(reverse("alarms:payloads") + "?ids=1", HTTP_ACCEPT_LANGUAGE="ko")
    assert anonymous["Content-Language"] == "ko"  # Accept-Language, as before


@pytest.mark.django_db
def test_the_admin_reads_dates_in_the_operators_zone(client, django_user_model) -> None:
    operator = django_user_model.objects.create_superuser("op", password="pw")
    preferences.update(operator, time_zone="Asia/Seoul")
    client.force_login(operator)
    response = client.post(
        reverse("admin:alarms_alarm_add"),
        {
            "level": "info",
            "audience": "authenticated",
            "url": "",
            "publish_at_0": "2026-03-01",
            "publish_at_1": "09:00:00",
            "translations-TOTAL_FORMS": "1",
            "translations-INITIAL_FORMS": "0",
            "translations-MIN_NUM_FORMS": "0",
            "translations-MAX_NUM_FORMS": "1000",
            "translations-0-language_code": "en",
            "translations-0-title": "Zoned",
            "translations-0-message": "m",
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = Alarm.objects.get(translations__title="Zoned")
    assert saved.publish_at == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 09:00 in Seoul


# -- the language menu ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_language_menu_stores_a_signed_in_users_choice(client, django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    anonymous = client.post(reverse("set_language"), {"language": "ar", "next": "/"})
    assert anonymous.status_code == 302
    assert anonymous.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ar"
    assert not Preferences.objects.exists()
    client.force_login(user)
    client.post(reverse("set_language"), {"language": "xx", "next": "/"})
    assert (
        preferences.chosen_language(preferences.for_user(user)) is None
    )  # not a language of the site
    client.post(reverse("set_language"), {"language": "ko", "next": "/"})
    assert preferences.chosen_language(preferences.for_user(user)) == "ko"
    assert _prefs_rows(user) == [(0, "prefs", user.pk)]


# -- the detected time zone ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_detected_zone_is_stored_once(client, django_user_model) -> None:
    url = reverse("alarms:preferences_time_zone")
    body = {"time_zone": "Asia/Seoul"}
    assert client.post(url, body, content_type="application/json").status_code == 403
    user = django_user_model.objects.create_user("reader")
    client.force_login(user)
    bad = client.post(url, {"time_zone": "Asia/Atlantis"}, content_type="application/json")
    assert bad.status_code == 400
    assert client.post(url, "{", content_type="application/json").status_code == 400
    first = client.post(url, body, content_type="application/json")
    assert first.json() == {"time_zone": "Asia/Seoul", "stored": True}
    second = client.post(url, {"time_zone": "Europe/Paris"}, content_type="application/json")
    assert second.json() == {"time_zone": "Asia/Seoul", "stored": False}
    assert Preferences.objects.get(user=user).time_zone == "Asia/Seoul"
    assert _prefs_rows(user) == []  # open pages need not reload for it


@pytest.mark.django_db
def test_the_page_asks_for_the_zone_only_while_none_is_stored(client, django_user_model) -> None:
    user = django_user_model.objects.create_user("reader")
    client.force_login(user)
    url = reverse("alarms:preferences_time_zone")
    page = client.get(reverse("alarms:centre")).content.decode()
    assert f'data-zone-url="{url}"' in page and 'data-time-zone=""' in page
    preferences.update(user, time_zone="Asia/Seoul", language="ko")
    page = client.get(reverse("alarms:centre")).content.decode()
    assert 'data-zone-url=""' in page
    assert 'data-time-zone="Asia/Seoul"' in page and 'data-stored-language="ko"' in page


# -- the stream's language and the mute floor, in the broker (both databases) ----------------

BROKERS = [
    pytest.param("alarms.broker.memory.MemoryBroker", id="memory"),
    pytest.param(
        "alarms.broker.postgres.PostgresBroker", id="postgres", marks=pytest.mark.postgres
    ),
]


@pytest.fixture(params=BROKERS)
def run(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Callable[..., None]]:
    """Run ``test(broker)`` with a started broker of each kind on a fresh event loop."""
    path = request.param
    # Polling every minute: deliveries within seconds are the in-process wake-up's.
    config = {"BROKER": path, "POLL_INTERVAL": 60, "SHUTDOWN_GRACE": 0}

    def runner(test: Callable[[BaseBroker], Coroutine[Any, Any, None]]) -> None:
        run_broker(import_string(path)(), test)

    with override_settings(ALARMS=config):
        yield runner


def stream_request(user: Any = None, query: str = "") -> HttpRequest:
    """A stream request, signed in as ``user`` by a real session."""
    request = RequestFactory().get(f"/alarms/stream/{query}")
    key = None
    if user is not None:
        client = Client()
        client.force_login(user)
        key = client.cookies[settings.SESSION_COOKIE_NAME].value
    request.session = SessionStore(key)
    return request


def events_of(chunks: list[bytes]) -> list[Event]:
    return [e for chunk in chunks for e in parse(chunk.decode())]


async def read_until(sub: Any, done: Callable[[list[Event]], bool]) -> list[Event]:
    """A stream's events up to the one ``done`` waits for (no quiet window)."""
    got: list[Event] = []
    while not done(got):
        chunks = await sub.next(5)
        assert chunks is not None, f"nothing more came after {got}"
        got += events_of(chunks)
    return got


def titles(events: list[Event]) -> list[str]:
    return [e.json()["title"] for e in events if e.event == "alarm"]


def test_the_stream_asks_for_lang_first() -> None:
    with translation.override("en"):
        assert requested_language(RequestFactory().get("/alarms/stream/?lang=ko")) == ("ko", True)
        assert requested_language(RequestFactory().get("/alarms/stream/?lang=xx")) == ("en", False)


def test_the_stream_speaks_lang_then_the_stored_language_then_the_browsers(
    run, django_user_model
) -> None:
    chosen = django_user_model.objects.create_user("chosen")
    other = django_user_model.objects.create_user("other")
    Preferences.objects.create(user=chosen, language="ko")

    requests = {user: stream_request(user) for user in (chosen, other, None)}

    async def test(broker: BaseBroker) -> None:
        async def language(user: Any, asked: str, lang: bool) -> str:
            opened = await connect(broker, requests[user], asked, None, chosen=lang)
            broker.unsubscribe(opened.sub)
            return opened.state.viewer.language

        assert await language(chosen, "ja", False) == "ko"  # stored, over the browser's
        assert await language(chosen, "ja", True) == "ja"  # ?lang= wins for one stream
        assert await language(other, "ja", False) == "ja"  # nothing stored: as before
        assert await language(None, "ar", False) == "ar"  # anonymous: as before

    run(test)


def test_the_broker_never_sends_a_muted_alarm(run, django_user_model) -> None:
    user = django_user_model.objects.create_user("muting")
    Preferences.objects.create(user=user, mute_below="warning")
    api.send_alarm(en("Info before"), level="info", audience="authenticated")
    api.send_alarm(en("Warning before"), level="warning", audience="authenticated")
    api.send_alarm(en("Critical before"), level="critical", audience="authenticated")

    first, second = stream_request(user), stream_request(user)

    async def test(broker: BaseBroker) -> None:
        opened = await connect(broker, first, "en", None)
        assert opened.state.viewer.muted == {"info", "success"}
        assert titles(events_of(opened.first)) == ["Warning before", "Critical before"]
        since = (broker.head, int(time.time() * 1000))
        await sync_to_async(api.send_alarm)(en("Info live"), level="info", audience="everyone")
        await sync_to_async(api.send_alarm)(en("Error live"), level="error", audience="everyone")
        # Had the info alarm been sent, it would come first (the journal's order).
        got = await read_until(opened.sub, lambda got: "Error live" in titles(got))
        assert titles(got) == ["Error live"]
        # A resume does not replay it either.
        resumed = await connect(broker, second, "en", since)
        assert resumed.resumed
        assert titles(events_of(resumed.first)) == ["Error live"]

    run(test)


def test_a_muted_alarm_that_ends_is_retracted_for_the_badge(run, django_user_model) -> None:
    """A muted alarm is never toasted, but the page's badge counts it (it is unread
    in the centre): its withdrawal must still reach the stream, or the badge keeps it."""
    user = django_user_model.objects.create_user("muting")
    Preferences.objects.create(user=user, mute_below="warning")
    quiet = api.send_alarm(en("Quiet"), level="info", audience="authenticated")
    request = stream_request(user)

    async def test(broker: BaseBroker) -> None:
        opened = await connect(broker, request, "en", None)
        assert titles(events_of(opened.first)) == []
        await sync_to_async(api.withdraw)(Alarm.objects.filter(pk=quiet.pk))
        await sync_to_async(api.send_alarm)(en("Marker"), level="error", audience="everyone")
        got = await read_until(opened.sub, lambda got: "Marker" in titles(got))
        assert [(e.event, e.json()["id"]) for e in got if e.event == "retract"] == [
            ("retract", quiet.pk)
        ]

    run(test)


def test_a_prefs_row_ends_the_users_streams_and_they_reconnect_with_the_new_choice(
    run, django_user_model
) -> None:
    user = django_user_model.objects.create_user("switching")
    bystander = django_user_model.objects.create_user("bystander")
    api.send_alarm(en_ko("Quiet"), level="info", audience="authenticated")

    requests = [stream_request(u) for u in (user, user, bystander, user)]

    async def test(broker: BaseBroker) -> None:
        phone = await connect(broker, requests[0], "en", None)
        laptop = await connect(broker, requests[1], "en", None)
        other = await connect(broker, requests[2], "en", None)
        assert titles(events_of(phone.first)) == ["Quiet"]
        await sync_to_async(preferences.update)(user, language="ko", mute_below="success")
        for sub in (phone.sub, laptop.sub):
            got = await read_until(sub, lambda got: bool(got))
            assert [(e.event, e.json()) for e in got] == [
                (
                    "prefs",
                    {
                        "language": "ko",
                        "time_zone": "",
                        "mute_below": "success",
                        "desktop_from": "critical",
                    },
                )
            ]
            assert sub.closed == "preferences"
        marker = await sync_to_async(api.send_alarm)(
            en("Marker"), level="success", audience="everyone"
        )
        got = await read_until(other.sub, lambda got: bool(titles(got)))
        assert [e.json()["id"] for e in got] == [marker.pk] and other.sub.closed is None
        assert broker.counters.closed_preferences == 0  # counted as the view ends them
        again = await connect(broker, requests[3], "en", None)
        assert again.state.viewer.language == "ko"
        assert titles(events_of(again.first)) == ["Marker"]  # "Quiet" is muted now

    run(test)


@pytest.mark.django_db
def test_the_floor_and_language_come_with_the_users_query(django_user_model) -> None:
    """No query of its own per connect: the user query joins the preferences."""
    users = [django_user_model.objects.create_user(f"u{i}") for i in range(3)]
    Preferences.objects.create(user=users[0], language="ko", mute_below="error")
    Preferences.objects.create(user=users[1], mute_below="warning")
    loads = [Load(Login(session=stream_request(u).session), "en") for u in users]
    for load in loads:
        load.login.request = None  # as an access re-check reads them: no side effects

    with CaptureQueriesContext(connection) as queries:
        results = load_batch(MemoryBroker().reads, loads, [], 0)

    viewers = [r[0].viewer for r in results if not isinstance(r, Exception)]
    assert [(v.language, v.muted) for v in viewers] == [
        ("ko", {"info", "success", "warning"}),
        ("en", {"info", "success"}),
        ("en", frozenset()),
    ]
    table = Preferences._meta.db_table
    sqls = [q["sql"] for q in queries.captured_queries]
    assert not [s for s in sqls if s.split(" FROM ")[1].startswith(f'"{table}"')]
    assert len([s for s in sqls if f'JOIN "{table}"' in s]) == 1


def test_a_stream_loaded_before_a_prefs_row_is_ended_too(run, django_user_model) -> None:
    """A connect whose user was loaded before the row was read, and that subscribes after."""
    user = django_user_model.objects.create_user("racing")

    async def test(broker: BaseBroker) -> None:
        loaded_at = broker.head
        await sync_to_async(preferences.update)(user, language="ko")
        await until(lambda: broker.head > loaded_at, 10)
        state = ConnectState(Viewer(user_id=user.pk), set(), set(), head=loaded_at)
        sub = broker.subscribe(state)
        got = await read_until(sub, bool)
        assert [(e.event, e.json()["language"]) for e in got] == [("prefs", "ko")]
        assert sub.closed == "preferences"
        fresh = broker.subscribe(
            ConnectState(Viewer(user_id=user.pk), set(), set(), head=broker.head)
        )
        assert fresh.closed is None

    run(test)

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Max
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alarms import api
from alarms.models import Alarm, AlarmChange, AlarmReceipt, Preferences
from tests.factories import make_alarm

pytestmark = pytest.mark.django_db

TEXTS = {
    "en": {"title": "Fire drill", "message": "Leave by the east stairs."},
    "ko": {"title": "소방 훈련", "message": "동쪽 계단으로 나가십시오."},
    "ar": {"title": "تدريب على الحريق", "message": "غادروا عبر الدرج الشرقي."},
}


@pytest.fixture
def reader(django_user_model):
    return django_user_model.objects.create_user("reader", password="pw")


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/alarms/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_unread_first_then_earlier_in_the_readers_language(client, reader):
    live = api.send_alarm(TEXTS, level="warning")
    dismissed = api.send_alarm(TEXTS, level="info")
    api.dismiss(reader, [dismissed.pk])
    past = timezone.now() - timedelta(hours=2)
    expired = api.send_alarm(
        TEXTS, publish_at=past, expires_at=past + timedelta(hours=1), level="error"
    )
    withdrawn = api.send_alarm(TEXTS)
    api.withdraw([withdrawn])
    others = api.send_alarm(TEXTS, audience="staff")
    client.force_login(reader)
    client.cookies["django_language"] = "ar"

    response = client.get("/alarms/")
    assert response.status_code == 200
    unread = response.context["unread"]
    earlier = response.context["earlier"]
    assert [e.id for e in unread] == [live.pk]
    assert unread[0].title == TEXTS["ar"]["title"]
    assert unread[0].dir == "rtl" and unread[0].language == "ar"
    assert {e.id: e.state for e in earlier} == {dismissed.pk: "dismissed", expired.pk: "expired"}
    html = response.content.decode()
    assert 'dir="rtl"' in html
    assert str(others.pk) not in [str(e.id) for e in unread + earlier]
    assert html.index(f'data-alarms-item="{live.pk}"') < html.index(
        f'data-alarms-item="{dismissed.pk}"'
    )


def test_alarm_text_is_escaped(client, reader):
    api.send_alarm({"en": {"title": "<b>x</b>", "message": "<img src=x onerror=alert(1)>"}})
    client.force_login(reader)
    html = client.get("/alarms/").content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_dismiss_one_and_all(client, reader):
    first = api.send_alarm(TEXTS)
    api.send_alarm(TEXTS)
    api.send_alarm(TEXTS)
    client.force_login(reader)
    response = client.post("/alarms/", {"dismiss": first.pk})
    assert response.status_code == 302
    assert AlarmReceipt.objects.get(user=reader, alarm=first).dismissed_at
    response = client.post("/alarms/", {"dismiss_all": "1"}, follow=True)
    assert [e.id for e in response.context["unread"]] == []
    assert AlarmReceipt.objects.filter(user=reader, dismissed_at__isnull=False).count() == 3
    assert "Dismissed 2 alarms." in response.content.decode()
    assert client.post("/alarms/", {"dismiss": "nope"}).status_code == 400


def test_dismiss_needs_csrf(reader):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    assert client.post("/alarms/", {"dismiss_all": "1"}).status_code == 403


# -- paging, search, level, mark all as read --------------------------------------------


def many(count: int, **fields):
    """``count`` live alarms for everyone signed in, the last made the newest."""
    start = timezone.now() - timedelta(hours=1)
    return [
        make_alarm(("en", "ko"), publish_at=start + timedelta(seconds=i), **fields)
        for i in range(count)
    ]


def test_pages_hold_the_chosen_size_and_mark_the_current_one(client, reader):
    made = many(27)
    client.force_login(reader)

    first = client.get("/alarms/")
    assert [e.id for e in first.context["unread"]] == [a.pk for a in reversed(made)][:25]
    assert first.context["unread_count"] == 27
    html = first.content.decode()
    assert '<a href="?page=2">2</a>' in html
    assert '<a href="?" aria-current="page">1</a>' in html
    second = client.get("/alarms/", {"page": 2})
    assert [e.id for e in second.context["unread"]] == [made[1].pk, made[0].pk]
    assert 'aria-current="page">2</a>' in second.content.decode()
    small = client.get("/alarms/", {"size": 10, "page": 3})
    assert len(small.context["unread"]) == 7
    assert '<a href="?size=10&amp;page=2" rel="prev">' in small.content.decode()


def test_a_page_size_out_of_bounds_is_refused_with_the_error_shown(client, reader):
    many(3)
    client.force_login(reader)
    response = client.get("/alarms/", {"size": 100000, "level": "loud"})
    assert response.status_code == 400
    assert response.context["page_obj"].paginator.per_page == 25
    assert len(response.context["unread"]) == 3  # the bad filters are left out
    assert response.content.decode().count('role="alert"') == 2


def test_search_in_the_language_shown_and_filter_by_level(client, reader):
    drill = api.send_alarm(TEXTS, level="warning")
    english = api.send_alarm(
        {"en": {"title": "Disk full", "message": "On host db1."}}, level="error"
    )
    client.force_login(reader)
    client.cookies["django_language"] = "ko"

    def listed(**query):
        response = client.get("/alarms/", query)
        return [e.id for e in response.context["unread"] + response.context["earlier"]]

    assert listed(q="훈련") == [drill.pk]
    assert listed(q="fire") == []  # shown in Korean: its English text is not searched
    assert listed(q="DB1") == [english.pk]  # shown in English: no Korean text
    assert listed(level="error") == [english.pk]
    assert listed(level="warning", q="db1") == []
    html = client.get("/alarms/", {"q": "no such words"}).content.decode()
    assert 'value="no such words"' in html
    assert '<label for="alarms-search">' in html and 'id="alarms-search"' in html


def test_the_stored_language_shows_the_texts(client, reader):
    api.send_alarm(TEXTS)
    Preferences.objects.create(user=reader, language="ar")
    client.force_login(reader)
    [entry] = client.get("/alarms/").context["unread"]
    assert (entry.language, entry.title) == ("ar", TEXTS["ar"]["title"])


def test_mark_all_as_read_takes_what_the_filters_select(client, reader):
    warnings = many(3, level="warning")
    infos = many(2, level="info")
    client.force_login(reader)
    head = AlarmChange.objects.aggregate(m=Max("id"))["m"] or 0

    response = client.post("/alarms/?level=warning", {"dismiss_all": "1"})
    assert response.status_code == 302 and response["Location"] == "/alarms/?level=warning"
    dismissed = set(
        AlarmReceipt.objects.filter(user=reader, dismissed_at__isnull=False).values_list(
            "alarm_id", flat=True
        )
    )
    assert dismissed == {a.pk for a in warnings}
    # Through the journal: each open tab of the reader closes them and lowers its badge.
    journaled = AlarmChange.objects.filter(id__gt=head, kind="dismiss", user_id=reader.pk)
    assert set(journaled.values_list("alarm_id", flat=True)) == dismissed

    page = client.post("/alarms/", {"dismiss_all": "1"}, follow=True)
    assert "Dismissed 2 alarms." in page.content.decode()
    assert page.context["unread_count"] == 0
    assert AlarmReceipt.objects.filter(user=reader, dismissed_at__isnull=False).count() == 5
    assert {a.pk for a in infos} <= {e.id for e in page.context["earlier"]}


def test_mark_all_as_read_costs_the_same_queries_for_3_alarms_or_40(client, reader):
    client.force_login(reader)

    def cost(count: int) -> int:
        made = many(count)
        api.mark_seen(reader, [a.pk for a in made])  # existing receipts are updated
        with CaptureQueriesContext(connection) as queries:
            client.post("/alarms/", {"dismiss_all": "1"})
        assert not Alarm.objects.for_user(reader).exists()
        return len(queries)

    assert cost(3) == cost(40)


def test_mark_all_as_read_needs_csrf(reader):
    many(1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    assert client.post("/alarms/", {"dismiss_all": "1"}).status_code == 403
    assert not AlarmReceipt.objects.exists()


def test_the_toolbar_holds_the_button(client, reader):
    many(1)
    client.force_login(reader)
    html = client.get("/alarms/?q=server").content.decode()
    tools = html.split("data-alarms-centre-tools>")[1].split("</div>")[0]
    assert 'name="dismiss_all"' in tools and "Mark all matching as read" in tools

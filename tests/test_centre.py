from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alarms import api
from alarms.models import AlarmReceipt

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

"""Receipts end to end: dismissals posted to a real daphne, as the page posts them."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from alarms import api
from alarms.models import AlarmReceipt
from tests.e2e.conftest import Server, csrf_cookie, http_request, open_stream
from tests.helpers import en

pytestmark = [pytest.mark.e2e, pytest.mark.one_django]


class Page:
    """A signed-in page of the demo site: its session, its CSRF token, its posts."""

    def __init__(self, server: Server, cookie: tuple[str, str]) -> None:
        self.server = server
        self.cookie = cookie
        status, headers, _ = http_request(server.port, "GET", "/", {"Cookie": "=".join(cookie)})
        assert status == 200
        self.token = csrf_cookie(headers.get_all("Set-Cookie") or [])

    def dismiss(self, *ids: int) -> Any:
        name, value = self.cookie
        status, _, body = http_request(
            self.server.port,
            "POST",
            "/alarms/dismiss/",
            {
                "Cookie": f"{name}={value}; csrftoken={self.token}",
                "Origin": self.server.url,
                "X-CSRFToken": self.token,
                "Content-Type": "application/json",
            },
            json.dumps({"ids": list(ids)}).encode(),
        )
        assert status == 200, body
        return json.loads(body)


def test_dismiss_takes_only_live_alarms_of_the_user_and_reaches_their_other_stream(
    server, make_user, session_cookie
):
    ann, bob = make_user("ann"), make_user("bob")
    cookie = session_cookie(ann)
    page = Page(server, cookie)
    bobs = api.send_alarm(en("For bob"), users=[bob])
    live = api.send_alarm(en("Now"))
    with open_stream(server, cookie) as here, open_stream(server, cookie) as elsewhere:
        for stream in (here, elsewhere):
            event = stream.next_event(15)
            assert (event.event, event.json()["id"]) == ("alarm", live.pk)
        # Posted while it is still scheduled: a toast racing its schedule, not a
        # dismissal in advance.
        soon = api.send_alarm(en("Soon"), publish_at=timezone.now() + timedelta(seconds=3))

        assert page.dismiss(soon.pk, bobs.pk) == {"updated": 0}
        assert timezone.now() < soon.publish_at, "the machine was too slow to post in time"

        assert page.dismiss(live.pk) == {"updated": 1}
        for stream in (here, elsewhere):
            event = stream.next_event(15)
            assert (event.event, event.json()) == ("dismiss", {"id": live.pk})
        # When the scheduled alarm goes live, both streams show it.
        for stream in (here, elsewhere):
            event = stream.next_event(10)
            assert (event.event, event.json()["id"]) == ("alarm", soon.pk)
            assert time.time() >= soon.publish_at.timestamp()
    assert list(AlarmReceipt.objects.values_list("alarm_id", flat=True)) == [live.pk]

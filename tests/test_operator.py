"""The operator's tools: test send, live reach (presence), the change list's column."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any

import pytest
import uvloop
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alarms import api, journal, reach, signals
from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.broker.connect import snapshot
from alarms.broker.memory import MemoryBroker
from alarms.broker.postgres import PostgresBroker
from alarms.broker.reads import ConnectState
from alarms.models import Alarm, AlarmChange, AlarmPresence
from tests.helpers import LIST_URL, en, form_data, run_broker, until, with_broker
from tests.sse import parse

TEST_URL = "/admin/alarms/alarm/operator/test/"
REACH_URL = "/admin/alarms/alarm/operator/reach/"


@pytest.fixture
def operator(db: None, client: Any) -> Any:
    user = get_user_model().objects.create_superuser("operator", password="pw")
    client.force_login(user)
    return user


def sent_tests() -> list[AlarmChange]:
    return list(AlarmChange.objects.filter(kind="test"))


# -- test send: the admin endpoint ----------------------------------------------------


def test_a_test_send_writes_one_journal_row_and_no_alarm(operator, client):
    created: list[Any] = []
    signals.alarm_created.connect(lambda **kw: created.append(kw), weak=False, dispatch_uid="t")
    try:
        data = form_data([("en", "Fire drill", "At noon"), ("ar", "تمرين حريق", "ظهرا")])
        response = client.post(TEST_URL, {**data, "test_language": ""})
    finally:
        signals.alarm_created.disconnect(dispatch_uid="t")
    assert response.status_code == 200, response.content
    assert response.json()["sent"] == 2
    [row] = sent_tests()
    assert (row.alarm_id, row.user_id) == (0, operator.pk)
    payloads = json.loads(row.detail)
    assert [(p["language"], p["dir"], p["title"]) for p in payloads] == [
        ("en", "ltr", "Fire drill"),
        ("ar", "rtl", "تمرين حريق"),
    ]
    assert not Alarm.objects.exists()
    assert created == []


def test_one_language_is_sent_as_its_readers_get_it(operator, client):
    data = form_data([("en", "Fire drill", "At noon")])
    response = client.post(TEST_URL, {**data, "test_language": "ko"})
    assert response.status_code == 200, response.content
    [payload] = json.loads(sent_tests()[0].detail)
    # No Korean translation: a Korean reader gets the English one.
    assert (payload["reader"], payload["language"], payload["title"]) == ("ko", "en", "Fire drill")


def test_an_invalid_form_sends_nothing_and_says_why(operator, client):
    data = form_data([("ko", "훈련", "정오")])  # no translation in the default language
    response = client.post(TEST_URL, {**data, "test_language": ""})
    assert response.status_code == 400
    [message] = response.json()["errors"]
    assert "English" in message and "required" in message
    bad_language = client.post(TEST_URL, {**form_data(), "test_language": "xx"})
    assert bad_language.status_code == 400
    assert sent_tests() == []


def test_storm_control_does_not_refuse_a_test(operator, client):
    with override_settings(ALARMS={"STORM_LIMIT": 0}):
        response = client.post(TEST_URL, {**form_data(), "test_language": ""})
    assert response.status_code == 200, response.content


def test_a_saved_alarm_is_tested_as_the_form_edits_it(operator, client):
    alarm = api.send_alarm(en("Saved title"), audience="authenticated")
    data = form_data([], alarm=alarm)
    data["translations-0-title"] = "Edited, unsaved"
    response = client.post(f"{TEST_URL}?object={alarm.pk}", {**data, "test_language": "en"})
    assert response.status_code == 200, response.content
    assert json.loads(sent_tests()[0].detail)[0]["title"] == "Edited, unsaved"
    alarm.refresh_from_db()
    assert str(alarm) == "Saved title"


def test_a_test_send_needs_staff_and_post(db, client, operator):
    assert client.get(TEST_URL).status_code == 405
    client.logout()
    response = client.post(TEST_URL, {**form_data(), "test_language": ""})
    assert response.status_code == 302  # to the admin's login
    assert sent_tests() == []


def test_the_detail_is_bounded():
    huge = [{"title": "x" * journal.MAX_TEST_DETAIL}]
    with pytest.raises(journal.TestTooLarge):
        journal.record_test(1, huge)


# -- the broker, on both databases -----------------------------------------------------


def state(user: Any = None, language: str = "en") -> ConnectState:
    if user is None:
        return ConnectState(Viewer(language=language), set(), set())
    return ConnectState(Viewer(user_id=user.pk, language=language), set(), set())


class OperatorBrokerContract:
    broker_class: type[BaseBroker]
    settings: dict[str, Any] = {}

    @pytest.fixture
    def run(self, transactional_db: None) -> Iterator[Callable[..., Any]]:
        def runner(test: Callable[[BaseBroker], Coroutine[Any, Any, None]]) -> None:
            run_broker(self.broker_class(), test)

        with override_settings(ALARMS=self.settings):
            yield runner

    def test_a_test_reaches_its_users_streams_only(self, run):
        users = get_user_model().objects
        me, other = users.create_user("me"), users.create_user("other")
        payloads = [
            {"level": "warning", "title": "T", "message": "m", "language": "en", "dir": "ltr"},
            {"level": "warning", "title": "ت", "message": "م", "language": "ar", "dir": "rtl"},
        ]

        async def test(broker: BaseBroker) -> None:
            mine = [broker.subscribe(state(me)), broker.subscribe(state(me, "ko"))]
            others = [broker.subscribe(state(other)), broker.subscribe(state())]
            await sync_to_async(journal.record_test)(me.pk, payloads)
            marker = await sync_to_async(api.send_alarm)(en("Marker"), audience="everyone")
            for sub in mine:
                chunks: list[bytes] = []
                for _wait in range(10):  # until two tests and the marker have come
                    if sum(c.count(b"event: ") for c in chunks) >= 3:
                        break
                    chunks += await sub.next(3) or []
                events = [e for c in chunks for e in parse(c.decode())]
                tests = [e for e in events if e.event == "test"]
                assert [e.json()["language"] for e in tests] == ["en", "ar"]
                # No id line: the stream's Last-Event-ID stays where the journal put it.
                assert all(b"id:" not in c for c in chunks if b"event: test" in c)
                ids = [e.json()["id"] for e in tests]
                assert all(isinstance(i, str) and i.startswith("test-") for i in ids)
                assert all(e.json()["test"] is True for e in tests)
            for sub in others:
                # Written before the marker, so it would have come before it.
                chunks = await sub.next(3)
                events = [e for c in chunks for e in parse(c.decode())]
                assert [e.event for e in events] == ["alarm"]
                assert events[0].json()["id"] == marker.pk
            # A page opened now, or resuming from before the test, is not sent it.
            fresh = broker.subscribe(state(me))
            assert all(b"event: test" not in c for c in snapshot(broker, fresh, set()))
            row = await AlarmChange.objects.filter(kind="test").alast()
            assert row is not None
            since = (row.pk - 1, int(time.time() * 1000) - 60_000)  # just before the test
            missed = await broker.run_db(broker.reads.missed, fresh.viewer, since, broker.head)
            assert missed is not None and missed.changed == {marker.pk}
            assert not missed.dismissed and not missed.retract

        run(test)

    def test_presence_is_written_when_streams_come_and_deleted_when_they_go(self, run):
        kim = get_user_model().objects.create_user("kim")

        async def test(broker: BaseBroker) -> None:
            subs = [broker.subscribe(state(kim, "ko")), broker.subscribe(state(None, "en"))]
            subs.append(broker.subscribe(state(kim, "ko")))  # a second tab: one reader

            def rows() -> list[str]:
                return list(AlarmPresence.objects.values_list("data", flat=True))

            await until(lambda: broker.presence.writes >= 1 and not broker.presence.changed, 10)
            [text] = await sync_to_async(rows)()
            assert json.loads(text)["languages"] == {
                "en": {"anonymous": 1, "users": []},
                "ko": {"anonymous": 0, "users": [kim.pk]},
            }
            for sub in subs:
                broker.unsubscribe(sub)
            await until(lambda: not broker.presence.changed and broker.presence._task is None, 10)
            assert await sync_to_async(rows)() == []

        run(test)


@override_settings(
    ALARMS={
        "BROKER": "alarms.broker.memory.MemoryBroker",
        "POLL_INTERVAL": 60,
        "SHUTDOWN_GRACE": 0,
        "PRESENCE_INTERVAL": 0.05,
    }
)
def test_presence_keeps_time_under_uvloop(transactional_db: None) -> None:
    """uvicorn runs on uvloop, whose call_at for a time already past gives a plain
    Handle, with no when(): the second of two streams opened in one turn of the
    loop failed its connect with a 500 (seen under a connect storm)."""
    kim = get_user_model().objects.create_user("kim")

    async def test(broker: BaseBroker) -> None:
        subs = [broker.subscribe(state(kim)), broker.subscribe(state(None, "ko"))]
        await until(lambda: broker.presence.writes >= 1 and not broker.presence.changed, 10)
        [text] = await sync_to_async(list)(AlarmPresence.objects.values_list("data", flat=True))
        assert set(json.loads(text)["languages"]) == {"en", "ko"}
        for sub in subs:
            broker.unsubscribe(sub)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(with_broker(MemoryBroker(), test))


@override_settings(ALARMS={"BROKER": "alarms.broker.memory.MemoryBroker", "SHUTDOWN_GRACE": 0})
def test_a_connect_that_fails_after_subscribing_leaves_no_stream(transactional_db: None) -> None:
    """As the presence timer did under uvloop: its connect answered 500, and the
    stream must not stay registered, fanned out to and counted forever."""
    kim = get_user_model().objects.create_user("kim")

    async def test(broker: BaseBroker) -> None:
        def fails(viewer: Viewer) -> None:
            raise RuntimeError("presence")

        broker.presence.joined = fails  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            broker.subscribe(state(kim))
        assert len(broker.subscribers) == 0
        assert kim.pk not in broker.subscribers.by_user
        assert broker.counters.connects == 0

    run_broker(MemoryBroker(), test)


class TestMemoryBroker(OperatorBrokerContract):
    broker_class = MemoryBroker
    settings = {
        "BROKER": "alarms.broker.memory.MemoryBroker",
        "POLL_INTERVAL": 60,
        "SHUTDOWN_GRACE": 0,
        "PRESENCE_INTERVAL": 0.05,
    }


@pytest.mark.postgres
class TestPostgresBroker(OperatorBrokerContract):
    broker_class = PostgresBroker
    settings = {
        "BROKER": "alarms.broker.postgres.PostgresBroker",
        "SHUTDOWN_GRACE": 0,
        "PRESENCE_INTERVAL": 0.05,
    }


# -- reach --------------------------------------------------------------------------------


def presence(process: str, languages: dict[str, Any], age: float = 0) -> None:
    AlarmPresence.objects.create(
        process=process,
        updated_at=timezone.now() - timedelta(seconds=age),
        data=json.dumps({"v": 1, "languages": languages}),
    )


@pytest.fixture
def online(db: None) -> dict[str, Any]:
    users = get_user_model().objects
    staff = users.create_user("staff-ko", is_staff=True)
    member = users.create_user("member-en")
    plain = users.create_user("plain-ko")
    group = Group.objects.create(name="ops")
    member.groups.add(group)
    presence("a", {"ko": {"anonymous": 2, "users": [staff.pk, plain.pk]}})
    # The same user on a second process is one reader; an unreadable row adds nothing.
    presence("b", {"ko": {"anonymous": 1, "users": [plain.pk]}, "en": {"users": [member.pk]}})
    presence("gone", {"ja": {"anonymous": 50, "users": []}}, age=3600)
    AlarmPresence.objects.create(process="odd", updated_at=timezone.now(), data="{")
    return {"staff": staff, "member": member, "plain": plain, "group": group}


def counts(audience: str, translations: list[str], **target: Any) -> dict[str, Any]:
    found = reach.count(
        reach.online(), reach.Target(audience, **target), translations, reach.Members()
    )
    return {
        "readers": found.readers,
        "fallback": found.fallback,
        **{i.code: (i.readers, i.translation) for i in found.languages if i.readers},
    }


def test_reach_counts_each_audience_per_language(online):
    staff, group = online["staff"], online["group"]
    assert counts("everyone", ["en"]) == {
        "readers": 6,
        "fallback": 5,
        "ko": (5, "en"),
        "en": (1, "en"),
    }
    assert counts("authenticated", ["en", "ko"]) == {
        "readers": 3,
        "fallback": 0,
        "ko": (2, "ko"),
        "en": (1, "en"),
    }
    assert counts("staff", ["en"]) == {"readers": 1, "fallback": 1, "ko": (1, "en")}
    selected = counts(
        "selected", ["en"], user_ids=frozenset({staff.pk}), group_ids=frozenset({group.pk})
    )
    assert selected == {"readers": 2, "fallback": 1, "ko": (1, "en"), "en": (1, "en")}
    assert reach.online().processes == 2


def test_the_reach_endpoint_follows_the_form(online, operator, client):
    response = client.get(REACH_URL, {"audience": "authenticated", "languages": ["en"]})
    body = response.json()
    ko = next(item for item in body["languages"] if item["code"] == "ko")
    assert (ko["readers"], ko["translation"], ko["fallback"]) == (2, "en", True)
    assert (body["readers"], body["fallback"]) == (3, 2)
    assert "2 of them get a fallback" in body["summary"]
    translated = client.get(REACH_URL, {"audience": "authenticated", "languages": ["en", "ko"]})
    assert translated.json()["fallback"] == 0
    bad = client.get(REACH_URL, {"audience": "nobody"})
    assert bad.status_code == 400
    bad_ids = client.get(REACH_URL, {"audience": "selected", "users": ["1x"]})
    assert bad_ids.status_code == 400 and bad_ids.json()["errors"]


def test_the_change_list_column_costs_no_query_per_row(online, operator, client):
    group = online["group"]

    def page() -> tuple[int, str]:
        with CaptureQueriesContext(connections["default"]) as queries:
            response = client.get(LIST_URL)
        assert response.status_code == 200
        return len(queries), response.content.decode()

    first = api.send_alarm(en("First"), audience="everyone")
    chosen = api.send_alarm(en("Chosen"), audience="selected", groups=[group])
    one, html = page()
    assert "6 / 5" in html  # everyone: 6 online, the 5 Korean readers get English
    assert "1 / 0" in html  # the group's one member reads English
    for i in range(6):
        api.send_alarm(en(f"More {i}"), audience="selected", groups=[group])
    many, _html = page()
    assert many == one
    assert first.pk and chosen.pk

"""``POST /alarms/hooks/alertmanager/``: mapping, keys, order, repeats, groups, storm, access.

Through the view with Django's test client, on the test database; the real
Alertmanager posting to a real server is tests/e2e/test_alertmanager.py.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarms import signals, tokens
from alarms.hooks import alertmanager
from alarms.models import Alarm, AlarmChange, AlarmToken, Audience, TokenScope
from alarms.rules import MAX_MESSAGE, MAX_TITLE

pytestmark = pytest.mark.django_db

URL = reverse("alarms:alertmanager")
START = datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)
ZERO = "0001-01-01T00:00:00Z"
BOTH = (TokenScope.PUBLISH, TokenScope.WITHDRAW)


def at(minutes: float) -> str:
    """A time ``minutes`` after START, as Alertmanager writes it (nanoseconds)."""
    return (START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")


def alert(
    fingerprint: str = "1a30ba71cca2921f",
    status: str = "firing",
    *,
    starts: float = 0,
    ends: float | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    generator: str = "http://prometheus.example.org:9090/graph?g0.expr=up+%3D%3D+0",
) -> dict[str, Any]:
    """An alert as Alertmanager 0.25 sends it; resolved ones end a minute after they start."""
    if ends is None and status == "resolved":
        ends = starts + 1
    return {
        "status": status,
        "labels": {"alertname": "ProbeFailure", "severity": "critical", **(labels or {})},
        "annotations": {
            "summary": "Probe failed",
            "description": "server.example.org is down.",
            **(annotations or {}),
        },
        "startsAt": at(starts),
        "endsAt": ZERO if ends is None else at(ends),
        "generatorURL": generator,
        "fingerprint": fingerprint,
    }


def message(*alerts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "alarms",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "ProbeFailure"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.org:9093",
        "version": "4",
        "groupKey": '{}:{alertname="ProbeFailure"}',
        "truncatedAlerts": 0,
        **fields,
    }


@pytest.fixture
def secret() -> str:
    return tokens.create_token("alertmanager", scopes=BOTH)[1]


def post(body: Any, secret: str | None, *, raw: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    data = body if raw else json.dumps(body)
    return Client().post(URL, data, content_type="application/json", headers=headers)


def send(secret: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    """Post one notification that must succeed; its answer."""
    response = post(message(*alerts), secret)
    assert response.status_code == 200, response.content
    return dict(response.json())


def the_alarm(fingerprint: str = "1a30ba71cca2921f", starts: float = 0) -> Alarm:
    return Alarm.objects.get(external_id=key(fingerprint, starts))


def key(fingerprint: str = "1a30ba71cca2921f", starts: float = 0) -> str:
    return f"alertmanager:{fingerprint}:{(START + timedelta(minutes=starts)).isoformat()}"


def texts(alarm: Alarm) -> dict[str, tuple[str, str]]:
    return {t.language_code: (t.title, t.message) for t in alarm.translations.all()}


# -- mapping ----------------------------------------------------------------------------


def test_a_firing_alert_becomes_an_alarm_in_each_language_it_names(secret: str) -> None:
    assert send(
        secret,
        alert(
            annotations={
                "summary_ko": "프로브 실패",
                "description_ko": "server.example.org 가 다운되었습니다.",
                "summary_ja": "プローブ失敗",
                "runbook_url": "https://runbooks.example.org/probe",
            }
        ),
    ) == {"published": 1}
    alarm = the_alarm()
    assert alarm.level == "critical"
    assert alarm.audience == Audience.AUTHENTICATED  # the token's default
    assert alarm.url == "https://runbooks.example.org/probe"
    assert alarm.created_by_token == AlarmToken.objects.get()
    assert alarm.status == "live"
    assert texts(alarm) == {
        "en": ("Probe failed", "server.example.org is down."),
        "ko": ("프로브 실패", "server.example.org 가 다운되었습니다."),
        # No description_ja: the summary in Japanese, not the English description.
        "ja": ("プローブ失敗", "プローブ失敗"),
    }


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        ("critical", "critical"),
        ("error", "error"),
        ("warning", "warning"),
        ("info", "info"),
        ("CRITICAL", "critical"),
        ("page", "warning"),
        ("success", "warning"),
        (None, "warning"),
    ],
)
def test_severity_gives_the_level(secret: str, severity: str | None, level: str) -> None:
    sent = alert()
    if severity is None:
        del sent["labels"]["severity"]
    else:
        sent["labels"]["severity"] = severity
    send(secret, sent)
    assert the_alarm().level == level


def test_without_summary_the_alertname_and_without_description_the_summary(secret: str) -> None:
    bare = alert()
    bare["annotations"] = {"description_ko": "설명만", "summary_ja": "要約だけ"}
    send(secret, bare)
    assert texts(the_alarm()) == {
        "en": ("ProbeFailure", "ProbeFailure"),
        "ko": ("ProbeFailure", "설명만"),
        "ja": ("要約だけ", "要約だけ"),
    }


def test_the_default_languages_own_code_wins_and_unknown_languages_are_logged_once(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    alertmanager._warned_languages.clear()
    named = alert(
        annotations={
            "summary_EN": "Named English",
            "summary_pt_br": "Falha",
            "summary_": "nothing",
            "summary_ko": "  ",  # blank: as if absent
            "summaryx": "not an annotation of ours",
        }
    )
    with caplog.at_level(logging.WARNING, logger="alarms.hooks"):
        send(secret, named)
        send(secret, named)
    assert texts(the_alarm()) == {"en": ("Named English", "server.example.org is down.")}
    warnings = [r for r in caplog.records if r.name == "alarms.hooks"]
    assert sorted(r.language for r in warnings) == ["", "pt_br"]  # type: ignore[attr-defined]


def test_text_is_cut_to_the_limits_and_made_storable(secret: str) -> None:
    send(
        secret,
        alert(
            annotations={
                "summary": "S" * (MAX_TITLE + 50),
                "description": "a\0bc " + "D" * MAX_MESSAGE,
            }
        ),
    )
    [(title, body)] = texts(the_alarm()).values()
    assert title == "S" * (MAX_TITLE - 1) + "…"
    assert len(body) == MAX_MESSAGE
    assert body.startswith("abc DD") and body.endswith("D…")


@pytest.mark.parametrize(
    ("runbook", "generator", "url"),
    [
        ("https://runbooks.example.org/a", "http://prom/graph", "https://runbooks.example.org/a"),
        ("/runbooks/a", "http://prom/graph", "/runbooks/a"),
        (None, "http://prom/graph", "http://prom/graph"),
        ("javascript:alert(1)", "http://prom/graph", "http://prom/graph"),
        ("https://x.example/" + "a" * 2000, "http://prom/graph", "http://prom/graph"),
        ("//evil.example/", "data:text/html,hi", ""),
        (None, "", ""),
    ],
)
def test_the_link_is_the_runbook_else_the_generator_and_never_unsafe(
    secret: str, runbook: str | None, generator: str, url: str
) -> None:
    sent = alert(generator=generator)
    if runbook is not None:
        sent["annotations"]["runbook_url"] = runbook
    send(secret, sent)
    assert the_alarm().url == url


# -- audience ---------------------------------------------------------------------------


def test_the_alarm_group_label_names_the_audience(secret: str) -> None:
    dba = Group.objects.create(name="DBA on call")
    send(secret, alert(labels={"alarm_group": "DBA on call"}))
    alarm = the_alarm()
    assert alarm.audience == Audience.SELECTED
    assert list(alarm.groups.all()) == [dba]


def test_the_tokens_default_groups_without_the_label() -> None:
    ops = Group.objects.create(name="ops")
    _token, secret = tokens.create_token("am", scopes=BOTH, audience="selected", groups=[ops])
    send(secret, alert())
    assert list(the_alarm().groups.all()) == [ops]


def test_an_unknown_group_refuses_that_alert_and_not_the_others(secret: str) -> None:
    response = post(
        message(
            alert("aaaa", labels={"alarm_group": "no such group"}),
            alert("bbbb"),
        ),
        secret,
    )
    assert response.status_code == 422
    answer = response.json()
    assert answer["published"] == 1
    [refused] = answer["refused"]
    assert refused["fingerprint"] == "aaaa"
    assert "Unknown group 'no such group'" in refused["error"]
    assert list(Alarm.objects.values_list("external_id", flat=True)) == [key("bbbb")]


def test_a_token_whose_selected_audience_has_no_group_is_refused() -> None:
    _token, secret = tokens.create_token("am", scopes=BOTH, audience="selected")
    response = post(message(alert()), secret)
    assert response.status_code == 422
    assert "needs at least one user or group" in response.json()["refused"][0]["error"]
    assert not Alarm.objects.exists()


# -- keys, order and repeats ------------------------------------------------------------


def test_a_repeated_notification_writes_nothing(
    secret: str, django_capture_on_commit_callbacks: Any
) -> None:
    received: list[Any] = []

    def receiver(**kwargs: Any) -> None:
        received.append(kwargs["alarm"])

    signals.alarm_updated.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            send(secret, alert())
            journal = AlarmChange.objects.count()
            assert send(secret, alert()) == {"unchanged": 1}
        assert AlarmChange.objects.count() == journal
        assert received == []
        with django_capture_on_commit_callbacks(execute=True):
            update = send(secret, alert(annotations={"description": "Still down."}))
        assert update == {"updated": 1}
    finally:
        signals.alarm_updated.disconnect(receiver)
    assert received == [the_alarm()]
    assert texts(the_alarm())["en"] == ("Probe failed", "Still down.")
    assert Alarm.objects.count() == 1


def test_resolved_withdraws_the_alarm_and_a_late_firing_does_not_bring_it_back(
    secret: str,
) -> None:
    send(secret, alert())
    assert send(secret, alert(status="resolved")) == {"withdrawn": 1}
    assert the_alarm().status == "withdrawn"
    # The firing notification delivered late, after its resolution.
    assert send(secret, alert()) == {"ignored": 1}
    assert the_alarm().status == "withdrawn"
    assert send(secret, alert(status="resolved")) == {"ignored": 1}
    assert Alarm.objects.count() == 1


def test_a_resolved_alert_never_seen_firing_is_a_no_op(secret: str) -> None:
    assert send(secret, alert(status="resolved")) == {"ignored": 1}
    assert not Alarm.objects.exists()


def test_firing_again_after_resolution_is_a_new_alarm(secret: str) -> None:
    send(secret, alert())
    send(secret, alert(status="resolved", ends=5))
    assert send(secret, alert(starts=10)) == {"published": 1}
    assert the_alarm().status == "withdrawn"
    assert the_alarm(starts=10).status == "live"


def test_a_newer_incident_withdraws_an_older_one_whose_resolution_was_lost(
    secret: str,
) -> None:
    send(secret, alert())
    assert send(secret, alert(starts=10)) == {"published": 1}
    assert the_alarm().status == "withdrawn"
    assert the_alarm(starts=10).status == "live"


def test_an_older_incident_after_a_newer_one_is_stale(secret: str) -> None:
    send(secret, alert(starts=10))
    assert send(secret, alert(starts=0)) == {"ignored": 1}
    assert Alarm.objects.count() == 1
    # Its resolution still ends what started before it ended.
    assert send(secret, alert(status="resolved", starts=0, ends=20)) == {"withdrawn": 1}
    assert the_alarm(starts=10).status == "withdrawn"


def test_a_resolution_leaves_a_later_incident_alone(secret: str) -> None:
    send(secret, alert(starts=10))
    assert send(secret, alert(status="resolved", starts=0, ends=5)) == {"ignored": 1}
    assert the_alarm(starts=10).status == "live"


def test_the_same_instant_written_otherwise_is_the_same_incident(secret: str) -> None:
    send(secret, alert())
    other = alert()
    other["startsAt"] = "2026-11-30T10:00:00.123456+02:00"  # START, two hours east
    assert send(secret, other) == {"unchanged": 1}


def test_a_group_of_alerts_is_one_alarm_each_and_resolutions_go_first(secret: str) -> None:
    assert send(secret, alert("a1"), alert("a2"), alert("a3")) == {"published": 3}
    assert send(
        secret, alert("a4"), alert("a1", "resolved"), alert("a2"), alert("a3", "resolved")
    ) == {"withdrawn": 2, "published": 1, "unchanged": 1}
    assert {a.external_id: a.status for a in Alarm.objects.all()} == {
        key("a1"): "withdrawn",
        key("a2"): "live",
        key("a3"): "withdrawn",
        key("a4"): "live",
    }


# -- storm control ----------------------------------------------------------------------


def test_a_group_beyond_the_storm_limit_is_answered_429_and_completed_on_resending() -> None:
    token, secret = tokens.create_token("am", scopes=BOTH, storm_limit=2)
    group = message(alert("a1"), alert("a2"), alert("a3"))
    response = post(group, secret)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["published"] == 2
    assert "Storm control" in response.json()["error"]
    assert Alarm.objects.count() == 2

    token.storm_limit = 3
    token.save()
    response = post(group, secret)
    assert response.status_code == 200
    assert response.json() == {"unchanged": 2, "published": 1}

    # A full window still takes a group that resolves one and fires another.
    assert send(secret, alert("a4"), alert("a1", "resolved")) == {"withdrawn": 1, "published": 1}


@override_settings(ALARMS={"STORM_LIMIT": 0})
def test_a_storm_limit_of_zero_gives_no_retry_after(secret: str) -> None:
    response = post(message(alert()), secret)
    assert response.status_code == 429
    assert "Retry-After" not in response


# -- access -----------------------------------------------------------------------------


def test_no_or_a_wrong_or_a_revoked_token_is_401(secret: str) -> None:
    for wrong in (None, "alm_wrong", secret[:-1]):
        response = post(message(alert()), wrong)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
    tokens.revoke(AlarmToken.objects.get())
    assert post(message(alert()), secret).status_code == 401
    assert not Alarm.objects.exists()


@pytest.mark.parametrize("scopes", [(TokenScope.PUBLISH,), (TokenScope.WITHDRAW,)])
def test_a_token_without_both_scopes_is_403_even_for_a_firing_alert(scopes: tuple[str]) -> None:
    _token, secret = tokens.create_token("am", scopes=scopes)
    response = post(message(alert()), secret)
    assert response.status_code == 403
    assert "publish and withdraw" in response.json()["error"]
    assert not Alarm.objects.exists()


def test_only_post(secret: str) -> None:
    response = Client().get(URL, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 405


# -- malformed payloads -----------------------------------------------------------------


def test_a_body_that_is_not_json_is_400(secret: str) -> None:
    for body in (b"{not json", b'{"version": "4", "alerts": [], "x": "\\ud800"}'):
        response = post(body, secret, raw=True)
        assert response.status_code == 400
        assert response.json()["error"] == "The body is not valid JSON."


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(version="3"),
        lambda m: m.pop("alerts"),
        lambda m: m.update(truncatedAlerts=-1),
        lambda m: m["alerts"][0].pop("fingerprint"),
        lambda m: m["alerts"][0].update(fingerprint="../../etc"),
        lambda m: m["alerts"][0].update(status="pending"),
        lambda m: m["alerts"][0].update(startsAt="yesterday"),
        lambda m: m["alerts"][0].update(startsAt="2026-11-30T08:00:00"),  # no zone
        lambda m: m["alerts"][0].update(startsAt="0001-01-01T00:00:00+02:00"),  # year 0 in UTC
        lambda m: m["alerts"][0]["labels"].update(severity=3),
        lambda m: m["alerts"][0].update(annotations=["summary"]),
    ],
)
def test_json_that_is_no_webhook_message_is_422(secret: str, change: Any) -> None:
    sent = message(alert())
    change(sent)
    response = post(sent, secret)
    assert response.status_code == 422, response.content
    assert response.json()["detail"]
    assert not Alarm.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_over_the_upload_limit_is_400(secret: str) -> None:
    response = post(message(alert(annotations={"description": "x" * 1000})), secret)
    assert response.status_code == 400
    assert not Alarm.objects.exists()


def test_truncated_alerts_are_logged(secret: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="alarms.hooks"):
        response = post(message(alert(), truncatedAlerts=7), secret)
    assert response.status_code == 200
    assert "7 alerts of group" in caplog.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Strings that reach the queries and the text columns: NUL, surrogates, LIKE wildcards.
wild_text = st.text(alphabet=st.characters(codec=None), max_size=40) | st.sampled_from(
    ["", "%", "_", "\0", "\ud800", "alertmanager:", "javascript:x", "/a", "ko", "ops"]
)
valid_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()
).map(lambda t: t.isoformat())
wild_times = valid_times | st.sampled_from(
    [ZERO, "0001-01-01T00:00:00+02:00", "9999-12-31T23:59:59.999999-23:59", "nonsense"]
)


def alerts(
    status: st.SearchStrategy[str], times: st.SearchStrategy[str], fingerprint: Any
) -> st.SearchStrategy[dict[str, Any]]:
    """Alerts with any labels and annotations, of the ones the hook reads most."""
    return st.fixed_dictionaries(
        {
            "status": status,
            "labels": st.dictionaries(
                st.sampled_from(["alertname", "severity", "alarm_group", "x"]) | wild_text,
                wild_text | st.sampled_from(["critical", "ops", "no such group"]),
                max_size=4,
            ),
            "annotations": st.dictionaries(
                st.sampled_from(
                    ["summary", "description", "summary_ko", "description_ja", "runbook_url"]
                )
                | wild_text,
                wild_text,
                max_size=5,
            ),
            "startsAt": times,
            "endsAt": times,
            "generatorURL": wild_text,
            "fingerprint": fingerprint,
        }
    )


# Alerts the model takes (so the mapping and the service see what is in them),
# and alerts of any shape.
good_alerts = alerts(
    st.sampled_from(["firing", "resolved"]), valid_times, st.sampled_from(["a1", "b2", "c3"])
)
wild_alerts = alerts(
    st.sampled_from(["firing", "resolved", "other"]),
    wild_times,
    st.sampled_from(["a1", "b2"]) | wild_text,
)


@override_settings(ALARMS={"STORM_LIMIT": None})
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(good_alerts, max_size=4).map(lambda a: json.dumps(message(*a)).encode()),
        st.lists(wild_alerts, max_size=4).map(lambda a: json.dumps(message(*a)).encode()),
    )
)
def test_no_payload_makes_a_500(secret: str, body: bytes) -> None:
    Group.objects.get_or_create(name="ops")
    # The test client raises what the view raises: a 500 would fail here.
    response = post(body, secret, raw=True)
    assert response.status_code in (200, 400, 422), response.content
    assert isinstance(response.json(), dict)

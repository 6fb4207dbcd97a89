"""``manage.py prune_alarms``: what goes, what stays, batches, dry runs, concurrent runs."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from alarms.broker.base import BaseBroker
from alarms.broker.cache import Viewer
from alarms.management.commands.prune_alarms import LOCK_KEY
from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmTranslation
from tests.factories import ago, ahead, make_alarm, make_user

pytestmark = pytest.mark.django_db


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_alarms", *args, stdout=out)
    return out.getvalue()


def old_journal(days: float) -> None:
    """Date every journal row written so far ``days`` days back."""
    AlarmChange.objects.update(created_at=ago(days=days))


@pytest.fixture
def history() -> dict[str, Alarm]:
    """One alarm of each kind a retention rule must tell apart."""
    reader = make_user("reader")
    alarms = {
        "expired long ago": make_alarm(
            ("en", "ko"), publish_at=ago(days=200), expires_at=ago(days=100)
        ),
        "withdrawn long ago": make_alarm(("en", "ja"), withdrawn_at=ago(days=95)),
        "expired, then withdrawn lately": make_alarm(
            publish_at=ago(days=200), expires_at=ago(days=120), withdrawn_at=ago(days=1)
        ),
        "expired lately": make_alarm(publish_at=ago(days=100), expires_at=ago(days=89)),
        "withdrawn lately": make_alarm(publish_at=ago(days=100), withdrawn_at=ago(days=10)),
        "live for ever": make_alarm(publish_at=ago(days=400)),
        "live": make_alarm(publish_at=ago(days=200), expires_at=ahead(days=1)),
        "scheduled": make_alarm(publish_at=ahead(days=1)),
    }
    for alarm in alarms.values():
        AlarmReceipt.objects.create(alarm=alarm, user=reader, seen_at=alarm.publish_at)
    alarms["expired long ago"].users.set([reader])
    return alarms


def test_deletes_alarms_that_ended_before_the_retention_with_their_rows(
    history: dict[str, Alarm],
) -> None:
    out = prune("--journal-days", "3650")

    gone = {"expired long ago", "withdrawn long ago", "expired, then withdrawn lately"}
    assert out == "Deleted 3 alarms (5 translations, 3 receipts) and 0 journal rows.\n"
    assert set(Alarm.objects.values_list("pk", flat=True)) == {
        a.pk for name, a in history.items() if name not in gone
    }
    kept = Alarm.objects.values_list("pk", flat=True)
    assert set(AlarmTranslation.objects.values_list("alarm_id", flat=True)) == set(kept)
    assert set(AlarmReceipt.objects.values_list("alarm_id", flat=True)) == set(kept)
    assert not Alarm.users.through.objects.exists()


def test_writes_no_journal_row_for_what_it_deletes(history: dict[str, Alarm]) -> None:
    before = list(AlarmChange.objects.values_list("pk", flat=True))

    prune("--journal-days", "3650")

    # Ended alarms are in no stream: a row per alarm and translation would only
    # wake every broker, and make resuming clients retract ids they never saw.
    assert list(AlarmChange.objects.values_list("pk", flat=True)) == before


def test_settings_and_options_set_the_retention(history: dict[str, Alarm]) -> None:
    with override_settings(ALARMS={"RETENTION_DAYS": 200}):
        assert prune().startswith("Deleted 0 alarms")
    assert prune("--days", "110").startswith("Deleted 1 alarm (1 translation, 1 receipt)")
    assert prune("--days", "91").startswith("Deleted 2 alarms")
    assert prune("--days", "5").startswith("Deleted 2 alarms")
    assert prune("--days", "0").startswith("Deleted 0 alarms")
    assert set(Alarm.objects.values_list("pk", flat=True)) == {
        history[name].pk for name in ("live for ever", "live", "scheduled")
    }


def test_dry_run_counts_and_deletes_nothing(history: dict[str, Alarm]) -> None:
    old_journal(days=30)
    rows = AlarmChange.objects.count()

    out = prune("--dry-run")

    assert out == (
        f"Would delete 3 alarms (5 translations, 3 receipts) and {rows - 1} journal rows.\n"
    )
    assert Alarm.objects.count() == len(history)
    assert AlarmChange.objects.count() == rows
    assert prune() == (
        f"Deleted 3 alarms (5 translations, 3 receipts) and {rows - 1} journal rows.\n"
    )


def test_a_second_run_finds_nothing(history: dict[str, Alarm]) -> None:
    old_journal(days=30)
    prune()
    assert prune() == "Deleted 0 alarms (0 translations, 0 receipts) and 0 journal rows.\n"


def test_deletes_in_batches(history: dict[str, Alarm]) -> None:
    for n in range(4):
        make_alarm(publish_at=ago(days=300), expires_at=ago(days=200 + n))
    old_journal(days=30)
    rows = AlarmChange.objects.count()

    with CaptureQueriesContext(connection) as queries:
        out = prune("--batch-size", "2")

    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE FROM")]
    alarm_deletes = [sql for sql in deletes if sql.startswith('DELETE FROM "alarms_alarm" ')]
    journal_deletes = [sql for sql in deletes if '"alarms_alarmchange"' in sql]
    assert len(alarm_deletes) == 4  # 7 alarms, 2 per transaction
    assert len(journal_deletes) == (rows - 1 + 1) // 2
    assert out.startswith("Deleted 7 alarms")
    assert AlarmChange.objects.count() == 1


# -- the journal --------------------------------------------------------------------


def test_journal_rows_older_than_the_retention_go() -> None:
    for title in ("a", "b", "c"):
        make_alarm(title=title)
    old_journal(days=10)
    old = AlarmChange.objects.count()
    make_alarm(title="recent")
    recent = set(
        AlarmChange.objects.filter(created_at__gt=ago(days=1)).values_list("pk", flat=True)
    )

    assert prune().endswith(f" and {old} journal rows.\n")
    assert set(AlarmChange.objects.values_list("pk", flat=True)) == recent
    with override_settings(ALARMS={"JOURNAL_RETENTION_DAYS": 0}):
        prune()
    # Even with nothing to keep, the newest row stays.
    assert list(AlarmChange.objects.values_list("pk", flat=True)) == [max(recent)]


def test_only_a_prefix_of_the_journal_goes() -> None:
    make_alarm(title="one")
    make_alarm(title="two")
    rows = list(AlarmChange.objects.order_by("pk").values_list("pk", flat=True))
    old_journal(days=30)
    # A row numbered late but dated early (a writer's clock behind): it stays,
    # for a gap in the middle would pass for rows a resuming client never missed.
    AlarmChange.objects.filter(pk=rows[1]).update(created_at=ago(days=0))

    prune()

    assert list(AlarmChange.objects.order_by("pk").values_list("pk", flat=True)) == rows[1:]


def test_newest_row_kept_so_a_resume_from_before_the_prune_gets_a_snapshot() -> None:
    make_alarm(title="one")
    make_alarm(title="two")
    first, *_, last = AlarmChange.objects.order_by("pk").values_list("pk", flat=True)
    old_journal(days=30)

    prune("--journal-days", "7")

    assert list(AlarmChange.objects.values_list("pk", flat=True)) == [last]
    broker = BaseBroker()
    viewer = Viewer(user_id=None)
    # From before the kept row: "pruned", so a snapshot instead of a replay.
    assert broker.reads.missed(viewer, (first, 0), last) is None
    # From just before it: nothing was lost, replay as usual.
    assert broker.reads.missed(viewer, (last - 1, 0), last) is not None


# -- bad input and concurrent runs ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    (
        (("--days", "-1"), "--days must be 0 or more"),
        (("--journal-days", "-2"), "--journal-days must be 0 or more"),
        (("--batch-size", "0"), "--batch-size must be 1 or more"),
    ),
)
def test_rejects_bad_numbers(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        prune(*args)


def test_verbosity_two_says_what_it_cuts_at(history: dict[str, Alarm]) -> None:
    out = prune("--verbosity", "2")
    assert "Alarms that ended before" in out
    assert "'default' database" in out
    assert prune("--verbosity", "0") == ""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_while_another_holds_the_lock_exits_cleanly() -> None:
    make_alarm(publish_at=ago(days=300), expires_at=ago(days=200))
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        out = prune()
        assert out == "Another prune_alarms run is in progress: nothing done.\n"
        assert Alarm.objects.count() == 1
        with other.cursor() as cursor:
            # Released here, at once: close() returns before the server's
            # backend has ended, and so before it lets go of the lock.
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    finally:
        other.close()
    assert prune().startswith("Deleted 1 alarm (")


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_both_succeed_and_delete_each_row_once() -> None:
    for n in range(30):
        make_alarm(publish_at=ago(days=300), expires_at=ago(days=200 + n))
    old_journal(days=30)
    rows = AlarmChange.objects.count()
    outputs: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait(10)
            outputs.append(prune("--batch-size", "3"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert not errors
    assert not Alarm.objects.exists()
    assert AlarmChange.objects.count() == 1
    counted: dict[str, int] = {"alarms": 0, "journal": 0}
    for out in outputs:
        if out.startswith("Deleted"):
            words = out.split()
            counted["alarms"] += int(words[1])
            counted["journal"] += int(words[-3])
    # Whoever ran, every alarm and row was deleted once and counted once.
    assert counted == {"alarms": 30, "journal": rows - 1}

"""``manage.py prune_alarms``: retention of ended alarms and of the change journal.

Safe to run from cron: it deletes in short transactions of ``--batch-size``
alarms or journal rows, a second run started meanwhile exits at once
(PostgreSQL advisory lock) or waits for each batch (SQLite's write lock), and a
run that finds nothing to delete changes nothing.

Ended alarms are deleted without the change journal hearing of it. Streams hold
only live and scheduled alarms, so they have nothing to retract; a journal row per
deleted alarm and translation would only wake every broker for nothing, and a
client resuming past such a row would be sent a retraction for an alarm id it
may never have been shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from alarms.conf import get_config
from alarms.models import Alarm, AlarmChange, AlarmReceipt, AlarmTranslation

# Session advisory lock of prune runs; not the key storm control's sends hold.
LOCK_KEY = int.from_bytes(b"alarmprn", "big")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Command(BaseCommand):
    help = (
        "Delete alarms that ended (expired or withdrawn) more than RETENTION_DAYS ago, with "
        "their translations and receipts, and change-journal rows older than "
        "JOURNAL_RETENTION_DAYS (the newest row is always kept). Safe to run from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help='Days an ended alarm is kept. Default: ALARMS["RETENTION_DAYS"].',
        )
        parser.add_argument(
            "--journal-days",
            type=int,
            default=None,
            help='Days a journal row is kept. Default: ALARMS["JOURNAL_RETENTION_DAYS"]. '
            "A client away longer resumes from a fresh snapshot.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Alarms or journal rows deleted per transaction (default 500).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        days = options["days"] if options["days"] is not None else config["RETENTION_DAYS"]
        journal_days = options["journal_days"]
        if journal_days is None:
            journal_days = config["JOURNAL_RETENTION_DAYS"]
        for name, value in (("--days", days), ("--journal-days", journal_days)):
            if value is not None and value < 0:
                raise CommandError(f"{name} must be 0 or more, not {value}.")
        batch = options["batch_size"]
        if batch < 1:
            raise CommandError(f"--batch-size must be 1 or more, not {batch}.")
        self.alias: str = config["DATABASE"]
        self.verbosity: int = options["verbosity"]
        now = timezone.now()
        # None keeps that kind of row forever.
        cutoff = now - timedelta(days=days) if days is not None else None
        journal_cutoff = now - timedelta(days=journal_days) if journal_days is not None else None
        self.note(
            f"Alarms that ended before {cutoff or 'never'}; journal rows before "
            f"{journal_cutoff or 'never'} ({self.alias!r} database)."
        )

        with self.exclusive() as acquired:
            if not acquired:
                self.stdout.write("Another prune_alarms run is in progress: nothing done.")
                return
            if options["dry_run"]:
                counts = self.count(cutoff, journal_cutoff)
                verb = "Would delete"
            else:
                counts = self.prune(cutoff, journal_cutoff, batch)
                verb = "Deleted"
        alarms, translations, receipts, rows = counts
        if self.verbosity >= 1:
            self.stdout.write(
                f"{verb} {plural(alarms, 'alarm')} ({plural(translations, 'translation')}, "
                f"{plural(receipts, 'receipt')}) and {plural(rows, 'journal row')}."
            )

    def note(self, message: str) -> None:
        if self.verbosity >= 2:
            self.stdout.write(message)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """On PostgreSQL, one run at a time; a second one is told so and stops."""
        connection = connections[self.alias]
        if connection.vendor != "postgresql":
            # SQLite: each batch takes the write lock first (see batch()), so runs
            # side by side wait for each other's batches instead of failing.
            yield True
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])

    # -- what goes -----------------------------------------------------------

    def ended(self, cutoff: datetime) -> QuerySet[Alarm]:
        # Ended before the cutoff: a live or scheduled alarm has neither time set
        # in the past, and an alarm that ended recently has them after the cutoff.
        return Alarm.objects.using(self.alias).filter(
            Q(withdrawn_at__lt=cutoff) | Q(expires_at__lt=cutoff)
        )

    def journal_boundary(self, cutoff: datetime) -> int | None:
        """Journal rows below this id go: the oldest row kept, or the newest row.

        Only a prefix of the journal is ever deleted, so "older than the first row
        kept" is exactly "pruned" when a stream resumes (``Reads.missed_many`` then falls
        back to a snapshot). The newest row always stays: with none left, a broker
        starting afresh would number from zero and a resume could not tell that
        rows had gone.
        """
        journal = AlarmChange.objects.using(self.alias).order_by("id").values_list("id", flat=True)
        kept = journal.filter(created_at__gte=cutoff).first()
        return kept if kept is not None else journal.last()

    def count(
        self, cutoff: datetime | None, journal_cutoff: datetime | None
    ) -> tuple[int, int, int, int]:
        alarms = translations = receipts = rows = 0
        if cutoff is not None:
            ended = self.ended(cutoff)
            alarms = ended.count()
            ids = ended.values("pk")
            db = AlarmTranslation.objects.using(self.alias)
            translations = db.filter(alarm__in=ids).count()
            receipts = AlarmReceipt.objects.using(self.alias).filter(alarm__in=ids).count()
        if journal_cutoff is not None:
            boundary = self.journal_boundary(journal_cutoff)
            if boundary is not None:
                rows = AlarmChange.objects.using(self.alias).filter(id__lt=boundary).count()
        return alarms, translations, receipts, rows

    # -- deleting ------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One short transaction, holding the write lock from its first statement."""
        connection = connections[self.alias]
        with transaction.atomic(using=self.alias):
            if connection.vendor == "sqlite":
                # Without it a concurrent run's commit between this batch's read and
                # its first delete fails the delete ("database is locked").
                table = connection.ops.quote_name(Alarm._meta.db_table)
                with connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {table} SET id = id WHERE 0 = 1")
            yield

    def prune(
        self, cutoff: datetime | None, journal_cutoff: datetime | None, size: int
    ) -> tuple[int, int, int, int]:
        alarms = translations = receipts = rows = 0
        using = self.alias
        while cutoff is not None:
            with self.batch():
                ids = list(self.ended(cutoff).order_by("pk").values_list("pk", flat=True)[:size])
                if not ids:
                    break
                # Raw deletes: the journal's delete receivers would write a row
                # per alarm and translation (see the module docstring).
                receipts += AlarmReceipt.objects.filter(alarm_id__in=ids)._raw_delete(using)
                translations += AlarmTranslation.objects.filter(alarm_id__in=ids)._raw_delete(using)
                for through in (Alarm.users.through, Alarm.groups.through):
                    through.objects.filter(alarm_id__in=ids)._raw_delete(using)
                alarms += Alarm.objects.filter(pk__in=ids)._raw_delete(using)
            self.note(f"  {plural(alarms, 'alarm')} so far")
            if len(ids) < size:
                break
        boundary = self.journal_boundary(journal_cutoff) if journal_cutoff is not None else None
        while boundary is not None:
            with self.batch():
                journal = AlarmChange.objects.using(using).filter(id__lt=boundary)
                ids = list(journal.order_by("id").values_list("id", flat=True)[:size])
                if ids:
                    rows += journal.filter(id__lte=ids[-1]).delete()[0]
            self.note(f"  {plural(rows, 'journal row')} so far")
            if len(ids) < size:
                break
        return alarms, translations, receipts, rows

"""``manage.py withdraw_alarm``: take alarms down now, by id or external id."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from alarms import api
from alarms.management.commands.send_alarm import alarm_json
from alarms.models import Alarm


class Command(BaseCommand):
    help = (
        "Withdraw alarms now, by id or --external-id: open pages remove them. An alarm "
        "already withdrawn is left as it is. Exits non-zero if an alarm is not found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, metavar="ID")
        parser.add_argument(
            "--external-id", action="append", default=[], metavar="KEY", help="Repeatable."
        )
        parser.add_argument("--json", action="store_true", help="Print one line of JSON per alarm.")

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[int] = options["ids"]
        keys: list[str] = options["external_id"]
        if not ids and not keys:
            raise CommandError("Give at least one alarm id or --external-id.")
        alarms = list(Alarm.objects.filter(Q(pk__in=ids) | Q(external_id__in=keys)))
        missing = [str(i) for i in ids if i not in {a.pk for a in alarms}]
        missing += [repr(k) for k in keys if k not in {a.external_id for a in alarms}]
        if missing:
            raise CommandError(f"No alarm {', '.join(missing)}: nothing was withdrawn.")
        before = {a.pk: a.withdrawn_at for a in alarms}
        api.withdraw(alarms)
        for alarm in Alarm.objects.filter(pk__in=before).order_by("pk"):
            now_withdrawn = before[alarm.pk] is None
            if options["json"]:
                self.stdout.write(alarm_json(alarm, withdrawn_now=now_withdrawn))
            elif now_withdrawn:
                self.stdout.write(f"Withdrew alarm {alarm.pk}.")
            else:
                self.stdout.write(f"Alarm {alarm.pk} was already withdrawn.")

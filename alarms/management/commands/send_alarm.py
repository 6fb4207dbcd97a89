"""``manage.py send_alarm``: a thin wrapper over ``alarms.api.publish``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from alarms import api
from alarms.models import Alarm, Audience, Level


def parse_datetime(value: str, option: str = "--publish-at") -> datetime:
    """ISO 8601; a time without an offset is read in the current time zone."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date and time "
            "(for example 2030-01-31T09:00 or 2030-01-31T09:00:00+09:00)."
        ) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def alarm_json(alarm: Alarm, **extra: Any) -> str:
    """One line of JSON about ``alarm``, for scripts (``--json``)."""
    return json.dumps(
        {
            "id": alarm.pk,
            "status": alarm.status,
            "level": alarm.level,
            "audience": alarm.audience,
            "external_id": alarm.external_id,
            "publish_at": alarm.publish_at.isoformat(),
            "expires_at": alarm.expires_at.isoformat() if alarm.expires_at else None,
            "withdrawn_at": alarm.withdrawn_at.isoformat() if alarm.withdrawn_at else None,
            **extra,
        },
        ensure_ascii=False,
    )


class Command(BaseCommand):
    help = (
        "Send an alarm now (or at --publish-at) and print its id. Give one --translation per "
        "language; the default language is required. With --external-id, a second send "
        "with the same id updates that alarm instead of making another."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--translation",
            nargs=3,
            action="append",
            default=[],
            metavar=("LANG", "TITLE", "MESSAGE"),
            help="A language code of LANGUAGES, a title and a message. Repeat per language.",
        )
        parser.add_argument("--level", default=Level.INFO, help=f"One of {', '.join(Level)}.")
        parser.add_argument(
            "--audience",
            default=None,
            help=f"One of {', '.join(Audience)}. Default: selected when --user or --group "
            "is given, else authenticated.",
        )
        parser.add_argument(
            "--user", action="append", default=[], metavar="USERNAME", help="Repeatable."
        )
        parser.add_argument(
            "--group", action="append", default=[], metavar="NAME", help="Repeatable."
        )
        parser.add_argument("--url", default="", help="An http(s) address or a path on this site.")
        parser.add_argument(
            "--publish-at",
            default=None,
            metavar="DATETIME",
            help="ISO 8601; without an offset, in the current time zone. Default: now.",
        )
        parser.add_argument(
            "--expires-in",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Seconds after publication at which the alarm expires.",
        )
        parser.add_argument(
            "--expires-at",
            default=None,
            metavar="DATETIME",
            help="ISO 8601; without an offset, in the current time zone.",
        )
        parser.add_argument(
            "--external-id",
            default=None,
            metavar="KEY",
            help="Your key for this alarm: sending again with it updates the same alarm.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check everything (storm control included) and write nothing.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one line of JSON (id, status, created, changed, ...) instead of the id.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["translation"]:
            raise CommandError("Give at least one --translation LANG TITLE MESSAGE.")
        translations: dict[str, dict[str, str]] = {}
        for code, title, message in options["translation"]:
            if code in translations:
                raise CommandError(f"--translation {code!r} is given twice.")
            translations[code] = {"title": title, "message": message}

        publish_at = parse_datetime(options["publish_at"]) if options["publish_at"] else None
        expires_at = None
        if options["expires_in"] is not None and options["expires_at"] is not None:
            raise CommandError("Give --expires-in or --expires-at, not both.")
        if options["expires_at"] is not None:
            expires_at = parse_datetime(options["expires_at"], "--expires-at")
        if options["expires_in"] is not None:
            if options["expires_in"] <= 0:
                raise CommandError("--expires-in must be a positive number of seconds.")
            publish_at = publish_at or timezone.now()
            expires_at = publish_at + timedelta(seconds=options["expires_in"])

        try:
            result = api.publish(
                translations,
                level=options["level"],
                audience=options["audience"],
                users=self._users(options["user"]),
                groups=options["group"],
                url=options["url"],
                publish_at=publish_at,
                expires_at=expires_at,
                external_id=options["external_id"],
                dry_run=options["dry_run"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        alarm = result.alarm
        if options["json"]:
            self.stdout.write(
                alarm_json(
                    alarm,
                    created=result.created,
                    changed=result.changed,
                    dry_run=options["dry_run"],
                )
            )
        elif options["dry_run"]:
            verb = "create a new alarm" if result.created else f"update alarm {alarm.pk}"
            if not result.changed:
                verb = f"leave alarm {alarm.pk} as it is (nothing differs)"
            self.stdout.write(
                f"Dry run: all checks passed; this would {verb}. Nothing was written."
            )
        else:
            # The id alone, so scripts can capture it.
            self.stdout.write(str(alarm.pk))

    def _users(self, usernames: list[str]) -> list[Any]:
        User = get_user_model()
        field = User.USERNAME_FIELD
        found = {getattr(u, field): u for u in User.objects.filter(**{f"{field}__in": usernames})}
        missing = [name for name in usernames if name not in found]
        if missing:
            raise CommandError(f"Unknown user(s): {', '.join(missing)}.")
        return list(found.values())

"""``manage.py create_alarm_token``: a thin wrapper over ``alarms.tokens.create_token``."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from alarms import tokens
from alarms.management.commands.send_alarm import parse_datetime
from alarms.models import AlarmToken, Audience, TokenScope


class Command(BaseCommand):
    help = (
        "Make a token for the HTTP API and the webhooks and print its secret, once: only "
        "a digest of it is kept. Revoke tokens in the admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A name of your choosing, unique: who or what uses it.")
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            choices=TokenScope.values,
            help="Repeatable. Default: publish.",
        )
        parser.add_argument(
            "--expires-at",
            default=None,
            metavar="DATETIME",
            help="ISO 8601; without an offset, in the current time zone. Default: never.",
        )
        parser.add_argument(
            "--audience",
            default=Audience.AUTHENTICATED,
            choices=Audience.values,
            help="Of the alarms it sends that name none (the webhooks). Default: authenticated.",
        )
        parser.add_argument(
            "--group",
            action="append",
            default=[],
            metavar="NAME",
            help="Repeatable: the groups of the default audience selected.",
        )
        parser.add_argument(
            "--storm-limit",
            type=int,
            default=None,
            metavar="N",
            help="Alarms it may send per STORM_WINDOW. Default: STORM_LIMIT.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one line of JSON (name, prefix, scopes, secret, ...).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"].strip()
        if not name:
            raise CommandError("Give the token a name.")
        if AlarmToken.objects.filter(name=name).exists():
            raise CommandError(f"A token named {name!r} exists already.")
        groups = list(Group.objects.filter(name__in=options["group"]))
        missing = sorted(set(options["group"]) - {g.name for g in groups})
        if missing:
            raise CommandError(f"Unknown group(s): {', '.join(missing)}.")
        if options["audience"] == Audience.SELECTED and not groups:
            raise CommandError("The audience selected needs at least one --group.")
        if options["storm_limit"] is not None and options["storm_limit"] < 0:
            raise CommandError("--storm-limit must be 0 or more.")
        expires_at = (
            parse_datetime(options["expires_at"], "--expires-at") if options["expires_at"] else None
        )
        try:
            token, secret = tokens.create_token(
                name,
                scopes=options["scope"] or [TokenScope.PUBLISH],
                audience=options["audience"],
                groups=groups,
                storm_limit=options["storm_limit"],
                expires_at=expires_at,
            )
        except (ValueError, IntegrityError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "name": token.name,
                        "prefix": token.prefix,
                        "scopes": token.scopes.split(),
                        "audience": token.audience,
                        "groups": sorted(g.name for g in groups),
                        "storm_limit": token.storm_limit,
                        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
                        "secret": secret,
                    },
                    ensure_ascii=False,
                )
            )
            return
        self.stdout.write(secret)
        # The note on stderr, so that `SECRET=$(manage.py create_alarm_token ...)` takes the
        # secret alone.
        self.stderr.write(
            f"Token {token.name!r} ({', '.join(token.scopes.split())}): the secret above is "
            "shown this once; only a digest of it is kept."
        )

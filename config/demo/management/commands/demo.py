"""``manage.py demo``: the demo's users, groups and sample alarms, and their logins. Idempotent.

A command of the demo project, not of the app: a project that installs ``alarms``
gets no users from it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from alarms import api
from alarms.models import AlarmTranslation
from config.demo.data import GROUPS, OPERATOR, PASSWORD, SAMPLES, SITE, USERS


class Command(BaseCommand):
    help = (
        "Create demo users, groups and sample alarms, and print the logins. Safe to run again: "
        "what exists is left alone. Run `migrate` first."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        tables = set(connection.introspection.table_names())
        if not {"alarms_alarm", "auth_user"} <= tables:
            raise CommandError("The database is not set up: run `manage.py migrate` first.")
        with transaction.atomic():
            users, created_users = self._users()
            created_alarms = self._alarms(users)
        self._report(created_users, created_alarms)

    def _users(self) -> tuple[dict[str, Any], list[str]]:
        User = get_user_model()
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in GROUPS}
        users: dict[str, Any] = {}
        created: list[str] = []
        operator = User.objects.filter(username=OPERATOR).first()
        if operator is None:
            operator = User.objects.create_superuser(OPERATOR, "operator@example.com", PASSWORD)
            created.append(OPERATOR)
        users[OPERATOR] = operator
        for username, (_language, group_names) in USERS.items():
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User.objects.create_user(
                    username, f"{username}@example.com", PASSWORD, first_name=username.title()
                )
                user.groups.set([groups[name] for name in group_names])
                created.append(username)
            users[username] = user
        return users, created

    def _alarms(self, users: dict[str, Any]) -> list[str]:
        now = timezone.now()
        created: list[str] = []
        for sample in SAMPLES:
            title = sample.text["en"][0]
            # The English title names a sample: an existing one is left as it is.
            if AlarmTranslation.objects.filter(language_code="en", title=title).exists():
                continue
            publish_at = now + sample.publish_in
            alarm = api.send_alarm(
                {code: {"title": t, "message": m} for code, (t, m) in sample.text.items()},
                level=sample.level,
                audience=sample.audience,
                users=[users[name] for name in sample.users],
                groups=sample.groups,
                url=sample.url,
                publish_at=publish_at,
                expires_at=publish_at + sample.expires_in if sample.expires_in else None,
                created_by=users[OPERATOR],
            )
            if sample.withdrawn:
                api.withdraw([alarm])
            created.append(title)
        return created

    def _report(self, created_users: list[str], created_alarms: list[str]) -> None:
        out = self.stdout.write
        if created_users or created_alarms:
            out(
                self.style.SUCCESS(
                    f"Demo data: {len(created_users)} user(s) and {len(created_alarms)} "
                    "alarm(s) created."
                )
            )
        else:
            out(self.style.SUCCESS("Demo data already in place: nothing changed."))
        out("")
        out(f"Admin (author alarms):  {SITE}/admin/")
        out(f"  {OPERATOR:<9} password: {PASSWORD}   (superuser)")
        out(f"Sign in (see toasts):   {SITE}/accounts/login/")
        for username, (language, groups) in USERS.items():
            member = f", groups: {', '.join(groups)}" if groups else ""
            out(f"  {username:<9} password: {PASSWORD}   reads {language}{member}")
        out("")
        out(
            "Pick the reading language with the site's language menu (or the browser's). "
            "Users created earlier keep the password they had."
        )

"""Storm control: at most ``STORM_LIMIT`` alarms to one audience in any ``STORM_WINDOW``.

What counts as one audience:

- "everyone", "authenticated" and "staff" are each one audience, by kind. The kinds
  overlap (an alarm for everyone reaches signed-in users too) but are counted apart:
  the cap is against an operator flooding by accident, usually by repeating one send.
- "selected" is one audience per exact set of users and set of groups. Two selections
  that overlap but differ are counted apart, so a user in both may receive up to the
  cap from each: a simplification that keeps the rule one cheap query instead of an
  expansion of every group into its members.

An alarm is counted at its publication: ``publish_at``, or its creation when
``publish_at`` was in the past then (a back-dated alarm goes out when it is saved).
Withdrawn alarms do not count, and an alarm already expired when it is written reaches
nobody, so it is not checked. The window slides: every ``STORM_WINDOW`` seconds that
contain the new publication are looked at, so alarms scheduled just after it count as
much as those sent just before.

:func:`check` must run in the transaction that then inserts the alarm, so that two
simultaneous senders cannot both see room for one more. On PostgreSQL it takes one
transaction-scoped advisory lock (``journal.ADVISORY_LOCK_KEY``) for every checked
send, held to its commit: journal writes themselves take no lock, so this serialises
only the sends storm control counts, and one lock rather than one per audience keeps
a transaction that sends to two audiences from deadlocking against one that sends to
one of them. On SQLite it
takes the write lock up front, so a second sender waits for the first to commit and
then counts its alarm, instead of failing on a stale read.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connections, router
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from alarms import journal
from alarms.conf import get_config
from alarms.models import Alarm, AlarmToken, Audience

__all__ = ["StormLimitExceeded", "check", "sent_in_window"]


class StormLimitExceeded(ValueError):
    """Sending this alarm would put more than ``STORM_LIMIT`` alarms in one window."""

    def __init__(
        self,
        *,
        count: int,
        limit: int,
        window: float,
        next_at: datetime | None,
        token: str | None = None,
    ) -> None:
        self.count = count
        self.limit = limit
        self.window = window
        self.next_at = next_at
        #: The name of the token whose own limit refused the alarm; None when the
        #: audience's limit did.
        self.token = token
        super().__init__(self.describe())

    def describe(self) -> str:
        window = _seconds(self.window)
        values = {"count": self.count, "window": window, "limit": self.limit}
        if self.token is None:
            sent = (
                ngettext(
                    "Storm control: %(count)d alarm to this audience is already published within "
                    "%(window)s seconds of this one, and the limit is %(limit)d.",
                    "Storm control: %(count)d alarms to this audience are already published within "
                    "%(window)s seconds of this one, and the limit is %(limit)d.",
                    self.count,
                )
                % values
            )
        else:
            sent = ngettext(
                "Storm control: %(count)d alarm sent with the token “%(token)s” is already "
                "published within %(window)s seconds of this one, and the token's limit is "
                "%(limit)d.",
                "Storm control: %(count)d alarms sent with the token “%(token)s” are already "
                "published within %(window)s seconds of this one, and the token's limit is "
                "%(limit)d.",
                self.count,
            ) % {**values, "token": self.token}
        if self.next_at is None:
            when = gettext("With a limit of %(limit)d no alarm may be sent.") % {
                "limit": self.limit
            }
        else:
            # Rounded up to the second: trying again at the time shown succeeds.
            at = self.next_at
            if at.microsecond:
                at = at.replace(microsecond=0) + timedelta(seconds=1)
            local = timezone.localtime(at).isoformat(sep=" ")
            wait = math.ceil((at - timezone.now()).total_seconds())
            if wait > 0:
                when = ngettext(
                    "The next one may be published at %(time)s (in %(wait)d second).",
                    "The next one may be published at %(time)s (in %(wait)d seconds).",
                    wait,
                ) % {"time": local, "wait": wait}
            else:
                when = gettext("The next one may be published at %(time)s.") % {"time": local}
        if self.token is None:
            setting = gettext(
                'To allow more, raise ALARMS["STORM_LIMIT"] or shorten ALARMS["STORM_WINDOW"] '
                "(a STORM_LIMIT of None turns storm control off)."
            )
        else:
            setting = gettext("To allow more, raise the token's storm limit in the admin.")
        return f"{sent} {when} {setting}"


def sent_in_window(
    audience: str,
    *,
    at: datetime,
    user_ids: Iterable[int] = (),
    group_ids: Iterable[int] = (),
    exclude: int | None = None,
    using: str | None = None,
) -> int:
    """Alarms to this audience published in the busiest ``STORM_WINDOW`` that contains ``at``.

    ``user_ids`` and ``group_ids`` name the audience "selected"; ``exclude`` is the
    alarm being edited, which must not count against itself.
    """
    window = _window()
    times = _publications(
        audience,
        frozenset(user_ids),
        frozenset(group_ids),
        after=at - window,
        before=at + window,
        exclude=exclude,
        using=using or router.db_for_write(Alarm),
    )
    return _busiest(times, at, window)


def check(
    audience: str,
    *,
    publish_at: datetime,
    expires_at: datetime | None = None,
    user_ids: Iterable[int] = (),
    group_ids: Iterable[int] = (),
    exclude: int | None = None,
    token: AlarmToken | None = None,
    using: str | None = None,
) -> None:
    """Raise :class:`StormLimitExceeded` if this alarm would exceed ``STORM_LIMIT``,
    or, sent with ``token``, the token's own ``storm_limit`` (default ``STORM_LIMIT``)
    for every alarm that token sent, whatever their audiences.

    Call it inside the transaction (on ``using``, by default ``ALARMS["DATABASE"]``)
    that then writes the alarm: the lock it takes is held until that commit.
    """
    config = get_config()
    limit = config["STORM_LIMIT"]
    token_limit = limit if token is None or token.storm_limit is None else token.storm_limit
    if limit is None and (token is None or token_limit is None):
        return
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        return
    # The lock must be the one the alarm's journal row takes: on the database
    # (and connection) the alarm is written to.
    using = using or router.db_for_write(Alarm)
    at = max(publish_at, now)
    window = _window()
    _serialise(using)
    checks: list[tuple[int, Any, str | None]] = []
    if limit is not None:
        users, groups = frozenset(user_ids), frozenset(group_ids)
        checks.append(
            (int(limit), partial(_publications, audience, users, groups, exclude=exclude), None)
        )
    if token is not None and token_limit is not None:
        checks.append(
            (
                int(token_limit),
                partial(_token_publications, token.pk, exclude=exclude),
                token.name,
            )
        )
    for cap, publications, token_name in checks:
        times = publications(after=at - window, before=at + window, using=using)
        count = _busiest(times, at, window)
        if count < cap:
            continue
        # Everything from the window's start on, scheduled alarms included: the next
        # free time may lie beyond several of them.
        later = publications(after=at - window, before=None, using=using)
        raise StormLimitExceeded(
            count=count,
            limit=cap,
            window=window.total_seconds(),
            next_at=_next_free(later, at, window, cap),
            token=token_name,
        )


def _window() -> timedelta:
    return timedelta(seconds=float(get_config()["STORM_WINDOW"]))


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _serialise(using: str) -> None:
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [journal.ADVISORY_LOCK_KEY])
        elif connection.vendor == "sqlite":
            # A write that changes nothing still takes the database's write lock,
            # which then lasts until this transaction ends.
            table = connection.ops.quote_name(Alarm._meta.db_table)
            cursor.execute(f"UPDATE {table} SET id = id WHERE 0 = 1")


def _sent_times(
    after: datetime, before: datetime | None, exclude: int | None, using: str, **filters: Any
) -> dict[int, datetime]:
    """Publication times of the alarms matching ``filters`` in (``after``, ``before``)."""
    qs = (
        Alarm.objects.using(using)
        .filter(withdrawn_at__isnull=True, **filters)
        .annotate(sent_at=Greatest("publish_at", "created_at"))
        .filter(sent_at__gt=after)
    )
    if before is not None:
        qs = qs.filter(publish_at__lt=before, sent_at__lt=before)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    return dict(qs.order_by().values_list("pk", "sent_at"))


def _token_publications(
    token_id: int, *, after: datetime, before: datetime | None, exclude: int | None, using: str
) -> list[datetime]:
    """Sorted publication times of the alarms one token sent, in (``after``, ``before``)."""
    return sorted(_sent_times(after, before, exclude, using, created_by_token_id=token_id).values())


def _publications(
    audience: str,
    users: frozenset[int],
    groups: frozenset[int],
    *,
    after: datetime,
    before: datetime | None,
    exclude: int | None,
    using: str,
) -> list[datetime]:
    """Sorted publication times of the audience's alarms in (``after``, ``before``)."""
    times = _sent_times(after, before, exclude, using, audience=audience)
    if audience == Audience.SELECTED and times:
        targets: dict[int, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
        for alarm_id, user_id in (
            Alarm.users.through.objects.using(using)
            .filter(alarm_id__in=times)
            .values_list("alarm_id", "user_id")
        ):
            targets[alarm_id][0].add(user_id)
        for alarm_id, group_id in (
            Alarm.groups.through.objects.using(using)
            .filter(alarm_id__in=times)
            .values_list("alarm_id", "group_id")
        ):
            targets[alarm_id][1].add(group_id)
        times = {
            pk: t for pk, t in times.items() if targets[pk][0] == users and targets[pk][1] == groups
        }
    return sorted(times.values())


def _busiest(times: Sequence[datetime], at: datetime, window: timedelta) -> int:
    """The most of ``times`` in one window (e - window, e] that also contains ``at``.

    Such a window holds the most when it ends at ``at`` or at one of the times
    after ``at``, so only those ends need counting.
    """
    ends = [at, *(t for t in times if at < t < at + window)]
    return max(bisect_right(times, e) - bisect_right(times, e - window) for e in ends)


def _next_free(
    times: Sequence[datetime], at: datetime, window: timedelta, limit: int
) -> datetime | None:
    """The earliest time from ``at`` on at which one more alarm stays within ``limit``.

    Room only appears when a time leaves the window, at ``t + window``; past the
    last time there is always room, so the search ends.
    """
    if limit < 1:
        return None
    for candidate in sorted({at, *(t + window for t in times if t + window > at)}):
        if _busiest(times, candidate, window) < limit:
            return candidate
    return None

"""``manage.py escalate_alarms``: email the alarms left unseen (``ALARMS["ESCALATE"]``).

One pass by default, for a cron job or a systemd timer; ``--loop SECONDS`` runs
passes until SIGTERM or SIGINT, as a service. Any number of runs may go side by
side, on any number of hosts: each email is claimed in the database first
(``alarms.escalation``). A stop ends the pass between two emails.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from alarms.conf import escalate_config
from alarms.escalation import EscalationError, Escalator, PassResult


class Command(BaseCommand):
    help = (
        'Email the live alarms of ALARMS["ESCALATE"]["LEVELS"] that a targeted user has not '
        "seen AFTER minutes after publication, once per alarm and user, at most BATCH per "
        "pass. Safe to run from several processes at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Run a pass every SECONDS until stopped (SIGTERM, SIGINT) instead of once.",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help='Emails per pass at most. Default: ALARMS["ESCALATE"]["BATCH"].',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = escalate_config()
        if config is None:
            raise CommandError('Escalation is off: set ALARMS["ESCALATE"] (docs/escalation.md).')
        loop: float | None = options["loop"]
        limit: int | None = options["limit"]
        if loop is not None and loop <= 0:
            raise CommandError(f"--loop must be a number of seconds above 0, not {loop}.")
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be 1 or more, not {limit}.")
        stop = threading.Event()
        # `kill -USR1 <pid>` prints every thread's stack to stderr: where a pass
        # that seems stuck waits (the database, the mail server).
        try:
            faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
            dumps = True
        except (AttributeError, OSError, ValueError):  # no real stderr (call_command)
            dumps = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        escalator = Escalator(config, stop=stop)
        try:
            while True:
                try:
                    result = escalator.run_once(limit)
                except EscalationError as exc:
                    if loop is None:
                        raise CommandError(str(exc)) from exc
                    self.stderr.write(str(exc))
                    result = PassResult()
                except OSError as exc:  # the mail server cannot be reached
                    if loop is None:
                        raise CommandError(f"The mail server cannot be reached: {exc}") from exc
                    self.stderr.write(f"The mail server cannot be reached: {exc}")
                    result = PassResult()
                self.report(result, options["verbosity"], loop is not None)
                if loop is None or stop.is_set():
                    break
                # A database restart between passes: a fresh connection for the next.
                close_old_connections()
                full = result.sent + result.failed >= (limit or config["BATCH"])
                if not full:
                    stop.wait(loop)
                if stop.is_set():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if dumps:
                faulthandler.unregister(signal.SIGUSR1)

    def report(self, result: PassResult, verbosity: int, looping: bool) -> None:
        if verbosity < 1 or (looping and not (result.sent or result.failed) and verbosity < 2):
            return
        self.stdout.write(
            f"Sent {result.sent} escalation email{'' if result.sent == 1 else 's'}"
            + (f", {result.failed} failed" if result.failed else "")
            + "."
        )
        self.stdout.flush()

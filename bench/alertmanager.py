"""Alertmanager to a toast: time from an alert posted to Alertmanager to its alarm on a stream.

    .venv/bin/python bench/alertmanager.py                            # 20 alerts, SQLite
    .venv/bin/python bench/alertmanager.py --alerts 50
    scripts/postgres .venv/bin/python bench/alertmanager.py           # on PostgreSQL

Runs ``tests/e2e/test_alertmanager.py::test_each_alert_reaches_the_stream`` with
``ALARMS_ALERTMANAGER_TRIES`` set: one daphne process, one signed-in stream, and a
real Alertmanager (Debian's ``prometheus-alertmanager``) on docs/alertmanager.yml
with ``group_wait`` 0 s. The alerts are posted to Alertmanager's own API one after
another, each once the previous one has reached the stream, each its own group;
the post and the stream are timed in the test's process, on one clock. It prints
the median and the maximum. In production ``group_wait`` (docs/alertmanager.yml:
10 s) comes on top. DATABASE_URL picks the database; without it, SQLite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import run_test

TEST = "tests/e2e/test_alertmanager.py::test_each_alert_reaches_the_stream"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=20, help="default: %(default)s")
    args = parser.parse_args()
    run_test(TEST, ALARMS_ALERTMANAGER_TRIES=str(args.alerts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

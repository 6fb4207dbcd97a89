"""Access changes to an open stream: time from the commit to the stream's change.

    scripts/postgres .venv/bin/python bench/access.py             # 20 tries
    scripts/postgres .venv/bin/python bench/access.py --tries 50

Runs ``tests/e2e/test_access.py::test_each_change_reaches_the_stream_every_time``
with ``ALARMS_ACCESS_TRIES`` set: one daphne process, one signed-in stream, and
per try a group added and removed, the staff flag given and taken (each must
send the stream the alarm or the retract it now calls for), and a session
flushed under a stream of its own (which must end). The commit is made in the
test's process, the stream read there too, on one clock; it prints the median
and the maximum per change. DATABASE_URL picks the database (scripts/postgres
gives a throwaway PostgreSQL); without it the run is on SQLite, where the
broker polls every ``POLL_INTERVAL``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import run_test

TEST = "tests/e2e/test_access.py::test_each_change_reaches_the_stream_every_time"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20, help="default: %(default)s")
    args = parser.parse_args()
    run_test(TEST, ALARMS_ACCESS_TRIES=str(args.tries))
    return 0


if __name__ == "__main__":
    sys.exit(main())

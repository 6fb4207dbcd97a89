"""Connect/disconnect cycles at soak size: 100,000 streams opened, read and dropped.

    scripts/postgres .venv/bin/python bench/cycles.py             # 100,000 cycles
    scripts/postgres .venv/bin/python bench/cycles.py --cycles 20000

The test suite runs the same end-to-end test at CI size (a few thousand cycles,
``tests/e2e/test_faults.py::test_connect_disconnect_cycles_leave_nothing_behind``):
one daphne process, 32 concurrent clients from 16 loopback addresses, a mix of
anonymous, signed-in and resuming (``Last-Event-ID``) connects in four
languages, a quarter of them reset rather than closed. This runs it with
``ALARMS_CYCLES`` set, so the figures come from the code the suite checks, and
prints its line: cycles per second, server and client CPU per cycle, the RSS
slope per 1,000 cycles with the RSS after each batch, and the threads and
database connections before and after. The test's assertions hold at this size
too: a failure here is a failure.

DATABASE_URL picks the database (scripts/postgres gives a throwaway
PostgreSQL); without it the run is on SQLite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import run_test

TEST = "tests/e2e/test_faults.py::test_connect_disconnect_cycles_leave_nothing_behind"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000, help="default: %(default)s")
    args = parser.parse_args()
    run_test(TEST, ALARMS_CYCLES=str(args.cycles))
    return 0


if __name__ == "__main__":
    sys.exit(main())

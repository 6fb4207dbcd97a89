"""A flood of resuming connects beside an open stream: does delivery wait behind them?

    scripts/postgres .venv/bin/python bench/flood.py              # 1,000 connects
    scripts/postgres .venv/bin/python bench/flood.py --connects 3000

Runs ``tests/e2e/test_resume.py::test_a_connect_flood_does_not_hold_back_delivery``
with ``ALARMS_FLOOD`` set: one daphne process, one open stream; three alarms
are timed from commit to that stream while nothing else happens, then three
more while N clients resume at once, each with a Last-Event-ID that makes the
server read the journal for it in the broker's database thread. It prints the
median delivery time in both cases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import run_test

TEST = "tests/e2e/test_resume.py::test_a_connect_flood_does_not_hold_back_delivery"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=1000, help="default: %(default)s")
    args = parser.parse_args()
    run_test(TEST, ALARMS_FLOOD=str(args.connects))
    return 0


if __name__ == "__main__":
    sys.exit(main())

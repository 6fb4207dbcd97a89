"""Run one of the suite's end-to-end tests at benchmark size (bench/cycles.py, bench/access.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_test(test: str, **environment: str) -> None:
    """Replace this process with pytest running ``test``, its output shown as it comes."""
    os.environ.update(environment)
    os.chdir(ROOT)
    command = [sys.executable, "-m", "pytest", test, "-s", "-q", "-p", "no:cacheprovider"]
    os.execv(sys.executable, command)

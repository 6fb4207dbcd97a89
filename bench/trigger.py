"""Publish one alarm for everyone and print the commit time (BENCH_TS=...) for the load client."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django

django.setup()

from alarms import api  # noqa: E402

token = sys.argv[1]
api.send_alarm(
    {
        "en": {"title": f"Bench {token}", "message": "Load test"},
        "ko": {"title": f"벤치 {token}", "message": "부하 시험"},
        "ja": {"title": f"ベンチ {token}", "message": "負荷試験"},
    },
    audience="everyone",
)
print(f"BENCH_TS={time.time():.6f}", flush=True)

"""``GET /alarms/health/``: can this process deliver alarms? For monitors and load balancers.

Answers ``{"status": "ok" | "degraded" | "down", "checks": {...}}``, 200 when ok
and 503 otherwise, so a load balancer can take the process out of rotation.
"down": the database cannot be reached, or the broker does not run or is shutting
down, so no alarm reaches anyone through this process. "degraded": alarms are late
or new streams are refused (the PostgreSQL listener is disconnected, journal rows
stay unread for more than a few seconds, the process holds ``MAX_STREAMS`` streams).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from alarms.broker import get_broker
from alarms.broker.base import BaseBroker
from alarms.views.access import refusal

# Seconds a check may take before it counts as failed: a health check must answer
# even when the database hangs.
DB_TIMEOUT = 3.0
START_TIMEOUT = 5.0
# Seconds a journal row may stay unread before delivery counts as late. MemoryBroker
# only polls for other processes' writes, so its interval is allowed on top.
LAG_LIMIT = 5.0

# Checks without which no alarm is delivered at all.
ESSENTIAL = ("database", "broker")


@never_cache
@require_GET
async def health(request: HttpRequest) -> HttpResponse:
    if refused := await refusal(request):
        return refused
    broker = get_broker()
    checks: dict[str, dict[str, Any]] = {"broker": await start_broker(broker)}
    checks["database"], checks["journal"] = await _database(broker)
    checks.update(broker.health())
    max_streams = int(broker.config["MAX_STREAMS"])
    checks["streams"] = {
        "ok": len(broker.subscribers) < max_streams,
        "open": len(broker.subscribers),
        "max": max_streams,
    }
    if any(not checks[name]["ok"] for name in ESSENTIAL):
        status = "down"
    elif all(check["ok"] for check in checks.values()):
        status = "ok"
    else:
        status = "degraded"
    return JsonResponse({"status": status, "checks": checks}, status=200 if status == "ok" else 503)


async def start_broker(broker: BaseBroker) -> dict[str, Any]:
    """Start the broker as a stream would, and say whether its loop runs (health and metrics)."""
    # Shielded: a start that outlasts the timeout goes on in the background rather
    # than being cancelled half-way, and the next check sees how it ended.
    starting = asyncio.ensure_future(broker.ensure_started())
    starting.add_done_callback(_retrieve)
    error = None
    try:
        await asyncio.wait_for(asyncio.shield(starting), START_TIMEOUT)
    except TimeoutError:
        error = f"not started within {START_TIMEOUT:g} s"
    except Exception as exc:
        error = f"failed to start: {exc}"
    running = broker.running
    result: dict[str, Any] = {
        "ok": running and not broker.shutting_down,
        "running": running,
        "shutting_down": broker.shutting_down,
        "class": type(broker).__name__,
    }
    if error:
        result["error"] = error
    return result


def _retrieve(task: asyncio.Future[None]) -> None:
    # A start that failed after the timeout is reported by the next check; this
    # only keeps asyncio from logging its exception as never retrieved.
    if not task.cancelled():
        task.exception()


def _probe(alias: str, head: int) -> tuple[float, int, int | None, datetime | None]:
    """In a broker thread: a round trip, the journal's last row, the first one past ``head``."""
    from alarms.models import AlarmChange

    started = time.perf_counter()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    elapsed = (time.perf_counter() - started) * 1000
    journal = AlarmChange.objects.using(alias)
    latest = journal.order_by("-id").values_list("id", flat=True).first() or 0
    first_unread = journal.filter(id__gt=head).order_by("id").values_list("id", "created_at")
    unread_id, unread_at = first_unread.first() or (None, None)
    return elapsed, latest, unread_id, unread_at


async def _database(broker: BaseBroker) -> tuple[dict[str, Any], dict[str, Any]]:
    head = broker.head
    try:
        elapsed, latest, unread_id, unread_at = await asyncio.wait_for(
            broker.read_db(_probe, broker.alias, head), DB_TIMEOUT
        )
    except TimeoutError:
        error = f"no answer within {DB_TIMEOUT:g} s"
        return {"ok": False, "error": error}, {"ok": False, "error": error}
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return {"ok": False, "error": error}, {"ok": False, "error": error}
    database = {"ok": True, "alias": broker.alias, "ms": round(elapsed, 1)}
    # The broker may have read on while the probe ran: compare with its head now.
    now_head = broker.head
    age = None
    if unread_id is not None and unread_at is not None and unread_id > now_head:
        age = max(0.0, (timezone.now() - unread_at).total_seconds())
    limit = LAG_LIMIT + broker.poll_interval()
    journal = {
        "ok": age is None or age <= limit,
        "latest": latest,
        "head": now_head,
        "lag": max(0, latest - now_head),
        "oldest_unread_seconds": None if age is None else round(age, 1),
    }
    return database, journal

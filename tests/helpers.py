"""Helpers the test modules share: text builders, waits, the admin's form, metrics parsing.

Test modules import helpers from here (or from a conftest), never from one another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from alarms.models import Alarm, AlarmReceipt, Audience, Level
from tests.factories import TEXT

if TYPE_CHECKING:
    from alarms.broker.base import BaseBroker

# -- a broker of the test's own --------------------------------------------------------


async def with_broker(broker: BaseBroker, test: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """Run ``test(broker)`` with ``broker`` started as this process's broker; then
    stop it, close the connections its threads opened and reset the module."""
    import alarms.broker as broker_module

    broker_module._broker = broker
    try:
        await broker.ensure_started()
        await test(broker)
    finally:
        await broker.stop()
        await sync_to_async(connections.close_all)()
        broker_module.reset_broker()


def run_broker(broker: BaseBroker, test: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """:func:`with_broker` on a fresh event loop."""
    asyncio.run(with_broker(broker, test))


def client_that_stays(body: bytes = b"") -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` for an application driven in-process: the request's
    body, then nothing (the client neither sends more nor goes away)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


# -- alarm text -------------------------------------------------------------------------


def en(title: str, message: str = "Body") -> dict[str, dict[str, str]]:
    """The translations of an English-only alarm."""
    return {"en": {"title": title, "message": message}}


SCRIPT_TITLE = '<script>alert("t")</script>\x07\x1b[31m&amp;\u202e"\'>'
HOSTILE_CORE = (
    "<img src=x onerror=alert(1)></textarea></p>&lt;b&gt;"
    "a\r\nb\rc\nd\u2028e\u2029f\x01\x08\x0b\x0c\x1b\x1f\x7f\x85g"
    "data: forged\n\nevent: retract\nid: 1-1\n\n:comment\r\nretry: 1\n"
)


def hostile_message(length: int = 10_000) -> str:
    """``length`` characters of markup, control characters, line ends and forged SSE
    fields, without leading or trailing whitespace (both forms and the API strip it)."""
    body = (HOSTILE_CORE * (length // len(HOSTILE_CORE) + 1))[: length - 2]
    return f"[{body}]"


# -- waits ------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    page: Any = None,
) -> Any:
    """Poll ``predicate`` until it holds; return its value. The timeout bounds a hang,
    it is no speed claim (CI machines are shared and busy). With a Playwright
    ``page``, the page's events are dispatched meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout:.0f} s")
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)
    return value


async def until(predicate: Callable[[], Any], within: float = 3.0) -> None:
    """:func:`wait_for` on the running event loop (and on its clock)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- the database -------------------------------------------------------------------


def advisory_lock_waiters(key: int | None = None) -> int:
    """PostgreSQL sessions waiting for an advisory lock (``key``: that one only)."""
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    params: list[int] = []
    if key is not None:
        # A bigint key is held as its high and low 32 bits.
        query += " AND ((classid::bigint << 32) | objid::bigint) = %s"
        params.append(key)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


def receipt(user: Any, alarm: Alarm) -> AlarmReceipt | None:
    """``user``'s receipt of ``alarm``, if any."""
    return AlarmReceipt.objects.filter(user=user, alarm=alarm).first()


# -- processes --------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """A process's resident set size, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def thread_count(pid: int) -> int:
    """A process's threads (Linux)."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


# -- the admin ------------------------------------------------------------------------


ADD_URL = reverse("admin:alarms_alarm_add")
LIST_URL = reverse("admin:alarms_alarm_changelist")


def change_url(alarm: Alarm) -> str:
    return reverse("admin:alarms_alarm_change", args=(alarm.pk,))


def form_data(
    translations: list[tuple[str, str, str]] | None = None,
    *,
    alarm: Alarm | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The POST of the change form: alarm fields plus the translations inline formset."""
    if translations is None:
        translations = [(code, *TEXT[code]) for code in ("en", "ko", "ja")]
    data: dict[str, Any] = {
        "level": Level.WARNING,
        "audience": Audience.AUTHENTICATED,
        "url": "",
        "publish_at_0": "2030-01-01",
        "publish_at_1": "09:00:00",
        "expires_at_0": "",
        "expires_at_1": "",
    }
    data.update(fields)
    existing = list(alarm.translations.order_by("pk")) if alarm else []
    rows = [(t.pk, t.language_code, t.title, t.message) for t in existing]
    rows += [(None, *row) for row in translations]
    data.update(
        {
            "translations-TOTAL_FORMS": str(len(rows)),
            "translations-INITIAL_FORMS": str(len(existing)),
            "translations-MIN_NUM_FORMS": "0",
            "translations-MAX_NUM_FORMS": "4",
        }
    )
    for i, (pk, code, title, message) in enumerate(rows):
        data[f"translations-{i}-id"] = pk or ""
        data[f"translations-{i}-alarm"] = alarm.pk if alarm else ""
        data[f"translations-{i}-language_code"] = code
        data[f"translations-{i}-title"] = title
        data[f"translations-{i}-message"] = message
    return data


# -- /alarms/metrics/ ---------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


class ExpositionError(ValueError):
    pass


def parse_metrics(text: str) -> dict[str, tuple[str, dict[Labels, float]]]:
    """The families of a text exposition (format 0.0.4), by name: ``(type, {labels: value})``.

    Lines are parsed by ``prometheus_client``'s parser, which refuses malformed
    names, labels and values but lets much through (it says so itself). The rest
    of what a strict scraper refuses is checked here, for the counters and gauges
    the view writes: every family is its HELP line, its TYPE line and its
    samples, in that order, once; a counter's name ends in ``_total``; no blank
    line, comment or repeated sample; the text ends with one newline.
    Raises :class:`ExpositionError` (a ``ValueError``) on any of it.
    """
    if not text.endswith("\n"):
        raise ExpositionError("the last line has no newline")
    try:
        parsed = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ExpositionError(f"not the text format: {exc}") from exc
    lines = text[:-1].split("\n")
    expected: list[tuple[str, ...]] = []  # for each line, what it may start with
    families: dict[str, tuple[str, dict[Labels, float]]] = {}
    for family in parsed:
        # The parser names a counter's family without "_total", and its samples with it.
        name = f"{family.name}_total" if family.type == "counter" else family.name
        if family.type not in ("counter", "gauge"):
            raise ExpositionError(f"{name}: type {family.type!r}, or a sample outside its family")
        if name in families:
            raise ExpositionError(f"{name} comes back after another family")
        if not family.documentation or not family.samples:
            raise ExpositionError(f"{name}: HELP, TYPE and samples are not all there")
        samples: dict[Labels, float] = {}
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            if sample.name != name or labels in samples or sample.timestamp is not None:
                raise ExpositionError(f"{sample.name}{sample.labels}: not once in {name}")
            samples[labels] = float(sample.value)
        families[name] = (family.type, samples)
        # In either order: had one come twice, the family would lack the other.
        head = (f"# HELP {name} ", f"# TYPE {name} {family.type}")
        expected += [head, head]
        expected += [(f"{name}{{", f"{name} ")] * len(family.samples)
    if len(lines) != len(expected):
        raise ExpositionError(
            f"{len(lines)} lines for {len(expected)}: a blank line, a comment, "
            "or a HELP or TYPE line missing, repeated or after the samples"
        )
    for number, (line, starts) in enumerate(zip(lines, expected, strict=True), 1):
        if not line.startswith(starts):
            raise ExpositionError(
                f"line {number}: {line!r} is not one of {starts} (a counter's name "
                "ends in _total; HELP and TYPE come once each, before the samples)"
            )
    return families


def metric_samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of a strictly valid exposition: ``(name, labels)`` -> value."""
    return {
        (name, labels): value
        for name, (_type, samples) in parse_metrics(text).items()
        for labels, value in samples.items()
    }

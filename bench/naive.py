"""The view we compare against: each stream polls the ORM every second by itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from django.db.models import Max
from django.http import HttpRequest, StreamingHttpResponse

from alarms.models import Alarm, AlarmTranslation


async def naive_stream(request: HttpRequest) -> StreamingHttpResponse:
    async def events() -> AsyncIterator[bytes]:
        last = (await Alarm.objects.aaggregate(m=Max("id")))["m"] or 0
        yield b": open\n\n"
        while True:
            await asyncio.sleep(1)
            rows = AlarmTranslation.objects.filter(alarm_id__gt=last, language_code="en")
            async for t in rows.select_related("alarm"):
                last = max(last, t.alarm_id)
                data = json.dumps({"id": t.alarm_id, "title": t.title, "message": t.message})
                yield f"event: alarm\nid: {t.alarm_id}\ndata: {data}\n\n".encode()

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response

"""The view we compare against: each stream polls the ORM every second by itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import close_old_connections
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
            # Hand the connection back to the pool between polls, as a careful
            # naive view would; otherwise every stream pins one for good.
            await sync_to_async(close_old_connections)()

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response

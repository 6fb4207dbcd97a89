from __future__ import annotations

import asyncio

from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from config.middleware import AsyncWhiteNoiseMiddleware


async def app(request):
    return HttpResponse("from the app")


@override_settings(WHITENOISE_USE_FINDERS=True)  # pytest-django turns DEBUG off
def test_runs_async_in_an_async_stack_and_serves_static_files():
    middleware = AsyncWhiteNoiseMiddleware(app)
    # Django keeps an async request async only if every middleware is.
    assert iscoroutinefunction(middleware)
    factory = RequestFactory()
    passed = asyncio.run(middleware(factory.get("/alarms/stream/")))
    assert passed.content == b"from the app"
    served = asyncio.run(middleware(factory.get("/static/admin/css/base.css")))
    assert served.status_code == 200
    assert served["Content-Type"].startswith("text/css")
    served.close()


def test_still_works_in_a_sync_stack():
    middleware = AsyncWhiteNoiseMiddleware(lambda request: HttpResponse("sync app"))
    assert not iscoroutinefunction(middleware)
    assert middleware(RequestFactory().get("/x")).content == b"sync app"

"""The NinjaAPI of ``/alarms/api/v1/``; ``alarms.urls`` mounts ``api.urls``.

The OpenAPI document is served at ``openapi.json``. No interactive docs page:
ninja's loads its scripts from a CDN, which a strict Content-Security-Policy
refuses; docs/api.md is the guide.
"""

from __future__ import annotations

from ninja import NinjaAPI

from alarms.http_api import endpoints, errors, me

api = NinjaAPI(
    title="django-live-alarms",
    version="1",
    description="Publish, read and withdraw live alarms; read your own. Guide: docs/api.md.",
    openapi_url="/openapi.json",
    docs_url=None,
    urls_namespace="alarms:api",
)
api.add_router("", endpoints.router)
api.add_router("", me.router)
errors.install(api)

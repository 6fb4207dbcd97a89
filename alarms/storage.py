"""Manifest static files storages that also hash the browser client's module imports.

The client (``alarms/alarms.js`` and ``alarms/client/*.js``) is a set of ES
modules that import each other by relative URL. Django's manifest storage
rewrites those URLs to the hashed names only with
``support_js_module_import_aggregation``; without it a hashed module imports
its neighbours by their plain names, which are served without a long cache
lifetime and can belong to another deployment. Use one of these (or set the
attribute on your own subclass) as ``STORAGES["staticfiles"]["BACKEND"]``.
"""

from __future__ import annotations

from django.contrib.staticfiles import storage

__all__ = ["CompressedManifestStaticFilesStorage", "ManifestStaticFilesStorage"]


class ManifestStaticFilesStorage(storage.ManifestStaticFilesStorage):
    """Django's manifest storage, rewriting ``import`` statements of JavaScript modules."""

    support_js_module_import_aggregation = True


try:
    from whitenoise.storage import CompressedManifestStaticFilesStorage as _WhiteNoiseStorage
except ImportError:  # WhiteNoise is optional: only the class below needs it.
    pass
else:
    # WhiteNoise ships no type information, so its class is Any to mypy.
    class CompressedManifestStaticFilesStorage(_WhiteNoiseStorage):  # type: ignore[misc]
        """WhiteNoise's compressing manifest storage, rewriting JavaScript module imports."""

        support_js_module_import_aggregation = True

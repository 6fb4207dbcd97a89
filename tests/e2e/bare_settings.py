"""An end-to-end server's settings in a project with no templates of its own.

As ``server_settings`` (ALARMS from the test), but only the apps' templates are
searched: there is no base.html, as in a project that never wrote one.
"""

from __future__ import annotations

from tests.e2e.server_settings import *  # noqa: F403
from tests.e2e.server_settings import TEMPLATES

TEMPLATES = [{**TEMPLATES[0], "DIRS": []}]

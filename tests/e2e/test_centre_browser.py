"""The alarm centre in a real Chromium against a real daphne: search, filter, page,
mark all as read, and the badge of another open page following it."""

from __future__ import annotations

from typing import Any

import pytest

from alarms.models import AlarmReceipt
from tests.e2e import browser as fixtures
from tests.e2e.browser import signed_in, wait_ready
from tests.factories import ago, make_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.one_django]

browser = fixtures.browser
contexts = fixtures.contexts

# The centre's own context shows no toasts (cancelled, as docs/client.md allows),
# so that none lies over the controls the test clicks.
NO_TOASTS = "document.addEventListener('alarms:received', (e) => e.preventDefault());"


def badge_is(page: Any, count: int) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-alarms-badge]').dataset.count === '{count}'"
    )


def test_search_filter_page_then_mark_all_as_read(
    server: Any, contexts: Any, session_cookie: Any, make_user: Any
) -> None:
    reader = make_user("cleo")
    # Straight to the models: storm control would hold back fifteen sends at once.
    pumps = [
        make_alarm(title=f"Pump {i} pressure", level=level, publish_at=ago(minutes=30 - i))
        for i, level in enumerate(["warning"] * 12 + ["info"] * 2)
    ]
    other = make_alarm(title="Disk full", level="error")
    laptop = signed_in(contexts, server, session_cookie, reader)
    elsewhere = laptop.page("/")
    wait_ready(elsewhere, leader=True)
    badge_is(elsewhere, 15)

    desk = signed_in(contexts, server, session_cookie, reader, init_script=NO_TOASTS)
    centre = desk.page("/alarms/")
    centre.get_by_label("Search", exact=True).fill("pump")
    centre.get_by_label("Level").select_option("warning")
    centre.get_by_label("Per page").select_option("10")
    centre.get_by_role("button", name="Show").click()
    centre.wait_for_url("**/alarms/?q=pump&level=warning&size=10")
    items = centre.locator("[data-alarms-item]")
    assert items.count() == 10
    assert centre.locator("[aria-current=page]").text_content() == "1"

    centre.get_by_role("navigation", name="Pages").get_by_role("link", name="2").click()
    centre.wait_for_url("**page=2")
    assert centre.locator("[aria-current=page]").text_content() == "2"
    assert items.count() == 2
    shown = {int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.alarmsItem)")}
    assert shown == {pumps[1].pk, pumps[0].pk}  # the oldest two warnings

    centre.get_by_role("button", name="Mark all matching as read").click()
    centre.get_by_text("Dismissed 12 alarms.").wait_for()
    badge_is(elsewhere, 3)  # the two info pumps and the disk
    assert AlarmReceipt.objects.filter(user=reader, dismissed_at__isnull=False).count() == 12

    centre.get_by_role("link", name="Clear the search").click()
    centre.get_by_role("button", name="Mark all as read").click()
    centre.get_by_text("Dismissed 3 alarms.").wait_for()
    badge_is(elsewhere, 0)
    assert centre.get_by_text("Nothing needs your attention.").is_visible()
    assert receipt_ids(reader) == {a.pk for a in [*pumps, other]}


def receipt_ids(user: Any) -> set[int]:
    return set(
        AlarmReceipt.objects.filter(user=user, dismissed_at__isnull=False).values_list(
            "alarm_id", flat=True
        )
    )

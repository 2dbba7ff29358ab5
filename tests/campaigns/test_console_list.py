"""The console on the paged campaign list (headless Chromium, SQLite; the console's own
fixtures): the campaigns page shows the newest 100 and pages back on request; the overview
shows every live campaign, however many newer ones there are."""

from __future__ import annotations

import datetime as dt

from garrison.fleet import campaigns as service
from garrison.fleet.campaign import Plan
from tests.console.conftest import ConsoleFleet, Tab, browser, console_fleet, tab

__all__ = ["browser", "console_fleet", "tab"]  # the fixtures this module uses

NEWER = 101


def start(fleet: ConsoleFleet, name: str, group: str, release: tuple[str, str]) -> int:
    spec = service.CampaignSpec(name, group, service.ReleaseRef(*release), Plan.from_json({}))
    with fleet.served.database.write() as conn:
        return service.create_campaign(conn, spec, "principal:olga", dt.datetime.now(dt.UTC))


def test_old_live_campaigns_and_older_pages_stay_reachable(
    tab: Tab, console_fleet: ConsoleFleet
) -> None:
    fleet = console_fleet
    old = start(fleet, "Sensors, paused long ago", "sensors", ("sensor-fw", "1.4.0"))
    with fleet.served.database.write() as conn:
        service.pause_campaign(conn, old, "principal:olga", dt.datetime.now(dt.UTC))
    for n in range(NEWER):  # newer campaigns, each aborted right away
        newer = start(fleet, f"Line 3 try {n}", "line-3", ("edge-fw", "2.1.0"))
        with fleet.served.database.write() as conn:
            service.abort_campaign(conn, newer, False, "principal:olga", dt.datetime.now(dt.UTC))
    with fleet.served.database.read() as conn:
        total = len(service.list_campaigns(conn, limit=service.MAX_CAMPAIGNS_PAGE))
    assert total > 100

    tab.login(fleet.operator)
    page = tab.page
    page.wait_for_selector(f"a.campaign-row[data-campaign='{old}']")  # the overview

    tab.open("/campaigns")
    rows = page.locator("[data-page=campaigns] tbody tr")
    page.wait_for_selector("[data-action=older-campaigns]")
    assert rows.count() == 100
    assert page.locator(f"[data-page=campaigns] a[href='#/campaigns/{old}']").count() == 0
    page.click("[data-action=older-campaigns]")
    page.wait_for_selector(f"[data-page=campaigns] a[href='#/campaigns/{old}']")
    assert rows.count() == total
    assert page.locator("[data-action=older-campaigns]").count() == 0  # nothing older
    assert tab.errors() == []

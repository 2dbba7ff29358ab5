"""Campaigns in the console, in headless Chromium: an operator starts one from the form and
pauses, resumes and aborts it (each confirmed in a dialog); the server's refusal of a
conflicting campaign reaches the form; an auditor sees progress but no controls."""

from __future__ import annotations

from typing import Any

from garrison.store.audit_log import read_audit
from tests.console.conftest import ConsoleFleet, Tab


def campaigns(fleet: ConsoleFleet) -> list[dict[str, Any]]:
    """Every campaign, newest first."""
    with fleet.served.api(fleet.operator) as api:
        found: list[dict[str, Any]] = api.get("/campaigns").json()
    return found


def campaign_actions(
    fleet: ConsoleFleet, campaign_id: int
) -> list[tuple[str, str, dict[str, Any]]]:
    with fleet.served.database.read() as conn:
        return [
            (e.actor, e.action, e.details)
            for e in read_audit(conn)
            if e.target == f"campaign:{campaign_id}" and e.actor.startswith("principal:")
        ]


def confirm(tab: Tab, action: str) -> None:
    """Click a campaign control and confirm its dialog."""
    tab.page.click(f"[data-action={action}]")
    tab.page.wait_for_selector("dialog.modal[open]")
    tab.page.click("dialog.modal [data-confirm]")
    tab.page.wait_for_selector("dialog.modal", state="detached")


def wait_state(tab: Tab, state: str) -> None:
    tab.page.wait_for_selector(f"[data-page=campaign] h1 [data-state={state}]")


def test_operator_starts_pauses_resumes_and_aborts_a_campaign(
    tab: Tab, console_fleet: ConsoleFleet
) -> None:
    before = len(campaigns(console_fleet))
    tab.login(console_fleet.operator)
    page = tab.page
    page.click("nav a[data-nav=campaigns]")
    page.click("[data-action=new-campaign]")
    page.wait_for_selector("[data-form=campaign]")
    # Checked in the browser before anything is sent.
    page.click("[data-action=start-campaign]")
    assert "Give the campaign a name" in page.locator("[data-form=campaign] .banner").inner_text()
    assert len(campaigns(console_fleet)) == before

    page.fill("#name", "Sensors to 1.4.0")
    page.select_option("#group", "sensors")
    page.select_option("#release", label="sensor-fw 1.4.0 · for sensor-1")
    page.fill("#canary", "1")
    page.fill("#waves", "50, 100")
    page.fill("#rate", "30")
    page.fill("#threshold", "10")
    page.select_option("select[name=threshold-unit]", "%")
    page.click("[data-action=start-campaign]")
    page.wait_for_selector("[data-page=campaign]")
    wait_state(tab, "running")
    assert "Sensors to 1.4.0" in page.locator("[data-page=campaign] h1").inner_text()

    created = campaigns(console_fleet)[0]
    assert len(campaigns(console_fleet)) == before + 1
    assert (created["name"], created["group"], created["state"]) == (
        "Sensors to 1.4.0",
        "sensors",
        "running",
    )
    assert created["release"]["name"] == "sensor-fw"
    plan = created["plan"]
    assert (plan["canary"], plan["waves"], plan["max_per_minute"]) == (1, [50, 100], 30)
    assert plan["failure_threshold"] == "10%"
    assert page.url.endswith(f"#/campaigns/{created['id']}")
    # The progress shows every member of the group, phase by phase.
    page.wait_for_selector("[data-phase='0']")
    assert page.locator("[data-phase]").count() == 3  # the canary and two waves

    confirm(tab, "pause")
    wait_state(tab, "paused")
    assert campaigns(console_fleet)[0]["state"] == "paused"
    assert page.locator("[data-action=pause]").count() == 0

    confirm(tab, "resume")
    wait_state(tab, "running")

    tab.page.click("[data-action=abort]")
    tab.page.wait_for_selector("dialog.modal[open]")
    tab.page.check("#abort-rollback")
    tab.page.click("dialog.modal [data-confirm]")
    wait_state(tab, "aborted")
    assert page.locator("[data-action]").filter(has_text="Abort").count() == 0
    assert campaigns(console_fleet)[0]["state"] == "aborted"
    actions = campaign_actions(console_fleet, created["id"])
    assert [a[:2] for a in actions] == [
        ("principal:olga", "campaign.create"),
        ("principal:olga", "campaign.pause"),
        ("principal:olga", "campaign.resume"),
        ("principal:olga", "campaign.abort"),
    ]
    assert actions[-1][2]["rollback"] is True  # the dialog's option reached the server
    assert tab.errors() == []


def test_a_campaign_the_server_refuses_shows_why(tab: Tab, console_fleet: ConsoleFleet) -> None:
    console_fleet.scenario.campaign("Line 3 first", "line-3", ("edge-fw", "2.1.0"), {})
    before = [(c["id"], c["state"]) for c in campaigns(console_fleet)]
    tab.login(console_fleet.operator)
    tab.open("/campaigns/new")
    page = tab.page
    page.wait_for_selector("[data-form=campaign]")
    page.fill("#name", "Line 3 again")
    page.select_option("#group", "line-3")
    page.select_option("#release", label="edge-fw 2.1.0 · for edge-gw-2")
    page.click("[data-action=start-campaign]")
    refusal = page.locator("[data-form=campaign] .banner.bad")
    refusal.wait_for()
    assert "line-3" in refusal.inner_text() and "running" in refusal.inner_text()
    assert [(c["id"], c["state"]) for c in campaigns(console_fleet)] == before  # no change
    assert page.locator("[data-form=campaign]").count() == 1  # the form stays, filled in
    assert page.input_value("#name") == "Line 3 again"
    assert all("409" in m for m in tab.errors()), tab.errors()


def test_an_auditor_sees_progress_but_no_controls(tab: Tab, console_fleet: ConsoleFleet) -> None:
    running = [c for c in campaigns(console_fleet) if c["state"] == "running"]
    if not running:
        running = [
            console_fleet.scenario.campaign("For the auditor", "line-3", ("edge-fw", "2.1.0"), {})
        ]
    campaign = running[0]
    tab.login(console_fleet.auditor)
    page = tab.page
    page.click("nav a[data-nav=campaigns]")
    page.wait_for_selector("[data-page=campaigns] table")
    assert page.locator("[data-action=new-campaign]").count() == 0
    page.click(f"text={campaign['name']}")
    page.wait_for_selector("[data-page=campaign] [data-phase='0']")
    wait_state(tab, "running")
    assert page.locator("[data-page=campaign] [data-action]").count() == 0
    assert page.locator("[data-page=campaign] tbody tr").count() == campaign["members"]
    tab.open("/campaigns/new")
    page.wait_for_selector("text=Your role cannot see this page")
    assert page.locator("[data-form=campaign]").count() == 0
    # On the overview too: the running campaign, without a "New campaign" button.
    tab.open("/overview")
    page.wait_for_selector(f"[data-campaign='{campaign['id']}']")
    assert page.locator("text=New campaign").count() == 0
    assert tab.errors() == []

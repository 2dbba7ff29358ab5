"""The console in headless Chromium against a real served fleet: signing in, the fleet, the
devices, the audit log, what each role sees, and that the page runs clean under its CSP."""

from __future__ import annotations

import re

from tests.console.conftest import ConsoleFleet, Tab, add_principal


def text(tab: Tab, selector: str) -> str:
    value: str = tab.page.locator(selector).first.inner_text()
    return value


def test_a_wrong_token_shows_the_servers_refusal(tab: Tab) -> None:
    tab.page.goto(f"{tab.base}/")
    assert tab.page.url.endswith("/console/")
    tab.page.fill("#token", "gat_this-is-not-a-token")
    tab.page.click("button[type=submit]")
    error = tab.page.locator("[data-login-error]")
    error.wait_for()
    assert "This token was not accepted" in error.inner_text()
    assert "invalid or disabled API token" in error.inner_text()
    assert tab.page.evaluate("sessionStorage.getItem('garrison.token')") is None
    assert tab.page.locator("[data-page]").count() == 0
    # The only error the page logs is the browser's note of the refused request itself.
    assert all("401" in m for m in tab.errors()), tab.errors()


def test_an_empty_token_is_not_sent(tab: Tab) -> None:
    tab.page.goto(f"{tab.base}/console/")
    tab.page.click("button[type=submit]")
    assert "Enter an API token" in text(tab, "[data-login-error]")
    assert tab.errors() == []


def test_operator_sees_the_fleet_and_a_device(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.login(console_fleet.operator)
    page = tab.page
    page.wait_for_selector("[data-page=overview]")
    assert text(tab, "[data-principal]") == "olga"
    assert text(tab, "[data-role]") == "Operator"
    total = len(console_fleet.devices)
    assert text(tab, "[data-stat=total] .stat-value") == str(total)
    assert text(tab, "[data-stat=active] .stat-value") == str(total)
    assert text(tab, "[data-stat=recent] .stat-value") == str(total)
    # The operator's role holds no audit.read: no audit entry in the navigation.
    assert page.locator("nav a[data-nav]").all_inner_texts() == [
        "Fleet overview",
        "Devices",
        "Campaigns",
    ]

    page.click("nav a[data-nav=devices]")
    page.wait_for_selector("[data-page=devices] table")
    assert page.locator("tbody tr").count() == total
    page.fill("input[name=q]", "SN-")
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 3")
    assert text(tab, "[data-count]") == f"3 of {total} devices"
    assert "q=SN-" in page.url  # the filter is in the address, to share it
    page.select_option("select[name=model]", "edge-gw-2")
    page.wait_for_selector("[data-page=devices] .empty")
    assert "No device matches" in text(tab, ".empty")
    page.fill("input[name=q]", "")
    page.wait_for_function("() => document.querySelectorAll('tbody tr').length === 6")

    page.click("text=GW-003")
    page.wait_for_selector("[data-page=device][data-serial=GW-003]")
    assert text(tab, "[data-field=firmware]") == "2.0.0"
    with console_fleet.served.api(console_fleet.operator) as api:
        listed = {d["serial"]: d for d in api.get("/devices").json()}
    assert text(tab, "[data-field=certificate]") == listed["GW-003"]["current_cert"]
    body = page.locator("[data-page=device]").inner_text()
    assert "modbus-bridge" in body and "1.2.0" in body
    assert "slot a" in body
    assert "Devices" in text(tab, ".crumbs")
    assert tab.errors() == []


def test_unknown_devices_and_campaigns_show_the_apis_message(
    tab: Tab, console_fleet: ConsoleFleet
) -> None:
    tab.login(console_fleet.operator)
    tab.open("/devices/NO-SUCH-DEVICE")
    tab.page.wait_for_selector(".empty >> text=Not found")
    assert "NO-SUCH-DEVICE" in text(tab, ".content .empty")
    assert "NO-SUCH-DEVICE" in text(tab, ".toast")
    tab.open("/campaigns/999999")
    tab.page.wait_for_selector(".content .empty >> text=999999")
    assert "Not found" in text(tab, ".content .empty")
    tab.open("/no/such/page")
    tab.page.wait_for_selector("[data-page=overview]")  # unknown routes lead home
    assert all("404" in m for m in tab.errors()), tab.errors()


def test_auditor_reads_the_audit_log_and_its_chain(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.login(console_fleet.auditor)
    page = tab.page
    page.click("nav a[data-nav=audit]")
    page.wait_for_selector("[data-page=audit] table")
    banner = text(tab, ".banner.ok strong")
    verified = re.fullmatch(r"Hash chain verified: (\d+) entries intact", banner)
    assert verified is not None
    rows = page.locator("tbody tr")
    assert rows.count() == min(50, int(verified.group(1)))  # the first page, newest first
    first, second = (int(rows.nth(i).locator("td").first.inner_text()) for i in (0, 1))
    assert first > second
    page.select_option("select[name=outcome]", "refused")
    page.wait_for_function(
        "() => [...document.querySelectorAll('tbody tr td:nth-child(6)')]"
        ".every(td => td.innerText.trim() === 'refused')"
    )
    assert "outcome=refused" in page.url
    page.fill("input[name=action]", "cert.issue")
    page.select_option("select[name=outcome]", "")
    page.wait_for_function(
        f"() => document.querySelectorAll('tbody tr').length === {len(console_fleet.devices)}"
    )
    assert tab.errors() == []


def test_roles_see_only_their_pages(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.login(console_fleet.operator)
    tab.open("/audit")
    tab.page.wait_for_selector("text=Your role cannot see this page")
    assert "audit.read" in text(tab, ".content")
    # A manufacturer holds none of the console's permissions.
    maker = add_principal(console_fleet.served, "maker-console", "manufacturer")
    tab.page.click("[data-action=logout]")
    tab.page.wait_for_selector("#token")
    tab.page.fill("#token", maker)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("text=Your role cannot see this page")
    assert tab.page.locator("nav a[data-nav]").count() == 0
    assert tab.errors() == []


def test_sign_out_forgets_the_token(tab: Tab, console_fleet: ConsoleFleet) -> None:
    tab.login(console_fleet.operator)
    assert tab.page.evaluate("sessionStorage.getItem('garrison.token')") == console_fleet.operator
    tab.page.click("[data-action=logout]")
    tab.page.wait_for_selector("#token")
    assert tab.page.evaluate("sessionStorage.getItem('garrison.token')") is None
    tab.page.reload()
    tab.page.wait_for_selector("#token")
    assert tab.errors() == []


def test_a_disabled_principal_is_sent_back_to_sign_in(
    tab: Tab, console_fleet: ConsoleFleet
) -> None:
    token = add_principal(console_fleet.served, "olivia", "operator")
    tab.login(token)
    tab.page.wait_for_selector("[data-page=overview]")
    with console_fleet.served.api() as api:
        assert api.post("/principals/olivia/disable").status_code == 200
    # The overview refreshes every 5 s; its next request is refused.
    tab.page.wait_for_selector("[data-login-error]", timeout=15_000)
    assert "Your session has ended" in text(tab, "[data-login-error]")
    assert tab.page.evaluate("sessionStorage.getItem('garrison.token')") is None


def test_the_page_enforces_trusted_types(tab: Tab, console_fleet: ConsoleFleet) -> None:
    """Markup from a string is refused by the browser itself, so even a console bug could
    not turn device data into script."""
    tab.login(console_fleet.operator)
    outcome = tab.page.evaluate(
        """() => {
            try { document.body.appendChild(document.createElement('div')).innerHTML = '<b>x</b>';
                  return 'assigned'; }
            catch (e) { return e.name; }
        }"""
    )
    assert outcome == "TypeError"

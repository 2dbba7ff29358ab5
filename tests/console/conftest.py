"""The console's fixtures: one served fleet (SQLite) with principals of several roles and
enrolled devices that checked in, and headless Chromium (Debian's /usr/bin/chromium) driven
by Playwright. The browser tests run on SQLite only: the API under them is tested on both
databases by its own tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from garrison.sim.scenario import Scenario
from tests.conftest import Officer, RunningFleet, make_fleet, make_officer
from tests.console.devices import Device, check_in, enroll_devices, inventory

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class ConsoleFleet:
    """A served fleet with ``sofia`` (security officer), ``olga`` (operator), ``aude``
    (auditor); enrolled devices of two hardware models that checked in (GW-001..006 of
    edge-gw-2, SN-001..003 of sensor-1); published firmware for each model (edge-fw 2.1.0,
    sensor-fw 1.4.0); dynamic groups ``gateways`` and ``sensors`` (by model) and a static
    group ``line-3`` (GW-001..003)."""

    served: RunningFleet
    officer: Officer
    operator: str
    auditor: str
    devices: list[Device]
    scenario: Scenario
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.served.url


def add_principal(served: RunningFleet, name: str, role: str) -> str:
    with served.api() as api:
        response = api.post("/principals", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def scenario_for(served: RunningFleet, operator: str) -> Scenario:
    """Releases (a throwaway release manager ``sim-release-manager``) and groups, set up
    through the admin API; the operator's changes are made by ``olga``."""
    scenario = Scenario(served.url, served.root_ca, served.admin_token)
    scenario.tokens["operator"] = operator
    scenario.release_managers(served.fleet, served.database)
    scenario.publish("edge-fw", "2.1.0", ["edge-gw-2"])
    scenario.publish("sensor-fw", "1.4.0", ["sensor-1"])
    scenario.group("gateways", where='model == "edge-gw-2"')
    scenario.group("sensors", where='model == "sensor-1"')
    scenario.group("line-3", members=["GW-001", "GW-002", "GW-003"])
    return scenario


@pytest.fixture(scope="module")
def console_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    tmp = tmp_path_factory.mktemp("console")
    running = make_fleet(tmp / "fleet", f"sqlite:///{tmp / 'garrison.db'}")
    try:
        with running.serve():
            officer = make_officer(running)
            operator = add_principal(running, "olga", "operator")
            auditor = add_principal(running, "aude", "auditor")
            gateways = enroll_devices(
                running, officer, [f"GW-{i:03d}" for i in range(1, 7)], "edge-gw-2", tmp / "dev"
            )
            sensors = enroll_devices(
                running, officer, [f"SN-{i:03d}" for i in range(1, 4)], "sensor-1", tmp / "dev"
            )
            for device in gateways + sensors:
                body = {
                    "agent_version": "0.4.0",
                    "inventory": inventory(device, "2.0.0", {"modbus-bridge": "1.2.0"}),
                }
                check_in(running, device, body)
            scenario = scenario_for(running, operator)
            yield ConsoleFleet(
                running, officer, operator, auditor, gateways + sensors, scenario, tmp
            )
    finally:
        running.database.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: Playwright's synchronous API keeps
    an event loop running on this thread while it is open, and later tests use asyncio.run()."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A browser page with everything it logged: console messages and uncaught errors."""

    page: Any
    base: str
    messages: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith(("error", "pageerror"))]

    def open(self, route: str) -> None:
        self.page.goto(f"{self.base}/console/#{route}")

    def login(self, token: str) -> None:
        self.page.goto(f"{self.base}/")
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("[data-page]")


@pytest.fixture
def tab(browser: Any, console_fleet: ConsoleFleet) -> Iterator[Tab]:
    # The fleet's root is not in Chromium's store; the API tests pin it, the browser here
    # only needs to reach the loopback server.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    opened = Tab(page, console_fleet.url)
    page.on("console", lambda m: opened.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: opened.messages.append(f"pageerror: {e}"))
    yield opened
    context.close()

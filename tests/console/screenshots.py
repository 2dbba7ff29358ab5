"""Regenerate the console's screenshots (``scripts/screenshots``): a demo-like fleet on this
machine, its pages in headless Chromium, saved as PNG files in ``docs/console/``.

The scene is real: a control plane served over HTTPS, three dozen simulated devices of two
hardware models (:mod:`garrison.sim`) enrolled through EST and running the agent's cycle on
the device API, firmware signed by a release manager, dynamic and static groups, a completed
campaign that updated the sensors, and a campaign rolling new gateway firmware out in a canary
and waves, in which one gateway fails its health check and rolls back. The pages are taken while the
campaign is under way.

``--serve`` keeps the fleet running afterwards and prints the console's address and the
principals' tokens, to look around by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from garrison.sim.device import Behaviour
from garrison.sim.fleet import DeviceSpec, Simulator
from garrison.sim.scenario import Scenario
from tests.conftest import RunningFleet, make_fleet

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
GATEWAYS = [f"GW-{n}" for n in range(1001, 1025)]
SENSORS = [f"SN-{n}" for n in range(2001, 2013)]
FAILING = "GW-1005"  # fails its health check in wave 1 and rolls back
PEOPLE = {
    "operator": "olga",
    "auditor": "aude",
    "security-officer": "sofia",
    "release-manager": "rita",
}


@dataclass
class Scene:
    fleet: RunningFleet
    scenario: Scenario
    campaign: int

    def token(self, role: str) -> str:
        return self.scenario.tokens[role]


class Loop:
    """An asyncio event loop on a thread of its own, for the simulated devices."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim", daemon=True)
        self.thread.start()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def people(fleet: RunningFleet, scenario: Scenario) -> None:
    """Named principals for the roles the scenario acts in (the audit log shows them)."""
    with scenario.api() as api:
        for role, name in PEOPLE.items():
            made = api.post("/principals", json={"name": name, "role": role})
            made.raise_for_status()
            scenario.tokens[role] = made.json()["token"]


@contextmanager
def scene(directory: Path, *, install_seconds: float = 10.0) -> Iterator[Scene]:
    """The served fleet, its simulated devices running, and a campaign under way."""
    fleet = make_fleet(
        directory / "fleet",
        f"sqlite:///{directory / 'garrison.db'}",
        organization="Demo Machines Ltd",
    )
    loop = Loop()
    try:
        with fleet.serve():
            scenario = Scenario(fleet.url, fleet.root_ca, fleet.admin_token)
            people(fleet, scenario)
            scenario.release_managers(fleet.fleet, fleet.database)
            scenario.publish("edge-fw", "2.1.0", ["edge-gw-2"])
            scenario.publish("sensor-fw", "1.4.0", ["sensor-1"])
            behaviour = Behaviour(
                install_seconds=install_seconds,
                download_seconds=2.0,
                failing=frozenset({FAILING}),
                poll_seconds=2.0,
                jitter_seconds=0.5,
            )
            sim = Simulator("127.0.0.1", fleet.port, fleet.root_ca, directory / "sim", behaviour)
            specs = [
                DeviceSpec(serial, token, "edge-gw-2", "2.0.0")
                for serial, token in scenario.batch(GATEWAYS, "edge-gw-2")
            ] + [
                DeviceSpec(serial, token, "sensor-1", "1.3.0")
                for serial, token in scenario.batch(SENSORS, "sensor-1")
            ]
            loop.run(lambda: sim.enroll(specs))
            scenario.group("gateways", where='model == "edge-gw-2"')
            scenario.group("sensors", where='model == "sensor-1"')
            scenario.group("pump-station-3", members=GATEWAYS[:8])
            for serial in GATEWAYS[:8]:
                scenario.call(
                    "PUT",
                    f"/devices/{serial}/tags",
                    role="operator",
                    json={"tags": ["pump-station-3", "north"]},
                )

            async def start() -> None:
                sim.start(spread=2.0)

            loop.run(start)
            sensors = scenario.campaign(
                "Sensor firmware 1.4.0",
                "sensors",
                ("sensor-fw", "1.4.0"),
                {"canary": 1, "waves": [100], "max_per_minute": 60},
            )
            wait_for(
                "the sensors' campaign completed",
                lambda: scenario.show(int(sensors["id"]), limit=0)["state"] == "completed",
            )
            created = scenario.campaign(
                "Gateway firmware 2.1.0",
                "gateways",
                ("edge-fw", "2.1.0"),
                {
                    "canary": 2,
                    "waves": [25, 50, 100],
                    "max_per_minute": 12,
                    "failure_threshold": 1,
                    "rollback_on_abort": True,
                },
            )
            try:
                yield Scene(fleet, scenario, int(created["id"]))
            finally:
                loop.run(sim.stop)
    finally:
        loop.close()
        fleet.database.dispose()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scene did not reach: {what}")
        time.sleep(0.5)


def under_way(s: Scene) -> Callable[[], bool]:
    """The campaign is in wave 2 or later with the failing gateway rolled back and devices
    installing."""

    def check() -> bool:
        shown = s.scenario.show(s.campaign, limit=0)
        counts = shown["counts"]
        moving = sum(counts.get(state, 0) for state in ("downloading", "downloaded", "installing"))
        return bool(shown["phase"] >= 2 and counts.get("rolled-back") and moving >= 3)

    return check


def shoot(s: Scene, out: Path) -> list[Path]:
    """The console's main pages as PNG files in ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1440, "height": 900}
        )
        page = context.new_page()

        def save(name: str, *, full: bool = False) -> None:
            page.wait_for_timeout(600)  # let the page's refresh settle
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=full)
            saved.append(path)

        def sign_in(role: str) -> None:
            page.goto(f"{s.fleet.url}/console/")
            page.fill("#token", s.token(role))
            page.click("button[type=submit]")
            page.wait_for_selector("[data-page]")

        page.goto(f"{s.fleet.url}/console/")
        page.wait_for_selector("#token")
        save("login")
        sign_in("operator")
        page.goto(f"{s.fleet.url}/console/#/campaigns/{s.campaign}")
        page.wait_for_selector("[data-page=campaign] .phase")
        save("campaign", full=True)
        page.goto(f"{s.fleet.url}/console/#/overview")
        page.wait_for_selector("[data-page=overview] .level-row")
        save("overview")
        page.goto(f"{s.fleet.url}/console/#/campaigns")
        page.wait_for_selector("[data-page=campaigns] table")
        save("campaigns")
        page.goto(f"{s.fleet.url}/console/#/devices")
        page.wait_for_selector("[data-page=devices] table")
        save("devices")
        page.goto(f"{s.fleet.url}/console/#/devices/{GATEWAYS[1]}")
        page.wait_for_selector("[data-page=device] .timeline")
        save("device", full=True)
        page.goto(f"{s.fleet.url}/console/#/campaigns/new")
        page.wait_for_selector("[data-form=campaign]")
        save("new-campaign")
        page.click("[data-action=logout]")
        sign_in("auditor")
        page.goto(f"{s.fleet.url}/console/#/audit")
        page.wait_for_selector("[data-page=audit] table")
        save("audit")
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    parser.add_argument(
        "--serve", action="store_true", help="keep the fleet running afterwards (Ctrl-C ends)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="garrison-screens-") as tmp, scene(Path(tmp)) as s:
        print(f"fleet at {s.fleet.url}; campaign {s.campaign} started", flush=True)
        wait_for("a wave under way after a rollback", under_way(s))
        for path in shoot(s, args.out):
            print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        if args.serve:
            print(f"console: {s.fleet.url}/console/")
            for role in PEOPLE:
                print(f"  {role:17} {s.token(role)}")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()

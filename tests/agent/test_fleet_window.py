"""The maintenance window is asked again right before every change: a download that ends
after the window closed does not install (regression: the window was decided once, when the
plan was made)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from garrison.agent.agent import Agent
from garrison.agent.converge import ConfigureApp, InstallApp, RemoveApp, plan
from garrison.agent.directive import parse_directive
from garrison.agent.fleet_state import FleetFiles
from garrison.updates import apps
from tests.agent.test_fleet_converge import (
    PUMP_1,
    _window_opening,
    converger_of,
    publish_app,
    running,
)
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import World

world = updates_conftest.world  # the fixture, shared with tests/updates

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class SlowDownload:
    """The device's clock: ``clock``'s time, ten minutes later as soon as a download has
    begun (bytes in the downloads directory): a download that takes ten minutes."""

    def __init__(self, clock: Clock, downloads: Path) -> None:
        self.clock = clock
        self.downloads = downloads

    def __call__(self) -> dt.datetime:
        busy = self.downloads.is_dir() and any(self.downloads.iterdir())
        return self.clock.now + (dt.timedelta(minutes=10) if busy else dt.timedelta())


def test_a_download_that_ends_after_the_window_closed_does_not_install(world: World) -> None:
    fw = world.publish("fw", "1.1.0", desired=False)
    device = world.enroll()
    serial = device.config.serial
    window, opens = _window_opening(dt.timedelta(hours=2))
    with world.fleet.api(world.operator) as api:
        assert api.post("/groups", json={"name": "night", "window": window}).status_code == 201
        assert api.post("/groups/night/members", json={"add": [serial]}).status_code == 200
        desired = {"firmware": {"name": "fw", "version": "1.1.0"}}
        assert api.put("/desired/groups/night", json=desired).status_code == 200
    clock = Clock()
    clock.advance(opens - clock.now + dt.timedelta(minutes=59, seconds=59))  # 1 s left
    agent = Agent(device.state, clock=SlowDownload(clock, device.updates.downloads))

    late = agent.cycle()
    assert late.plan is not None and late.plan.describe() == [
        "download firmware 1.1.0 (" + fw.target + ")",
        "install firmware 1.1.0 (A/B: boot, health checks, commit)",
    ]  # planned with the window open
    next_week = opens + dt.timedelta(days=7)
    assert late.did == (
        "downloaded firmware 1.1.0",
        f"waiting for maintenance window (opens {next_week:%a %Y-%m-%d %H:%M} UTC): firmware 1.1.0",
    )
    assert running(device) == "factory"
    record = FleetFiles(device.state.root).load_record()
    assert record.installing is None and record.failures == [] and fw.target in record.downloads
    assert record.last_cycle["error"] == ""

    clock.advance(dt.timedelta(minutes=5))  # still closed: nothing more happens
    still = agent.cycle()
    assert still.did == () and running(device) == "factory"
    assert still.plan is not None and still.plan.describe() == [
        f"waiting for maintenance window (opens {next_week:%a %Y-%m-%d %H:%M} UTC): firmware 1.1.0"
    ]


def test_every_change_waits_when_the_window_closed_after_planning(world: World) -> None:
    """Removal, install and configuration: each asks the window right before it runs."""
    pump = publish_app(world, "pump", "1.0", PUMP_1)
    device = world.enroll()
    root = device.sim.root
    apps.install_app(root, "old", "1", {"x": b"x"}, apps.files_digest({"x": b"x"}))
    window, opens = _window_opening(dt.timedelta(hours=2))
    directive = parse_directive(
        {
            "etag": "e",
            "firmware": None,
            "apps": [
                {"name": "pump", "version": "1.0", "target": pump.target, "config": {"rate": 5}}
            ],
            "window": window,
            "poll_seconds": 60,
            "jitter_seconds": 0,
        }
    )
    clock = Clock()
    clock.advance(opens - clock.now + dt.timedelta(minutes=30))  # open
    converger = converger_of(Agent(device.state, clock=clock), clock)
    planned = plan(directive, converger.facts(), clock())
    changes = [s for s in planned.steps if isinstance(s, RemoveApp | InstallApp | ConfigureApp)]
    assert len(changes) == 3 and planned.window == directive.window
    clock.advance(dt.timedelta(minutes=31))  # closed before the plan runs
    before = device.snapshot()
    outcome = converger.run(planned)
    assert outcome.error is None and not outcome.changed
    assert outcome.did == [
        f"waiting for maintenance window (opens {opens + dt.timedelta(days=7):%a %Y-%m-%d %H:%M}"
        " UTC): removing app old, app pump 1.0, configuring app pump"
    ]
    assert device.snapshot() == before
    assert apps.installed_apps(root) == {"old": "1"}

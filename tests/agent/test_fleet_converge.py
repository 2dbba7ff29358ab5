"""The agent converges to its directive, end to end: a served control plane (SQLite and
PostgreSQL), releases signed by two of three release managers, desired state set through the
API by an operator, real agents with their simulated A/B devices."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from typing import Any

import pytest

from garrison.agent.agent import Agent
from garrison.agent.converge import Hold, WaitForWindow, plan
from garrison.agent.directive import Directive, parse_directive
from garrison.agent.executor import Converger
from garrison.agent.fleet_state import FleetFiles
from garrison.updates import apps
from garrison.updates.client import UpdateClient
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, Released, World

PUMP_1 = {"bin/pump": b"#!/bin/sh\necho pump 1\n"}
PUMP_2 = {"bin/pump": b"#!/bin/sh\necho pump 2\n"}
LOGGER = {"bin/logger": b"#!/bin/sh\necho log\n"}


world = updates_conftest.world  # the fixture, shared with tests/updates


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o755
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def publish_app(
    world: World, name: str, version: str, files: dict[str, bytes], **kwargs: Any
) -> Released:
    return world.publish(name, version, install="app", data=tar_bytes(files), **kwargs)


def set_desired(world: World, token: str, serial: str, body: dict[str, Any]) -> None:
    with world.fleet.api(token) as api:
        response = api.put(f"/desired/devices/{serial}", json=body)
    assert response.status_code == 200, response.text


def detail(world: World, token: str, serial: str) -> dict[str, Any]:
    with world.fleet.api(token) as api:
        response = api.get(f"/devices/{serial}/detail")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def agent_of(device: Device, clock: Clock | None = None) -> Agent:
    return Agent(device.state, clock=clock or Clock())


def running(device: Device) -> str:
    env = device.sim.load_env()
    info = env.slots[env.active]
    assert info is not None
    return info.version


def test_desired_firmware_and_apps_converge_in_one_cycle_then_idle_is_304(
    world: World,
) -> None:
    token = world.operator
    world.publish("fw", "1.1.0", desired=False)
    publish_app(world, "pump", "1.0", PUMP_1)
    publish_app(world, "logger", "0.9", LOGGER)
    device = world.enroll()
    serial = device.config.serial
    set_desired(
        world,
        token,
        serial,
        {
            "firmware": {"name": "fw", "version": "1.1.0"},
            "apps": [
                {"name": "pump", "version": "1.0", "config": {"port": 502}},
                {"name": "logger", "version": "0.9"},
            ],
        },
    )
    agent = agent_of(device)

    first = agent.cycle()
    assert first.check_in is not None and first.directive_status == 200
    assert first.directive.firmware is not None and first.directive.firmware.version == "1.1.0"
    assert running(device) == "1.1.0"
    root = device.sim.root
    assert apps.installed_apps(root) == {"logger": "0.9", "pump": "1.0"}
    assert apps.read_config(root, "pump") == {"port": 502}
    assert apps.read_config(root, "logger") is None
    assert (root / "apps" / "pump" / "current" / "bin" / "pump").read_bytes() == PUMP_1["bin/pump"]
    assert "firmware 1.1.0: committed, 1.1.0 runs" in first.did
    # the control plane has the new inventory (checked in again after the change)
    inventory = detail(world, token, serial)["inventory"]
    assert inventory["firmware"] == "1.1.0"
    assert inventory["apps"] == {"logger": "0.9", "pump": "1.0"}
    assert inventory["last_update"]["outcome"] == "committed"
    assert not list(device.updates.downloads.iterdir())  # installed artifacts are not kept

    idle = agent.cycle()
    assert idle.check_in is None and idle.did == () and idle.plan is not None
    assert idle.plan.steps == ()
    assert idle.exchanges == (("GET /device/v1/directive", 304),)
    assert idle.directive == first.directive  # the kept one, from disk
    assert (idle.poll_seconds, idle.jitter_seconds) == (
        first.directive.poll_seconds,
        first.directive.jitter_seconds,
    )


def test_an_app_no_longer_desired_is_removed_and_a_new_version_keeps_its_config(
    world: World,
) -> None:
    token = world.operator
    publish_app(world, "pump", "1.0", PUMP_1)
    publish_app(world, "pump", "2.0", PUMP_2)
    publish_app(world, "logger", "0.9", LOGGER)
    device = world.enroll()
    serial = device.config.serial
    agent = agent_of(device)
    set_desired(
        world,
        token,
        serial,
        {
            "apps": [
                {"name": "pump", "version": "1.0", "config": {"port": 502}},
                {"name": "logger", "version": "0.9"},
            ]
        },
    )
    agent.cycle()
    assert apps.installed_apps(device.sim.root) == {"logger": "0.9", "pump": "1.0"}

    set_desired(
        world,
        token,
        serial,
        {"apps": [{"name": "pump", "version": "2.0", "config": {"port": 503}}]},
    )
    result = agent.cycle()
    assert result.directive_status == 200
    assert apps.installed_apps(device.sim.root) == {"pump": "2.0"}
    assert apps.read_config(device.sim.root, "pump") == {"port": 503}
    assert "removed app logger 0.9" in result.did
    assert not any(p.name.startswith(".removed-") for p in (device.sim.root / "apps").iterdir())
    assert detail(world, token, serial)["inventory"]["apps"] == {"pump": "2.0"}

    set_desired(world, token, serial, {"apps": []})
    agent.cycle()
    assert apps.installed_apps(device.sim.root) == {}

    with world.fleet.api(token) as api:  # no desired state: apps are not managed
        assert api.delete(f"/desired/devices/{serial}").status_code == 204
    (device.sim.root / "apps" / "local-tool").mkdir()
    agent.cycle()
    assert apps.installed_apps(device.sim.root) == {"local-tool": None}


def _window_opening(after: dt.timedelta) -> tuple[dict[str, Any], dt.datetime]:
    """A weekly UTC window opening ``after`` from now (to the minute), for 60 minutes."""
    opens = (dt.datetime.now(dt.UTC) + after).replace(second=0, microsecond=0)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[opens.weekday()]
    window = {
        "timezone": "UTC",
        "slots": [{"days": [day], "start": opens.strftime("%H:%M"), "minutes": 60}],
    }
    return window, opens


def test_outside_the_window_the_firmware_is_downloaded_not_installed_until_it_opens(
    world: World,
) -> None:
    token = world.operator
    fw = world.publish("fw", "1.1.0", desired=False)
    device = world.enroll()
    serial = device.config.serial
    window, opens = _window_opening(dt.timedelta(hours=2))
    with world.fleet.api(token) as api:
        made = api.post("/groups", json={"name": "night", "window": window})
        assert made.status_code == 201, made.text
        added = api.post("/groups/night/members", json={"add": [serial]})
        assert added.status_code == 200, added.text
        desired = api.put(
            "/desired/groups/night", json={"firmware": {"name": "fw", "version": "1.1.0"}}
        )
        assert desired.status_code == 200, desired.text
    clock = Clock()
    agent = agent_of(device, clock)

    before = device.snapshot()
    closed = agent.cycle()
    assert closed.plan is not None
    assert isinstance(closed.plan.steps[-1], WaitForWindow)
    assert closed.plan.steps[-1].opens == opens
    assert closed.did == ("downloaded firmware 1.1.0",)
    assert device.snapshot() == before  # nothing installed
    assert (device.updates.downloads / fw.sha256).is_file()  # but the artifact is held

    still = agent.cycle()  # later, still closed: nothing fetched again
    assert still.did == () and still.exchanges == (("GET /device/v1/directive", 304),)
    assert running(device) == "factory"
    _, planned, _ = agent.local_plan()
    assert planned is not None and planned.describe() == [
        f"waiting for maintenance window (opens {opens:%a %Y-%m-%d %H:%M} UTC): firmware 1.1.0"
    ]

    clock.advance(opens - clock.now + dt.timedelta(minutes=1))
    opened = agent.cycle()
    assert opened.did == ("firmware 1.1.0: committed, 1.1.0 runs",)
    assert running(device) == "1.1.0"


def test_a_failing_health_check_rolls_back_is_reported_and_not_retried(world: World) -> None:
    token = world.operator
    world.publish("fw", "1.2.0", health_checks=(("false",),), desired=False)
    device = world.enroll()
    serial = device.config.serial
    set_desired(world, token, serial, {"firmware": {"name": "fw", "version": "1.2.0"}})
    agent = agent_of(device)

    failed = agent.cycle()
    assert running(device) == "factory"
    assert failed.did == ("downloaded firmware 1.2.0", "firmware 1.2.0: rolled-back, factory runs")
    record = FleetFiles(device.state.root).load_record()
    assert record.last_update is not None and record.last_update["outcome"] == "rolled-back"
    # the failing check is named once (regression: "rejected: X (health: X)")
    assert record.last_update["event"].count("false: exit status 1") == 1
    assert failed.directive.firmware is not None
    assert [(f.target, f.campaign, f.outcome) for f in record.failures] == [
        (failed.directive.firmware.target, None, "rolled-back")
    ]
    inventory = detail(world, token, serial)["inventory"]
    assert inventory["firmware"] == "factory"
    assert inventory["last_update"]["outcome"] == "rolled-back"
    assert inventory["last_update"]["version"] == "factory"

    again = agent.cycle()  # the same directive: held, not retried
    assert again.did == ()
    assert again.plan is not None and isinstance(again.plan.steps[0], Hold)
    assert running(device) == "factory"
    env = json.loads(device.sim.env_path.read_text())
    assert "1.2.0" in json.dumps(env)  # the rejected image stays marked in its slot


def converger_of(agent: Agent, clock: Clock) -> Converger:
    updates = agent._updates(agent.state.load_config())
    assert updates is not None
    return Converger(
        updates,
        agent.files.load_record(),
        lambda: UpdateClient.for_agent(agent.state),
        clock=clock,
        save=agent.files.save_record,
    )


def directive_naming(firmware: dict[str, Any] | None, app_list: list[Any] | None) -> Directive:
    return parse_directive(
        {
            "etag": "forged",
            "firmware": firmware,
            "apps": app_list,
            "window": None,
            "poll_seconds": 60,
            "jitter_seconds": 0,
        }
    )


@pytest.mark.parametrize("kind", ["app-as-firmware", "firmware-as-app", "wrong-version"])
def test_a_directive_that_misnames_a_release_is_refused_for_good(world: World, kind: str) -> None:
    """The device follows the signatures, not the directive: a target named as something it
    is not signed as (a confused or hostile control plane) fails before anything installs,
    and is not tried again under that directive."""
    pump = publish_app(world, "pump", "1.0", PUMP_1)
    fw = world.publish("fw", "1.1.0", desired=False)
    device = world.enroll()
    clock = Clock()
    agent = agent_of(device, clock)
    forged = {
        "app-as-firmware": directive_naming(
            {"target": pump.target, "version": "1.0", "campaign": None}, None
        ),
        "firmware-as-app": directive_naming(
            None, [{"name": "fw", "version": "1.1.0", "target": fw.target, "config": None}]
        ),
        "wrong-version": directive_naming(
            {"target": fw.target, "version": "9.9", "campaign": None}, None
        ),
    }[kind]
    converger = converger_of(agent, clock)
    before = device.snapshot()
    steps = plan(forged, converger.facts(), clock()).steps
    outcome = converger.run(plan(forged, converger.facts(), clock()))
    assert steps and outcome.error is None and not outcome.changed
    assert device.snapshot() == before and apps.installed_apps(device.sim.root) == {}
    failures = FleetFiles(device.state.root).load_record().failures
    assert len(failures) == 1 and "is signed as" in failures[0].event
    held = plan(forged, converger_of(agent, clock).facts(), clock())
    assert held.idle and isinstance(held.steps[0], Hold)

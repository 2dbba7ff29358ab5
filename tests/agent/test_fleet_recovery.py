"""Power cuts in the middle of convergence: the next start finishes the trial, records and
reports the outcome, and leaves no device half-updated."""

from __future__ import annotations

import pytest

from garrison.agent.agent import Agent
from garrison.agent.converge import Hold
from garrison.agent.fleet_state import FleetFiles
from garrison.updates import apps
from tests.agent.test_fleet_converge import publish_app, running, set_desired
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PUMP = {"bin/pump": b"pump\n"}


class PowerCut(BaseException):
    """The device loses power: nothing after this point runs."""


def cut_at(point: str):  # type: ignore[no-untyped-def]
    def checkpoint(name: str) -> None:
        if name == point:
            raise PowerCut(name)

    return checkpoint


def interrupted(device: Device, point: str) -> None:
    """One cycle that loses power at ``point``."""
    with pytest.raises(PowerCut):
        Agent(device.state, clock=Clock(), checkpoint=cut_at(point)).cycle()


def desire_firmware(world: World, device: Device, version: str, healthy: bool) -> None:
    checks = (("true",),) if healthy else (("false",),)
    world.publish("fw", version, health_checks=checks, desired=False)
    set_desired(
        world,
        world.operator,
        device.config.serial,
        {"firmware": {"name": "fw", "version": version}},
    )


@pytest.mark.parametrize(
    "point",
    [
        "slot-write-chunk",
        "slot-written",
        "after-switch",
        "after-boot",
        "after-health",
        "after-commit",
    ],
)
def test_a_cut_install_of_a_healthy_release_ends_committed(world: World, point: str) -> None:
    device = world.enroll()
    desire_firmware(world, device, "1.1.0", healthy=True)
    interrupted(device, point)
    result = Agent(device.state, clock=Clock()).cycle()
    assert running(device) == "1.1.0"
    env = device.sim.load_env()
    assert env.trying is None  # no trial left open
    record = FleetFiles(device.state.root).load_record()
    assert record.installing is None and record.failures == []
    assert record.last_update is not None and record.last_update["outcome"] == "committed"
    assert result.plan is not None
    _, planned, _ = Agent(device.state, clock=Clock()).local_plan()
    assert planned is not None and planned.steps == ()  # nothing more to do
    inventory = Agent(device.state).inventory()
    assert inventory["firmware"] == "1.1.0"
    assert inventory["boot"] == {
        "slot": env.active,
        "state": "committed",
        "last_event": env.last_event,
    }


@pytest.mark.parametrize("point", ["after-switch", "after-boot", "after-health", "after-reject"])
def test_a_cut_install_of_an_unhealthy_release_ends_rolled_back_and_held(
    world: World, point: str
) -> None:
    device = world.enroll()
    desire_firmware(world, device, "1.2.0", healthy=False)
    interrupted(device, point)
    agent = Agent(device.state, clock=Clock())
    result = agent.cycle()
    assert running(device) == "factory" and device.sim.load_env().trying is None
    record = FleetFiles(device.state.root).load_record()
    assert record.installing is None
    assert record.last_update is not None and record.last_update["outcome"] == "rolled-back"
    assert [f.version for f in record.failures] == ["1.2.0"]
    assert result.plan is not None and isinstance(result.plan.steps[0], Hold)
    again = agent.cycle()
    assert again.did == () and running(device) == "factory"


def test_a_cut_app_install_is_recorded_once_it_switched(world: World) -> None:
    device = world.enroll()
    publish_app(world, "pump", "1.0", PUMP)
    set_desired(
        world,
        world.operator,
        device.config.serial,
        {"apps": [{"name": "pump", "version": "1.0", "config": {"rate": 5}}]},
    )
    interrupted(device, "app-after-switch")
    assert apps.current_version(device.sim.root, "pump") == "1.0"
    assert apps.read_config(device.sim.root, "pump") is None  # cut before its configuration
    result = Agent(device.state, clock=Clock()).cycle()
    last = FleetFiles(device.state.root).load_record().last_update
    assert last is not None and last["outcome"] == "committed" and last["version"] == "1.0"
    assert f"recorded the interrupted install of {last['target']}" in result.did
    assert "configured app pump" in result.did
    assert apps.read_config(device.sim.root, "pump") == {"rate": 5}
    assert FleetFiles(device.state.root).load_record().installing is None


def test_a_cut_removal_leaves_the_app_gone_and_the_leftover_is_cleaned(world: World) -> None:
    device = world.enroll()
    apps.install_app(device.sim.root, "old", "1", {"x": b"x"}, apps.files_digest({"x": b"x"}))
    set_desired(world, world.operator, device.config.serial, {"apps": []})
    interrupted(device, "app-removed")
    assert apps.installed_apps(device.sim.root) == {}
    assert any(p.name.startswith(".removed-") for p in (device.sim.root / "apps").iterdir())
    Agent(device.state, clock=Clock()).cycle()
    assert list((device.sim.root / "apps").iterdir()) == []


def app_update_cut_after_switch(world: World, device: Device, *, earlier: bool) -> str:
    """pump 1.0 runs (if ``earlier``); 1.1, which fails its health check, is desired; the
    power goes right after its switch, before its checks ran. Returns 1.1's target."""
    if earlier:
        publish_app(world, "pump", "1.0", PUMP)
        set_desired(
            world,
            world.operator,
            device.config.serial,
            {"apps": [{"name": "pump", "version": "1.0"}]},
        )
        Agent(device.state, clock=Clock()).cycle()
        assert apps.current_version(device.sim.root, "pump") == "1.0"
    bad = publish_app(
        world, "pump", "1.1", {"bin/pump": b"pump 1.1\n"}, health_checks=(("false",),)
    )
    set_desired(
        world, world.operator, device.config.serial, {"apps": [{"name": "pump", "version": "1.1"}]}
    )
    interrupted(device, "app-after-switch")
    assert apps.current_version(device.sim.root, "pump") == "1.1"  # switched, not checked
    return bad.target


def test_a_cut_after_the_switch_of_an_unhealthy_app_runs_its_checks_and_rolls_back(
    world: World,
) -> None:
    """Regression: recovery used to record ``committed`` without running the checks, and the
    unhealthy version stayed current for good."""
    device = world.enroll()
    target = app_update_cut_after_switch(world, device, earlier=True)
    agent = Agent(device.state, clock=Clock())
    result = agent.cycle()
    assert apps.current_version(device.sim.root, "pump") == "1.0"
    assert f"recorded the interrupted install of {target}" in result.did
    record = FleetFiles(device.state.root).load_record()
    assert record.installing is None
    last = record.last_update
    assert last is not None and (last["outcome"], last["version"]) == ("rolled-back", "1.0")
    assert last["event"].count("false: exit status 1") == 1
    assert [(f.target, f.outcome) for f in record.failures] == [(target, "rolled-back")]
    assert agent.inventory()["apps"] == {"pump": "1.0"}
    again = agent.cycle()  # held: not tried again
    assert again.did == () and again.plan is not None and isinstance(again.plan.steps[0], Hold)
    assert apps.current_version(device.sim.root, "pump") == "1.0"


def test_a_cut_unhealthy_first_install_is_recorded_failed_as_without_the_cut(
    world: World,
) -> None:
    device = world.enroll()
    target = app_update_cut_after_switch(world, device, earlier=False)
    Agent(device.state, clock=Clock()).cycle()
    record = FleetFiles(device.state.root).load_record()
    last = record.last_update
    assert last is not None and last["outcome"] == "unhealthy"
    assert "has no earlier version" in last["event"]
    assert [(f.target, f.outcome) for f in record.failures] == [(target, "failed")]
    assert apps.current_version(device.sim.root, "pump") == "1.1"  # nothing to return to


def test_an_open_app_trial_is_finished_even_when_the_record_was_lost(world: World) -> None:
    """The trial lives beside the app: a fresh agent record still finishes it."""
    device = world.enroll()
    app_update_cut_after_switch(world, device, earlier=True)
    FleetFiles(device.state.root).record_path.unlink()
    result = Agent(device.state, clock=Clock()).cycle()
    assert "finished an interrupted trial of app pump: rolled-back" in result.did
    assert apps.current_version(device.sim.root, "pump") == "1.0"

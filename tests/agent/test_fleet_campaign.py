"""Agents in a rollout campaign, end to end: the scheduler assigns them, their directives
name the campaign, they install and report every step; a device whose health check fails
rolls back by itself, reports it with the reason, and is not updated again."""

from __future__ import annotations

import datetime as dt
from typing import Any

from garrison.agent.agent import Agent
from garrison.agent.fleet_state import FleetFiles
from garrison.fleet.scheduler import tick
from tests.agent.test_fleet_converge import running
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

# runs in the device's directory: a device holding a file named "unhealthy" fails it
HEALTH = (("test", "!", "-e", "unhealthy"),)


def campaign_of(world: World, campaign_id: int) -> dict[str, Any]:
    with world.fleet.api(world.operator) as api:
        response = api.get(f"/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def roll(world: World, agents: list[Agent], campaign_id: int, rounds: int = 12) -> dict[str, Any]:
    """Scheduler ticks and agent cycles until the campaign is no longer running."""
    for _ in range(rounds):
        tick(world.fleet.database, dt.datetime.now(dt.UTC))
        for agent in agents:
            agent.cycle()
        found = campaign_of(world, campaign_id)
        if found["state"] != "running":
            return found
    raise AssertionError(f"campaign still running after {rounds} rounds: {found['counts']}")


def test_a_campaign_rolls_through_reports_every_step_and_a_failed_device_rolls_back(
    world: World,
) -> None:
    world.publish("fw", "2.0.0", health_checks=HEALTH, desired=False)
    devices: list[Device] = [world.enroll() for _ in range(4)]
    sick = devices[2]
    (sick.sim.root / "unhealthy").write_bytes(b"")
    serials = [d.config.serial for d in devices]
    with world.fleet.api(world.operator) as api:
        assert api.post("/groups", json={"name": "line-1"}).status_code == 201
        assert api.post("/groups/line-1/members", json={"add": serials}).status_code == 200
        created = api.post(
            "/campaigns",
            json={
                "name": "fw-2",
                "group": "line-1",
                "release": {"name": "fw", "version": "2.0.0"},
                "plan": {"canary": 1, "waves": [50, 100], "failure_threshold": 1},
            },
        )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    agents = [Agent(d.state, clock=Clock()) for d in devices]

    done = roll(world, agents, campaign_id)
    assert done["state"] == "completed", done
    states = {d["serial"]: d for d in campaign_of(world, campaign_id)["devices"]}
    assert {s: states[s]["state"] for s in serials} == {
        s: "rolled-back" if s == sick.config.serial else "succeeded" for s in serials
    }
    assert "test '!' -e unhealthy: exit status 1" in states[sick.config.serial]["detail"]
    assert [running(d) for d in devices] == ["2.0.0", "2.0.0", "factory", "2.0.0"]

    # the healthy devices reported every step, the sick one its rollback
    for device in devices:
        record = FleetFiles(device.state.root).load_record()
        assert record.outbox == []  # all delivered
        sent = [state for campaign, _target, state in record.reported if campaign == campaign_id]
        last = "rolled-back" if device is sick else "committed"
        assert sent == ["downloading", "downloaded", "installing", last]
    with world.fleet.api(world.operator) as api:
        history = api.get(f"/devices/{sick.config.serial}/history").json()
        level = api.get("/fleet/level").json()
    assert any("rolled-back" in h["summary"] for h in history)
    line = next(g for g in level["groups"] if g["group"] == "line-1")
    assert line["counts"]["on_target"] == 3 and line["counts"]["failed"] == 1
    assert line["proof"]["exactly_one_each"] is True

    # the sick device is not updated again, whoever names the release next (after the
    # campaign, the group's desired state does): nothing is fetched or installed
    downloads = sick.updates.downloads
    for _ in range(2):
        again = agents[2].cycle()
        assert again.did == () and running(sick) == "factory"
        assert again.plan is not None and [type(s).__name__ for s in again.plan.steps] == ["Hold"]
        assert again.directive.firmware is not None
        assert again.directive.firmware.version == "2.0.0"
    assert not downloads.exists() or not any(downloads.iterdir())

    # a second campaign of the same release: the sick device tells it "failed" at once
    with world.fleet.api(world.operator) as api:
        second = api.post(
            "/campaigns",
            json={
                "name": "fw-2-again",
                "group": "line-1",
                "release": {"name": "fw", "version": "2.0.0"},
                "plan": {"failure_threshold": 1},
            },
        )
    assert second.status_code == 201, second.text
    retry = roll(world, [agents[2]], second.json()["id"])
    entries = {d["serial"]: d for d in campaign_of(world, retry["id"])["devices"]}
    assert entries[sick.config.serial]["state"] == "failed"
    assert "not tried again" in entries[sick.config.serial]["detail"]
    assert running(sick) == "factory"


def test_a_device_already_on_the_target_reports_committed_without_installing(
    world: World,
) -> None:
    world.publish("fw", "2.0.0", desired=False)
    device = world.enroll()
    serial = device.config.serial
    with world.fleet.api(world.operator) as api:
        assert (
            api.put(
                f"/desired/devices/{serial}", json={"firmware": {"name": "fw", "version": "2.0.0"}}
            ).status_code
            == 200
        )
    agent = Agent(device.state, clock=Clock())
    agent.cycle()
    assert running(device) == "2.0.0"
    with world.fleet.api(world.operator) as api:
        assert api.delete(f"/desired/devices/{serial}").status_code == 204  # not pinned
        assert api.post("/groups", json={"name": "line-2"}).status_code == 201
        assert api.post("/groups/line-2/members", json={"add": [serial]}).status_code == 200
        created = api.post(
            "/campaigns",
            json={
                "name": "fw-2b",
                "group": "line-2",
                "release": {"name": "fw", "version": "2.0.0"},
            },
        )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    before = device.snapshot()
    done = roll(world, [agent], campaign_id)
    assert done["state"] == "completed"
    assert device.snapshot() == before  # nothing installed again
    states = [d["state"] for d in campaign_of(world, campaign_id)["devices"]]
    assert states == ["succeeded"]


def test_abort_with_rollback_sends_the_updated_device_back_and_it_stays(world: World) -> None:
    world.publish("fw", "2.0.0", desired=False, security_version=0)  # back is allowed
    devices = [world.enroll() for _ in range(2)]
    serials = [d.config.serial for d in devices]
    with world.fleet.api(world.operator) as api:
        assert api.post("/groups", json={"name": "line-3"}).status_code == 201
        assert api.post("/groups/line-3/members", json={"add": serials}).status_code == 200
        created = api.post(
            "/campaigns",
            json={
                "name": "fw-2c",
                "group": "line-3",
                "release": {"name": "fw", "version": "2.0.0"},
                "plan": {"canary": 1, "waves": [100], "soak_minutes": 600},
            },
        )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    agents = [Agent(d.state, clock=Clock()) for d in devices]
    for _ in range(6):  # the canary updates; the soak holds the wave back
        tick(world.fleet.database, dt.datetime.now(dt.UTC))
        for agent in agents:
            agent.cycle()
        if campaign_of(world, campaign_id)["counts"].get("succeeded") == 1:
            break
    updated = [d for d in devices if running(d) == "2.0.0"]
    assert len(updated) == 1
    with world.fleet.api(world.operator) as api:
        aborted = api.post(f"/campaigns/{campaign_id}/abort", json={"rollback": True})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["sent_back"] == [updated[0].config.serial]

    did: list[str] = []
    for _ in range(3):
        tick(world.fleet.database, dt.datetime.now(dt.UTC))
        did += [line for agent in agents for line in agent.cycle().did]
    assert [running(d) for d in devices] == ["factory", "factory"]
    assert did == ["operator rollback: committed, factory runs"]  # and nothing installed again
    states = {d["serial"]: d["state"] for d in campaign_of(world, campaign_id)["devices"]}
    assert states[updated[0].config.serial] == "reverted"
    last = FleetFiles(updated[0].state.root).load_record().last_update
    assert last is not None and last["target"] is None and last["version"] == "factory"
    with world.fleet.api(world.operator) as api:
        inventory = api.get(f"/devices/{updated[0].config.serial}/detail").json()["inventory"]
    assert inventory["firmware"] == "factory"
    assert inventory["last_update"]["event"].startswith("operator rollback")

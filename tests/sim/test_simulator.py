"""The fleet simulator against a real served fleet: devices enroll over EST, check in with
their inventory, poll with If-None-Match, and roll a real campaign through canary and waves
(one device failing its health check and rolling back), or back again after an abort."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from sqlalchemy import select

from garrison.fleet.inventory import parse_inventory
from garrison.sim.device import Behaviour
from garrison.sim.fleet import DeviceSpec, Simulator
from garrison.sim.scenario import Scenario
from garrison.store.tables import device_inventory, devices
from tests.sim.conftest import SimFleet

FINAL = ("completed", "halted", "aborted")


def simulator(sim_fleet: SimFleet, behaviour: Behaviour) -> Simulator:
    return Simulator(
        "127.0.0.1",
        sim_fleet.port,
        sim_fleet.root_ca,
        sim_fleet.directory / sim_fleet.shared.unique("sim"),
        behaviour,
        seed=7,
    )


def specs(scenario: Scenario, sim_fleet: SimFleet, count: int) -> list[DeviceSpec]:
    prefix = sim_fleet.shared.unique("SIM")
    tokens = scenario.batch([f"{prefix}-{i:02d}" for i in range(count)], "gw-1")
    return [DeviceSpec(serial, token, "gw-1", "1.0.0") for serial, token in tokens]


async def wait_for(scenario: Scenario, campaign: int, states: tuple[str, ...]) -> dict[str, Any]:
    for _ in range(600):
        view = await asyncio.to_thread(scenario.show, campaign)
        if view["state"] in states:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"campaign {campaign} stayed {view['state']}: {view['counts']}")


def test_idle_devices_cost_one_304_per_cycle(sim_fleet: SimFleet, scenario: Scenario) -> None:
    fleet = specs(scenario, sim_fleet, 4)
    sim = simulator(sim_fleet, Behaviour())

    async def run() -> list[Counter[str]]:
        await sim.enroll(fleet)
        seen = []
        for _ in range(3):
            before = Counter(sim.tally.requests)
            await sim.cycle_all()
            seen.append(sim.tally.requests - before)
        await sim.stop()
        return seen

    first, second, third = asyncio.run(run())
    assert first == {"POST /device/v1/checkin 200": 4, "GET /device/v1/directive 200": 4}
    assert second == third == {"GET /device/v1/directive 304": 4}
    assert sim.tally.failed_cycles == 0 and not sim.tally.errors
    with sim_fleet.shared.served.database.read() as conn:
        stored = conn.execute(
            select(devices.c.serial, device_inventory.c.firmware, device_inventory.c.data)
            .join(device_inventory, device_inventory.c.device_id == devices.c.id)
            .where(devices.c.serial.in_([s.serial for s in fleet]))
        ).all()
    assert sorted(r.serial for r in stored) == sorted(s.serial for s in fleet)
    for row in stored:
        assert row.firmware == "1.0.0"
        assert (json.loads(row.data)["serial"], json.loads(row.data)["hardware"]) == (
            row.serial,
            "gw-1",
        )
        sent = parse_inventory(sim.device(row.serial).state.inventory(5), "0.1.0")
        assert sent.to_json() | {"uptime_seconds": None} == json.loads(row.data) | {
            "uptime_seconds": None
        }


def test_a_campaign_rolls_through_canary_and_waves_and_one_device_rolls_back(
    sim_fleet: SimFleet, scenario: Scenario
) -> None:
    fleet = specs(scenario, sim_fleet, 6)
    failing = fleet[-1].serial  # the highest device id: assigned in the last wave
    sim = simulator(
        sim_fleet,
        Behaviour(install_seconds=0.05, poll_seconds=0.2, failing=frozenset({failing})),
    )
    group = sim_fleet.shared.unique("plant")
    plan = {"canary": 1, "waves": [50, 100], "max_per_minute": 600, "failure_threshold": 1}

    async def run() -> dict[str, Any]:
        await sim.enroll(fleet)
        await sim.cycle_all()  # inventories first: the campaign knows each one's version
        await asyncio.to_thread(scenario.group, group, members=[s.serial for s in fleet])
        created = await asyncio.to_thread(scenario.campaign, group, group, ("fw", "2.0.0"), plan)
        sim.start(spread=0.2)
        try:
            return await wait_for(scenario, created["id"], FINAL)
        finally:
            await sim.stop()

    view = asyncio.run(run())
    assert view["state"] == "completed", view
    assert view["counts"] == {"succeeded": 5, "rolled-back": 1}
    assert [(p["name"], p["size"], p["status"]) for p in view["phase_progress"]] == [
        ("canary", 1, "done"),
        ("wave 1", 2, "done"),
        ("wave 2", 3, "done"),
    ]
    assert sim.versions() == {"2.0.0": 5, "1.0.0": 1}
    assert sim.device(failing).state.firmware == "1.0.0"
    assert (sim.tally.committed, sim.tally.rolled_back, sim.tally.refused_reports) == (5, 1, 0)
    (level,) = [g for g in scenario.level()["groups"] if g["group"] == group]
    assert level["counts"] == {"on_target": 5, "updating": 0, "failed": 1, "not_reached": 0}
    assert level["proof"]["exactly_one_each"] and level["proof"]["classified"] == 6
    with sim_fleet.shared.served.database.read() as conn:
        data = conn.execute(
            select(device_inventory.c.data)
            .join(devices, devices.c.id == device_inventory.c.device_id)
            .where(devices.c.serial == failing)
        ).scalar_one()
    last = json.loads(data)["last_update"]
    assert (last["outcome"], last["version"]) == ("rolled-back", "1.0.0")


def test_abort_with_rollback_sends_updated_devices_back(
    sim_fleet: SimFleet, scenario: Scenario
) -> None:
    fleet = specs(scenario, sim_fleet, 3)
    sim = simulator(sim_fleet, Behaviour(install_seconds=0.05, poll_seconds=0.2))
    group = sim_fleet.shared.unique("line")
    plan = {"canary": 1, "waves": [100], "soak_minutes": 10}  # stays in the canary's soak

    async def run() -> dict[str, Any]:
        await sim.enroll(fleet)
        await sim.cycle_all()
        await asyncio.to_thread(scenario.group, group, members=[s.serial for s in fleet])
        created = await asyncio.to_thread(scenario.campaign, group, group, ("fw", "2.0.0"), plan)
        sim.start(spread=0.1)
        try:
            for _ in range(600):
                if sim.versions()["2.0.0"] == 1:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the canary's report reaches the control plane
            await asyncio.to_thread(
                scenario.call,
                "POST",
                f"/campaigns/{created['id']}/abort",
                role="operator",
                json={"rollback": True},
            )
            for _ in range(600):
                view = await asyncio.to_thread(scenario.show, created["id"])
                if view["counts"].get("reverted") == 1:
                    return view
                await asyncio.sleep(0.1)
            raise AssertionError(f"not reverted: {view['counts']}")
        finally:
            await sim.stop()

    view = asyncio.run(run())
    assert view["state"] == "aborted"
    assert sim.versions() == {"1.0.0": 3}
    reverted = [d for d in view["devices"] if d["state"] == "reverted"]
    assert len(reverted) == 1
    assert sim.device(reverted[0]["serial"]).state.previous == "2.0.0"

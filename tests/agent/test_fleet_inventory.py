"""The inventory the agent reports (accepted as is by the control plane's parser), its
digest, the record the agent keeps, and when the agent checks in."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from garrison import __version__
from garrison.agent.agent import HEARTBEAT_POLLS, Agent
from garrison.agent.converge import Failure
from garrison.agent.fleet_state import FleetFiles, Installing, Record
from garrison.agent.inventory import (
    boot_report,
    build_inventory,
    host_uptime,
    inventory_digest,
    printable,
)
from garrison.fleet.inventory import parse_inventory
from garrison.updates import bootenv
from garrison.updates.simdevice import SimulatedDevice
from tests.agent.test_fleet_channel import GOOD, PlayedControlPlane, local_app
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

LAST = {
    "target": "fw/2.0.0/fw-2.0.0.img",
    "outcome": "rolled-back",
    "version": "1.0.0",
    "event": "rolled back: health check failed",
    "at": "2026-11-21T10:00:00Z",
}


def device(tmp_path: Path) -> SimulatedDevice:
    return SimulatedDevice.create(tmp_path / "dev", b"factory image\n", "1.0.0", 1)


def test_the_inventory_is_what_the_control_plane_accepts(tmp_path: Path) -> None:
    sim = device(tmp_path)
    inventory = build_inventory(
        "DM-1000", "edge-gw-2", sim.load_env(), {"pump": "1.2.0", "half": None}, 86400, LAST
    )
    assert inventory == {
        "serial": "DM-1000",
        "hardware": "edge-gw-2",
        "firmware": "1.0.0",
        "boot": {"slot": "a", "state": "committed", "last_event": sim.load_env().last_event},
        "apps": {"pump": "1.2.0"},
        "uptime_seconds": 86400,
        "last_update": LAST,
    }
    parsed = parse_inventory(inventory, __version__)
    assert parsed.firmware == "1.0.0" and dict(parsed.apps) == {"pump": "1.2.0"}
    assert parsed.last_update is not None and parsed.last_update.outcome == "rolled-back"
    # a device without a device directory reports what it can
    bare = build_inventory("DM-1000", "edge-gw-2", None, {}, 5, None)
    assert parse_inventory(bare).firmware is None


def test_a_trial_and_the_booted_slot_are_reported(tmp_path: Path) -> None:
    sim = device(tmp_path)
    env = sim.load_env()
    info = bootenv.SlotInfo.of(b"new image", "2.0.0", 1)
    trial = bootenv.switch_to(
        bootenv.mark_written(bootenv.begin_write(env, "b", info), "b", info), "b", 3
    )
    report = boot_report(trial)
    assert report["state"] == "trial" and report["slot"] == "a"  # not yet booted into b
    assert parse_inventory(build_inventory("S-1", "m", trial, {}, 0, None)).boot.state == "trial"


def test_the_digest_ignores_the_uptime_only(tmp_path: Path) -> None:
    env = device(tmp_path).load_env()
    one = build_inventory("S-1", "m", env, {"pump": "1"}, 10, None)
    assert inventory_digest(one) == inventory_digest({**one, "uptime_seconds": 99999})
    assert inventory_digest(one) != inventory_digest({**one, "apps": {"pump": "2"}})
    assert inventory_digest(one) != inventory_digest({**one, "last_update": LAST})
    # the agent's digest is the control plane's (same canonical form, same exclusion)
    assert len(inventory_digest(one)) == 64


def test_report_text_is_one_printable_line() -> None:
    assert printable("health:\tfailed\nexit 1\x00") == "health: failed exit 1 "
    assert len(printable("x" * 1000)) == 300


def test_host_uptime(tmp_path: Path) -> None:
    proc = tmp_path / "uptime"
    proc.write_text("12345.67 4567.89\n")
    assert host_uptime(proc) == 12345
    proc.write_text("garbage")
    assert 0 <= host_uptime(proc) < 10**6  # the agent process's uptime instead
    assert host_uptime(tmp_path / "missing") >= 0


def test_the_record_round_trips_and_keeps_bounds() -> None:
    at = dt.datetime(2026, 11, 21, 10, tzinfo=dt.UTC)
    record = Record(
        inventory_digest="d",
        polls_since_checkin=3,
        downloads={"fw/a.img": "ab" * 32},
        installing=Installing("app", "apps/p.tar", "1", None, "p"),
        last_update=dict(LAST),
        poll=[30, 5],
    )
    for n in range(40):
        record.add_failure(Failure(f"t{n}", None, "1", "failed", "no", at))
    record.add_failure(Failure("t39", None, "1", "rolled-back", "again", at))  # replaces
    assert len(record.failures) == 32 and record.failures[-1].event == "again"
    assert [f.target for f in record.failures].count("t39") == 1
    for n in range(70):
        record.queue_report({"campaign": 1, "target": f"t{n}", "state": "downloading"})
    assert len(record.outbox) == 64
    assert Record.from_json(record.to_json()) == record


def test_fleet_files_survive_damage(tmp_path: Path) -> None:
    files = FleetFiles(tmp_path)
    assert files.load_record() == Record() and files.load_directive() is None
    files.save_record(Record(inventory_digest="x"))
    assert files.load_record().inventory_digest == "x"
    files.record_path.write_text('{"failures": [{"target": 1}]}')
    assert files.load_record() == Record()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_agent_checks_in_on_change_and_as_a_heartbeat(world: World) -> None:
    enrolled: Device = world.enroll()
    plane = PlayedControlPlane(enrolled.config.serial)
    plane.directive = lambda _r: httpx.Response(200, json={**GOOD, "apps": None})
    agent = Agent(enrolled.state, clock=Clock(), transport=httpx.MockTransport(plane))
    checked = [agent.cycle().check_in is not None for _ in range(HEARTBEAT_POLLS + 1)]
    assert checked == [True] + [False] * (HEARTBEAT_POLLS - 1) + [True]
    local_app(enrolled, "tool")  # the inventory changes: the next cycle checks in
    assert agent.cycle().check_in is not None
    assert agent.cycle().check_in is None
    # a real control plane stores what the agent reports
    real = Agent(enrolled.state, clock=Clock())
    real.check_in()
    with world.fleet.api(world.operator) as api:
        found = api.get(f"/devices/{enrolled.config.serial}/detail").json()["inventory"]
    assert found["apps"] == {"tool": "1.0"} and found["hardware"] == "gw-2"
    assert found["agent_version"] == __version__

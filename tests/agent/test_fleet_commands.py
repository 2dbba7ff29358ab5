"""Operator commands travel in the directive, end to end: a served control plane (SQLite and
PostgreSQL) and real agents over real mutual TLS, every request counted on the wire.

* An idle cycle is exactly one request: ``GET /device/v1/directive`` answered ``304``.
* An operator's rollback changes the device's directive (it names the command): the agent
  fetches it from ``/device/v1/commands`` only then, carries it out and reports it done; the
  directive changes again (no command), and the device is idle again.
* An app whose desired release is not built for the device's model is kept as it runs."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from garrison.agent.agent import Agent, CycleResult
from garrison.agent.est_client import tls_context
from garrison.store.tables import device_commands, device_directives, devices
from garrison.updates import apps
from tests.agent.test_fleet_converge import LOGGER, PUMP_1, PUMP_2, publish_app, running
from tests.conftest import Clock
from tests.updates import conftest as updates_conftest
from tests.updates.conftest import Device, World

world = updates_conftest.world  # the fixture, shared with tests/updates

DIRECTIVE = ("GET", "/device/v1/directive")


class Wire(httpx.BaseTransport):
    """The device's real mutual-TLS transport, recording (method, path, status) of every
    request that reaches the network."""

    def __init__(self, device: Device) -> None:
        identity = device.state.require_current()
        context = tls_context(
            str(device.state.trust_path),
            str(identity.cert_path),
            str(identity.key_path),
            device.state.key_secrets(device.config).passphrase,
        )
        self.inner = httpx.HTTPTransport(verify=context)
        self.seen: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code))
        return response

    def close(self) -> None:
        self.inner.close()

    def take(self) -> list[tuple[str, str, int]]:
        seen, self.seen = self.seen, []
        return seen


def wired(device: Device) -> tuple[Agent, Wire]:
    wire = Wire(device)
    return Agent(device.state, clock=Clock(), transport=wire), wire


def settle(agent: Agent, wire: Wire) -> CycleResult:
    """Cycle until a cycle is idle (at most five); returns that cycle."""
    for _ in range(5):
        result = agent.cycle()
        if result.directive_status == 304 and result.check_in is None:
            return result
    raise AssertionError(f"not idle after five cycles: {wire.seen}")


def stored(world: World, serial: str) -> tuple[str, dict[str, Any]]:
    """The device's stored directive: its ETag and body."""
    with world.fleet.database.read() as conn:
        row = conn.execute(
            select(device_directives.c.etag, device_directives.c.body)
            .join(devices, devices.c.id == device_directives.c.device_id)
            .where(devices.c.serial == serial)
        ).one()
    return row.etag, json.loads(row.body)


def test_an_idle_cycle_is_one_request_answered_304(world: World) -> None:
    world.publish("fw", "1.1.0")
    device = world.enroll()
    agent, wire = wired(device)
    settle(agent, wire)
    assert running(device) == "1.1.0"
    wire.take()

    for _ in range(3):
        idle = agent.cycle()
        assert wire.take() == [(*DIRECTIVE, 304)]  # one request on the wire, nothing else
        assert idle.exchanges == (("GET /device/v1/directive", 304),)
        assert idle.command is None and idle.did == ()


def test_an_operator_rollback_reaches_the_agent_through_its_directive(world: World) -> None:
    world.publish("fw", "1.0.0")
    device = world.enroll()
    serial = device.config.serial
    agent, wire = wired(device)
    settle(agent, wire)
    world.publish("fw", "1.1.0")
    settle(agent, wire)
    assert running(device) == "1.1.0"
    before, doc = stored(world, serial)
    assert doc["command"] is None
    wire.take()

    with world.fleet.api(world.operator) as api:
        queued = api.post("/devices/rollback", json={"serials": [serial]})
    assert queued.status_code == 200, queued.text
    with_command, doc = stored(world, serial)
    assert with_command != before  # queued: the ETag changed
    with world.fleet.database.read() as conn:
        command_id = conn.execute(
            select(device_commands.c.id)
            .join(devices, devices.c.id == device_commands.c.device_id)
            .where(devices.c.serial == serial)
        ).scalar_one()
    assert doc["command"] == {"id": command_id, "action": "rollback"}

    back = agent.cycle()
    assert back.directive_status == 200 and back.directive.etag == with_command
    assert back.command is not None and back.command.outcome == "committed"
    assert running(device) == "1.0.0"
    assert wire.take() == [
        (*DIRECTIVE, 200),
        ("GET", "/device/v1/commands", 200),
        ("POST", f"/device/v1/commands/{command_id}", 204),
        ("POST", "/device/v1/checkin", 200),  # the device changed: checked in again
    ]
    with world.fleet.database.read() as conn:
        row = conn.execute(
            select(device_commands.c.done_at, device_commands.c.outcome).where(
                device_commands.c.id == command_id
            )
        ).one()
    assert row.done_at is not None and row.outcome == "committed"
    done, doc = stored(world, serial)
    assert done not in (with_command, before)  # completed: changed again (no command, hold)
    assert doc["command"] is None and doc["firmware"] is None

    after = agent.cycle()  # the new directive: no command, so /commands is not asked
    assert after.directive.etag == done and after.command is None
    assert ("GET", "/device/v1/commands", 200) not in wire.take()
    agent.cycle()
    assert wire.take() == [(*DIRECTIVE, 304)]  # on hold and idle: one request
    assert running(device) == "1.0.0"


def test_an_app_release_not_built_for_the_model_keeps_the_installed_app(world: World) -> None:
    token = world.operator
    publish_app(world, "pump", "1.0", PUMP_1, hardware=("gw-1", "gw-2"))
    publish_app(world, "pump", "2.0", PUMP_2, hardware=("gw-1",))  # not for gw-2
    publish_app(world, "logger", "0.9", LOGGER, hardware=("gw-2",))
    device = world.enroll()  # a gw-2
    serial = device.config.serial
    agent, wire = wired(device)
    with world.fleet.api(token) as api:
        group = {"name": "plant", "kind": "static"}
        assert api.post("/groups", json=group).status_code == 201
        assert api.post("/groups/plant/members", json={"add": [serial]}).status_code == 200
        wanted = {"apps": [{"name": "pump", "version": "1.0", "config": {"port": 502}}]}
        assert api.put("/desired/groups/plant", json=wanted).status_code == 200
    settle(agent, wire)
    root = device.sim.root
    assert apps.installed_apps(root) == {"pump": "1.0"}

    with world.fleet.api(token) as api:
        wanted = {
            "apps": [{"name": "pump", "version": "2.0"}, {"name": "logger", "version": "0.9"}]
        }
        assert api.put("/desired/groups/plant", json=wanted).status_code == 200
        detail = api.get(f"/devices/{serial}/detail").json()
    reason = "release pump 2.0 is not built for model gw-2"
    assert detail["directive"]["kept_apps"] == [{"name": "pump", "reason": reason}]
    assert [a["name"] for a in detail["directive"]["apps"]] == ["logger"]
    pump = next(a for a in detail["desired"]["apps"] if a["name"] == "pump")
    assert pump["release"]["fits"] is False

    result = agent.cycle()
    assert result.directive.kept == {"pump"}
    assert not any("pump" in line for line in result.did), result.did
    # pump stays exactly as it ran (version and configuration); logger is installed
    assert apps.installed_apps(root) == {"logger": "0.9", "pump": "1.0"}
    assert apps.read_config(root, "pump") == {"port": 502}
    assert (root / "apps" / "pump" / "current" / "bin" / "pump").read_bytes() == PUMP_1["bin/pump"]
    idle = settle(agent, wire)
    assert idle.plan is not None and idle.plan.steps == ()

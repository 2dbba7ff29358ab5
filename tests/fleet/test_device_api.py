"""The device API of the fleet model over real mutual TLS: check-in with inventory, the
directive with ETag / If-None-Match, and the update offer from the directive. Hostile
reports (another device's identity, malformed or oversize inventories) are refused with a
precise 4xx, audited, and change nothing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select

from garrison.fleet.desired_state import DesiredSpec, ReleaseRef, set_desired
from garrison.store.tables import (
    audit_log,
    device_directives,
    device_history,
    device_inventory,
    devices,
)
from tests.fleet.conftest import World


def _history(world: World, serial: str) -> list[tuple[str, str]]:
    with world.fleet.database.read() as conn:
        rows = conn.execute(
            select(device_history.c.kind, device_history.c.summary)
            .join(devices, devices.c.id == device_history.c.device_id)
            .where(devices.c.serial == serial)
            .order_by(device_history.c.id)
        )
        return [(r.kind, r.summary) for r in rows]


def _refusals(world: World, action: str) -> list[dict[str, Any]]:
    with world.fleet.database.read() as conn:
        rows = conn.execute(
            select(audit_log.c.actor, audit_log.c.target, audit_log.c.details).where(
                audit_log.c.action == action, audit_log.c.outcome == "refused"
            )
        )
        return [{"actor": r.actor, "target": r.target, **json.loads(r.details)} for r in rows]


def test_checkin_stores_the_inventory_and_its_changes_as_history(world: World) -> None:
    device = world.enroll()
    first = world.checkin(device)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["serial"] == device.serial
    assert (body["poll_seconds"], body["jitter_seconds"]) == (1800, 180)
    assert len(body["directive_etag"]) == 32
    assert _history(world, device.serial) == [
        ("inventory", "first inventory: firmware 1.0.0, slot a (committed), no apps")
    ]

    again = world.checkin(device, uptime_seconds=200)  # only the uptime: no history
    assert again.status_code == 200 and again.json()["directive_etag"] == body["directive_etag"]
    assert len(_history(world, device.serial)) == 1
    with world.fleet.database.read() as conn:
        stored = conn.execute(
            select(device_inventory)
            .join(devices, devices.c.id == device_inventory.c.device_id)
            .where(devices.c.serial == device.serial)
        ).one()
    assert stored.uptime_seconds == 200 and stored.firmware == "1.0.0"
    assert stored.agent_version == "0.4.0" and stored.slot_state == "committed"

    changed = world.checkin(
        device,
        firmware="1.1.0",
        boot={"slot": "b", "state": "committed", "last_event": "committed b"},
        apps={"modbus-bridge": "1.2.0"},
        last_update={
            "target": "fw/1.1.0/fw-1.1.0.img",
            "outcome": "committed",
            "version": "1.1.0",
            "at": "2026-11-21T10:00:00Z",
        },
    )
    assert changed.status_code == 200, changed.text
    assert _history(world, device.serial)[1:] == [
        ("inventory", "firmware 1.0.0 → 1.1.0"),
        ("inventory", "boot slot a (committed) → slot b (committed): committed b"),
        ("inventory", "app modbus-bridge 1.2.0 installed"),
        ("update", "update committed: 1.1.0"),
    ]


def test_an_old_agent_checks_in_without_inventory(world: World) -> None:
    device = world.enroll()
    with world.device_client(device) as client:
        response = client.post("/device/v1/checkin", json={})
    assert response.status_code == 200, response.text
    assert response.json()["poll_seconds"] == 1800
    with world.fleet.database.read() as conn:
        row = conn.execute(
            select(devices.c.last_seen_at, device_inventory.c.digest)
            .outerjoin(device_inventory, device_inventory.c.device_id == devices.c.id)
            .where(devices.c.serial == device.serial)
        ).one()
    assert row.last_seen_at is not None and row.digest is None  # seen; no inventory stored


def test_the_directive_answers_304_when_unchanged_and_writes_nothing(world: World) -> None:
    device = world.enroll()
    etag = world.checkin(device).json()["directive_etag"]
    with world.device_client(device) as client:
        full = client.get("/device/v1/directive")
        assert full.status_code == 200
        assert full.headers["etag"] == f'"{etag}"'
        assert full.headers["garrison-poll"] == "1800;jitter=180"
        doc = full.json()
        assert doc == {
            "etag": etag,
            "firmware": None,
            "apps": None,
            "kept_apps": [],
            "command": None,
            "window": None,
            "poll_seconds": 1800,
            "jitter_seconds": 180,
        }
        before = world.rows(device_directives, device_history, device_inventory, audit_log)
        idle = client.get("/device/v1/directive", headers={"If-None-Match": f'"{etag}"'})
        assert idle.status_code == 304 and idle.content == b""
        assert idle.headers["etag"] == f'"{etag}"'
        assert idle.headers["garrison-poll"] == "1800;jitter=180"
        listed = client.get(
            "/device/v1/directive", headers={"If-None-Match": f'W/"other", "{etag}"'}
        )
        assert listed.status_code == 304
        assert world.rows(device_directives, device_history, device_inventory, audit_log) == before
        stale = client.get("/device/v1/directive", headers={"If-None-Match": '"0000"'})
        assert stale.status_code == 200 and stale.json()["etag"] == etag


def test_the_update_offer_is_the_directives_firmware(world: World) -> None:
    release = world.publish(world.unique("fw"), "2.0.0")
    device, other = world.enroll(), world.enroll(model="gw-9")
    with world.device_client(device) as client:
        assert client.get("/device/v1/update").status_code == 204  # nothing desired
        etag = client.get("/device/v1/directive").headers["etag"]
    now = dt.datetime.now(dt.UTC)
    with world.fleet.database.write() as conn:
        spec = DesiredSpec(firmware=ReleaseRef(release["name"], "2.0.0"))
        set_desired(conn, "device", device.serial, spec, "principal:test", now)
        set_desired(conn, "device", other.serial, spec, "principal:test", now)
    with world.device_client(device) as client:
        offered = client.get("/device/v1/update")
        assert offered.status_code == 200 and offered.json() == {"target": release["target_path"]}
        changed = client.get("/device/v1/directive", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.json()["firmware"] == {
            "target": release["target_path"],
            "version": "2.0.0",
            "campaign": None,
        }
    with world.device_client(other) as client:  # built for gw-1 only: never offered to gw-9
        assert client.get("/device/v1/update").status_code == 204
        assert client.get("/device/v1/directive").json()["firmware"] is None


def test_a_device_reporting_another_identity_is_refused_and_nothing_is_stored(
    world: World,
) -> None:
    device, victim = world.enroll(), world.enroll()
    world.checkin(victim)
    before = world.rows(device_inventory, device_history, device_directives)
    with world.fleet.database.read() as conn:
        seen = conn.execute(
            select(devices.c.last_seen_at).where(devices.c.serial == device.serial)
        ).scalar()

    forged = world.checkin(device, serial=victim.serial, firmware="6.6.6")
    assert forged.status_code == 403
    assert f"names device {victim.serial!r}, but this is {device.serial!r}" in forged.text
    wrong_model = world.checkin(device, hardware="gw-2")
    assert wrong_model.status_code == 403 and "was enrolled as 'gw-1'" in wrong_model.text

    assert world.rows(device_inventory, device_history, device_directives) == before
    with world.fleet.database.read() as conn:
        assert (
            conn.execute(
                select(devices.c.last_seen_at).where(devices.c.serial == device.serial)
            ).scalar()
            == seen
        )
    refused = [r for r in _refusals(world, "device.checkin") if r["target"] == device.serial]
    assert [r["status"] for r in refused] == [403, 403]
    assert refused[0]["actor"] == f"device:{device.serial}"


def test_malformed_and_oversize_inventories_are_refused(world: World) -> None:
    device = world.enroll()
    before = world.rows(device_inventory, device_history)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"inventory": device.inventory(color="red")}, 400, "unknown field(s) color"),
        ({"inventory": device.inventory(firmware=7)}, 400, "inventory.firmware must be a string"),
        ({"inventory": device.inventory(apps={"Bad Name": "1"})}, 400, "not a valid app name"),
        (
            {"inventory": device.inventory(apps={f"a{i}": "1" for i in range(65)})},
            400,
            "at most 64 apps",
        ),
        ({"inventory": device.inventory(uptime_seconds=-1)}, 400, "uptime_seconds"),
        ({"inventory": device.inventory(uptime_seconds=True)}, 400, "uptime_seconds"),
        ({"inventory": device.inventory(boot={"slot": "a\n"})}, 400, "inventory.boot.slot"),
        ({"inventory": device.inventory(boot="a")}, 400, "inventory.boot must be a JSON object"),
        (
            {"inventory": device.inventory(last_update={"at": "yesterday"})},
            400,
            "ISO 8601",
        ),
        ({"inventory": {"hardware": "gw-1"}}, 400, "serial and inventory.hardware are required"),
        ({"inventory": [1, 2]}, 422, "inventory"),
        ({"inventory": device.inventory(), "extra": 1}, 422, "extra"),
        (
            {"inventory": device.inventory(boot={"last_event": "x" * 70_000})},
            413,
            "too large",
        ),
    ]
    with world.device_client(device) as client:
        for body, status, message in cases:
            response = client.post("/device/v1/checkin", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.text, (message, response.text)
    assert world.rows(device_inventory, device_history) == before


def test_without_a_certificate_there_is_no_directive(world: World) -> None:
    with world.fleet.client() as anonymous:
        refused = anonymous.get("/device/v1/directive")
        assert refused.status_code == 403 and "client certificate is required" in refused.text
        assert anonymous.post("/device/v1/checkin", json={}).status_code == 403

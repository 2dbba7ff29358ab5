"""Two ways to meet campaigns, on SQLite and on PostgreSQL:

* ``site``: a fleet database for the campaign service: devices, groups, releases and
  inventories written as rows (the services that own them are tested in tests/fleet), a
  settable clock, and the campaign service and scheduler driven directly;
* ``world`` (tests/fleet's served fleet, one per module and backend): devices enrolled over
  EST that check in and report over mutual TLS, an operator driving the admin API, and the
  control plane's own scheduler.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from garrison.fleet import campaign_reports
from garrison.fleet import campaigns as service
from garrison.fleet.campaign import Plan
from garrison.fleet.scheduler import TickReport, tick
from garrison.identity.devices import DeviceIdentity
from garrison.store.database import Database
from garrison.store.tables import (
    audit_log,
    campaign_devices,
    campaigns,
    desired_state,
    device_commands,
    device_directives,
    device_groups,
    device_history,
    device_inventory,
    devices,
    group_members,
    releases,
)
from tests.conftest import Clock
from tests.fleet.conftest import Device, World, make_world
from tests.server.conftest import shared_fleet

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
ACTOR = "principal:olga"

WATCHED = (
    campaigns,
    campaign_devices,
    device_directives,
    device_history,
    device_commands,
    desired_state,
    devices,
    audit_log,
)


@dataclass
class Site:
    """One fleet database and a clock; helpers that write what campaigns read."""

    db: Database
    clock: Clock = field(default_factory=lambda: Clock(T0))
    serials: dict[int, str] = field(default_factory=dict)

    @property
    def now(self) -> dt.datetime:
        return self.clock()

    def device(
        self, serial: str, model: str = "gw-1", firmware: str | None = "1.0.0", **extra: Any
    ) -> int:
        with self.db.write() as conn:
            device_id = int(
                conn.execute(
                    devices.insert()
                    .values(
                        serial=serial,
                        model=model,
                        status=extra.get("status", "active"),
                        enrolled_at=self.now,
                    )
                    .returning(devices.c.id)
                ).scalar_one()
            )
        self.serials[device_id] = serial
        if firmware is not None:
            self.inventory(device_id, firmware)
        return device_id

    def devices(self, prefix: str, n: int, **kwargs: Any) -> list[int]:
        return [self.device(f"{prefix}-{i:03d}", **kwargs) for i in range(1, n + 1)]

    def inventory(self, device_id: int, firmware: str, slot_state: str = "committed") -> None:
        with self.db.write() as conn:
            conn.execute(device_inventory.delete().where(device_inventory.c.device_id == device_id))
            conn.execute(
                device_inventory.insert().values(
                    device_id=device_id,
                    reported_at=self.now,
                    digest=hashlib.sha256(firmware.encode()).hexdigest(),
                    firmware=firmware,
                    boot_slot="a",
                    slot_state=slot_state,
                    apps="{}",
                    data="{}",
                )
            )

    def group(self, name: str, members: list[int]) -> int:
        with self.db.write() as conn:
            group_id = int(
                conn.execute(
                    device_groups.insert()
                    .values(
                        name=name, kind="static", priority=0, created_by=ACTOR, created_at=self.now
                    )
                    .returning(device_groups.c.id)
                ).scalar_one()
            )
            if members:
                conn.execute(
                    group_members.insert(),
                    [{"group_id": group_id, "device_id": d} for d in members],
                )
        return group_id

    def join(self, group_id: int, device_ids: list[int]) -> None:
        with self.db.write() as conn:
            conn.execute(
                group_members.insert(), [{"group_id": group_id, "device_id": d} for d in device_ids]
            )

    def leave(self, group_id: int, device_id: int) -> None:
        with self.db.write() as conn:
            conn.execute(
                group_members.delete().where(
                    group_members.c.group_id == group_id, group_members.c.device_id == device_id
                )
            )

    def release(
        self,
        name: str = "fw",
        version: str = "2.0.0",
        hardware: tuple[str, ...] = ("gw-1",),
        install: str = "image",
        state: str = "published",
    ) -> int:
        suffix = "img" if install == "image" else "tar"
        custom = {"garrison": {"name": name, "version": version, "hardware": list(hardware)}}
        custom["garrison"]["install"] = install
        with self.db.write() as conn:
            return int(
                conn.execute(
                    releases.insert()
                    .values(
                        name=name,
                        version=version,
                        target_path=f"{name}/{version}/{name}-{version}.{suffix}",
                        sha256="0" * 64,
                        length=1,
                        custom=json.dumps(custom),
                        state=state,
                        proposal=b"{}",
                        created_by="principal:rm",
                        created_at=self.now,
                        published_at=self.now if state == "published" else None,
                    )
                    .returning(releases.c.id)
                ).scalar_one()
            )

    def pin(self, device_id: int, release_id: int) -> None:
        with self.db.write() as conn:
            conn.execute(
                desired_state.insert().values(
                    scope="device",
                    scope_id=device_id,
                    firmware_release_id=release_id,
                    apps=None,
                    updated_by=ACTOR,
                    updated_at=self.now,
                )
            )

    # -- the campaign service ---------------------------------------------------------

    def create(
        self,
        group: str = "plant",
        release: tuple[str, str] = ("fw", "2.0.0"),
        name: str = "roll",
        **plan: object,
    ) -> int:
        spec = service.CampaignSpec(
            name, group, service.ReleaseRef(*release), Plan.from_json(plan or {})
        )
        with self.db.write() as conn:
            return service.create_campaign(conn, spec, ACTOR, self.now)

    def tick(self, seconds: float = 0) -> TickReport:
        self.clock.advance(dt.timedelta(seconds=seconds))
        return tick(self.db, self.now)

    def report(
        self, device_id: int, campaign: int | None, state: str, target: str | None = None
    ) -> str | None:
        if target is None:
            target = self.target_of(campaign) if campaign is not None else "fw/x/fw-x.img"
        identity = DeviceIdentity(device_id, self.serials[device_id], "00")
        with self.db.write() as conn:
            return campaign_reports.record_report(
                conn, identity, campaign_reports.Report(campaign, target, state), self.now
            )

    def target_of(self, campaign_id: int) -> str:
        with self.db.read() as conn:
            return service.get_campaign(conn, campaign_id).target

    def states(self, campaign_id: int) -> dict[str, str]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(devices.c.serial, campaign_devices.c.state)
                .join(devices, devices.c.id == campaign_devices.c.device_id)
                .where(campaign_devices.c.campaign_id == campaign_id)
            )
            return {r.serial: r.state for r in rows}

    def in_state(self, campaign_id: int, state: str) -> list[int]:
        with self.db.read() as conn:
            return sorted(
                conn.execute(
                    select(campaign_devices.c.device_id).where(
                        campaign_devices.c.campaign_id == campaign_id,
                        campaign_devices.c.state == state,
                    )
                ).scalars()
            )

    def campaign(self, campaign_id: int) -> service.CampaignView:
        with self.db.read() as conn:
            return service.get_campaign(conn, campaign_id)

    def directive(self, device_id: int) -> dict[str, Any]:
        with self.db.read() as conn:
            body = conn.execute(
                select(device_directives.c.body).where(device_directives.c.device_id == device_id)
            ).scalar_one()
        value: dict[str, Any] = json.loads(body)
        return value

    def audit(self, action: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(audit_log.c.actor, audit_log.c.details)
                .where(audit_log.c.action == action)
                .order_by(audit_log.c.seq)
            )
            return [{"actor": r.actor, **json.loads(r.details)} for r in rows]

    def snapshot(self) -> dict[str, Any]:
        """Every row of the tables a campaign action may change (to prove nothing did)."""
        with self.db.read() as conn:
            return {t.name: _rows(conn, t) for t in WATCHED}

    def count(self, table: Any) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _rows(conn: Connection, table: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(row) for row in conn.execute(select(table))), key=lambda r: tuple(map(str, r))
    )


@pytest.fixture
def site(db_url: str) -> Iterator[Site]:
    database = Database(db_url)
    database.migrate()
    yield Site(database)
    database.dispose()


# -- a served fleet -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp(request.param)
    with shared_fleet(request.param, directory) as shared:
        yield make_world(shared, directory / "devices")


@pytest.fixture(scope="module")
def fw(world: World) -> dict[str, Any]:
    """fw 2.0.0 for gw-1 (published), an app package and a release awaiting signatures."""
    world.publish("app", "1.0.0", install="app")
    return world.publish("fw", "2.0.0")


def enroll_group(world: World, n: int, model: str = "gw-1") -> tuple[str, list[Device]]:
    """``n`` devices enrolled and checked in on 1.0.0, in a new static group."""
    devices = [world.enroll(model) for _ in range(n)]
    for device in devices:
        assert world.checkin(device).status_code == 200
    name = world.unique("g")
    with world.api() as api:
        made = api.post("/groups", json={"name": name})
        assert made.status_code == 201, made.text
        added = api.post(f"/groups/{name}/members", json={"add": [d.serial for d in devices]})
        assert added.status_code == 200, added.text
    return name, devices


def create(world: World, group: str, **plan: Any) -> dict[str, Any]:
    with world.api() as api:
        response = api.post(
            "/campaigns",
            json={
                "name": f"roll {group}",
                "group": group,
                "release": {"name": "fw", "version": "2.0.0"},
                "plan": plan,
            },
        )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def show(world: World, campaign: int, token: str | None = None) -> dict[str, Any]:
    with world.api(token) as api:
        response = api.get(f"/campaigns/{campaign}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for(
    world: World, campaign: int, check: Callable[[dict[str, Any]], bool], seconds: float = 60
) -> dict[str, Any]:
    """The campaign once ``check`` holds (the scheduler ticks about once a second)."""
    deadline = time.monotonic() + seconds
    while True:
        found = show(world, campaign)
        if check(found):
            return found
        assert time.monotonic() < deadline, f"gave up waiting: {found['state']} {found['counts']}"
        time.sleep(0.2)


def states(found: dict[str, Any]) -> dict[str, str]:
    return {d["serial"]: d["state"] for d in found["devices"]}


def report(
    world: World, device: Device, campaign: int | None, state: str, **fields: Any
) -> httpx.Response:
    body = {"campaign": campaign, "target": "fw/2.0.0/fw-2.0.0.img", "state": state, **fields}
    with world.device_client(device) as client:
        return client.post("/device/v1/report", json=body)


def directive(world: World, device: Device) -> dict[str, Any]:
    with world.device_client(device) as client:
        response = client.get("/device/v1/directive")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def update(world: World, device: Device, campaign: int, outcome: str = "committed") -> None:
    """What the agent does with a campaign firmware: report each step, then check in."""
    for state in ("downloading", "downloaded", "installing", outcome):
        response = report(world, device, campaign, state, version="2.0.0")
        assert response.status_code == 200, response.text
    firmware = "2.0.0" if outcome == "committed" else "1.0.0"
    assert world.checkin(device, firmware=firmware).status_code == 200

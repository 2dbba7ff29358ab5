"""The fleet admin API end to end on a served fleet: groups, members, tags, desired state,
the device list and page. Every refusal — malformed filters and windows, unknown devices,
groups and releases, conflicting commands, a caller without the role — is a precise 4xx,
an audited refusal, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from garrison.store.tables import (
    audit_log,
    desired_state,
    device_directives,
    device_groups,
    device_tags,
    group_members,
)
from tests.fleet.conftest import World

FLEET_TABLES = (device_groups, group_members, device_tags, desired_state, device_directives)


def audit_since(world: World, seq: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    with world.fleet.database.read() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.target, audit_log.c.outcome, audit_log.c.details)
            .where(audit_log.c.seq > seq)
            .order_by(audit_log.c.seq)
        )
        return [(r.action, r.target, r.outcome, json.loads(r.details)) for r in rows]


def head(world: World) -> int:
    with world.fleet.database.read() as conn:
        return int(
            conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc())).scalar() or 0
        )


def refused(
    world: World,
    call: Callable[[httpx.Client], httpx.Response],
    status: int,
    message: str,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    """Make ``call``; assert ``status`` with ``message``, one refused audit entry, and no
    change to the fleet tables. Returns the audit entry's details."""
    before, seq = world.rows(*FLEET_TABLES), head(world)
    with world.api(token) as api:
        response = call(api)
    assert response.status_code == status, response.text
    assert message in response.text, response.text
    assert world.rows(*FLEET_TABLES) == before
    entries = audit_since(world, seq)
    assert [e[2] for e in entries] == ["refused"], entries
    assert entries[0][3]["status"] == status
    return {"action": entries[0][0], "target": entries[0][1], **entries[0][3]}


def test_groups_members_and_the_device_list(world: World) -> None:
    a, b, c = world.enroll(), world.enroll(), world.enroll(model="gw-2")
    world.checkin(a, firmware="1.0.0")
    world.checkin(b, firmware="2.0.0", apps={"modbus": "1.0"})
    world.checkin(c, firmware="1.0.0")
    static, dynamic = world.unique("line"), world.unique("old")
    seq = head(world)
    with world.api() as api:
        made = api.post("/groups", json={"name": static, "priority": 5})
        assert made.status_code == 201 and made.json()["kind"] == "static"
        added = api.post(f"/groups/{static}/members", json={"add": [a.serial, b.serial]})
        assert added.status_code == 200 and added.json()["members"] == 2
        filt = f'firmware < "2.0" and serial ~= "{a.serial[:-1]}*"'
        dyn = api.post("/groups", json={"name": dynamic, "kind": "dynamic", "filter": filt})
        assert dyn.status_code == 201, dyn.text
        shown = api.get(f"/groups/{dynamic}").json()
        expected = sorted(d.serial for d in (a, c) if d.serial.startswith(a.serial[:-1]))
        assert shown["serials"] == expected and shown["desired"] is None
        assert api.put(f"/devices/{b.serial}/tags", json={"tags": ["lab"]}).json()["tags"] == [
            "lab"
        ]

        listed = api.get("/fleet/devices", params={"group": static}).json()
        assert listed["total"] == 2 and [d["serial"] for d in listed["devices"]] == sorted(
            [a.serial, b.serial]
        )
        entry = next(d for d in listed["devices"] if d["serial"] == b.serial)
        assert entry["firmware"] == "2.0.0" and entry["apps"] == {"modbus": "1.0"}
        assert entry["tags"] == ["lab"] and static in entry["groups"]
        assert entry["slot_state"] == "committed" and entry["agent_version"] == "0.4.0"
        by_tag = api.get("/fleet/devices", params={"tag": "lab"}).json()
        assert [d["serial"] for d in by_tag["devices"]] == [b.serial]
        by_model = api.get("/fleet/devices", params={"model": "gw-2", "limit": 1000}).json()
        assert c.serial in [d["serial"] for d in by_model["devices"]]
        assert all(d["model"] == "gw-2" for d in by_model["devices"])
        by_q = api.get("/fleet/devices", params={"q": a.serial.lower()}).json()
        assert [d["serial"] for d in by_q["devices"]] == [a.serial]
        paged = api.get("/fleet/devices", params={"limit": 1, "offset": 1}).json()
        assert len(paged["devices"]) == 1 and paged["total"] >= 3
        assert api.get("/fleet/devices", params={"q": "%"}).json()["total"] == 0  # literal

        groups = {g["name"]: g for g in api.get("/groups").json()}
        assert groups[static]["members"] == 2 and groups[static]["priority"] == 5
        removed = api.post(f"/groups/{static}/members", json={"remove": [a.serial]})
        assert removed.json()["members"] == 1
        patched = api.patch(f"/groups/{dynamic}", json={"filter": 'tag == "lab"', "priority": 2})
        assert patched.status_code == 200 and patched.json()["members"] == 1
        assert api.get(f"/groups/{dynamic}").json()["serials"] == [b.serial]
        assert api.delete(f"/groups/{dynamic}").status_code == 204
        assert api.get(f"/groups/{dynamic}").status_code == 404
    actions = [(e[0], e[1], e[2]) for e in audit_since(world, seq)]
    assert actions == [
        ("group.create", static, "ok"),
        ("group.members", static, "ok"),
        ("group.create", dynamic, "ok"),
        ("device.tags", b.serial, "ok"),
        ("group.members", static, "ok"),
        ("group.update", dynamic, "ok"),
        ("group.delete", dynamic, "ok"),
        ("group.show", dynamic, "refused"),  # the 404 after the deletion
    ]


def test_desired_state_reaches_the_directive_and_the_device_page(world: World) -> None:
    fw, app = world.unique("fw"), world.unique("app")
    world.publish(fw, "1.0.0")
    world.publish(fw, "2.0.0")
    world.publish(app, "1.0", install="app")
    device = world.enroll()
    world.checkin(device)
    group = world.unique("g")
    window = {
        "timezone": "Europe/Berlin",
        "slots": [{"days": ["sat"], "start": "02:00", "minutes": 90}],
    }
    with world.api() as api:
        assert api.post("/groups", json={"name": group, "window": window}).status_code == 201
        api.post(f"/groups/{group}/members", json={"add": [device.serial]})
        body = {
            "firmware": {"name": fw, "version": "1.0.0"},
            "apps": [
                {"name": app, "version": "1.0", "config": {"port": 502}},
                {"name": "old", "absent": True},
            ],
        }
        put = api.put(f"/desired/groups/{group}", json=body)
        assert put.status_code == 200, put.text
        assert put.json()["firmware"]["target"] == f"{fw}/1.0.0/{fw}-1.0.0.img"
        assert put.json()["apps"][0] == {
            "name": app,
            "version": "1.0",
            "target": f"{app}/1.0/{app}-1.0.tar",
            "config": {"port": 502},
            "absent": False,
        }
        assert api.get(f"/desired/groups/{group}").json() == put.json()
        pin = api.put(
            f"/desired/devices/{device.serial}", json={"firmware": {"name": fw, "version": "2.0.0"}}
        )
        assert pin.status_code == 200 and pin.json()["apps"] is None
        page = api.get(f"/devices/{device.serial}/detail").json()
        history = api.get(f"/devices/{device.serial}/history", params={"limit": 1}).json()
    assert page["identity"]["serial"] == device.serial and page["identity"]["model"] == "gw-1"
    current = [c for c in page["identity"]["certificates"] if c["current"]]
    assert len(current) == 1 and current[0]["status"] == "valid"
    assert page["inventory"]["firmware"] == "1.0.0" and page["inventory"]["boot"]["slot"] == "a"
    assert page["groups"] == [{"name": group, "kind": "static", "priority": 0}]
    desired = page["desired"]
    assert desired["pinned"] and desired["firmware"]["version"] == "2.0.0"
    assert desired["firmware"]["from"] == "device" and desired["window_from"] == group
    assert [(a["name"], a["absent"], a["from"]) for a in desired["apps"]] == [
        (app, False, group),
        ("old", True, group),
    ]
    assert page["directive"]["firmware"]["version"] == "2.0.0"
    assert page["directive"]["apps"] == [
        {
            "name": app,
            "version": "1.0",
            "target": f"{app}/1.0/{app}-1.0.tar",
            "config": {"port": 502},
        }
    ]
    assert page["directive"]["window"] == window
    assert history == [page["history"][0]] and history[0]["kind"] == "inventory"
    with world.device_client(device) as client:
        assert client.get("/device/v1/directive").json() == page["directive"]
    with world.api() as api:
        assert api.delete(f"/desired/devices/{device.serial}").status_code == 204
        assert api.get(f"/desired/devices/{device.serial}").status_code == 404
        assert (
            api.get(f"/devices/{device.serial}/detail").json()["directive"]["firmware"]["version"]
            == "1.0.0"
        )


def test_malformed_and_conflicting_requests_are_refused_and_change_nothing(world: World) -> None:
    device = world.enroll()
    fw, app = world.unique("fw"), world.unique("app")
    world.publish(fw, "1.0.0")
    world.publish(app, "1.0", install="app")
    static, dynamic = world.unique("s"), world.unique("d")
    with world.api() as api:
        api.post("/groups", json={"name": static})
        api.post("/groups", json={"name": dynamic, "kind": "dynamic", "filter": 'model == "gw-1"'})
    filter_error = refused(
        world,
        lambda api: api.post(
            "/groups", json={"name": "x1", "kind": "dynamic", "filter": 'model = "a"'}
        ),
        400,
        "filter, position 7: '=' is not an operator",
    )
    assert filter_error["action"] == "group.create" and filter_error["target"] == "x1"
    cases: list[tuple[Callable[[httpx.Client], httpx.Response], int, str]] = [
        (
            lambda api: api.post("/groups", json={"name": "x2", "kind": "dynamic"}),
            400,
            "needs a non-empty filter",
        ),
        (
            lambda api: api.post(
                "/groups", json={"name": "x3", "kind": "dynamic", "filter": "(" * 40}
            ),
            400,
            "nested deeper",
        ),
        (lambda api: api.post("/groups", json={"name": "x4", "filter": "x" * 2001}), 422, "filter"),
        (lambda api: api.post("/groups", json={"name": static}), 409, "exists already"),
        (lambda api: api.post("/groups", json={"name": "../etc"}), 400, "is not valid"),
        (
            lambda api: api.post(
                "/groups", json={"name": "x5", "window": {"timezone": "Nowhere/City", "slots": []}}
            ),
            400,
            "unknown time zone",
        ),
        (
            lambda api: api.post(
                "/groups",
                json={
                    "name": "x6",
                    "window": {
                        "timezone": "UTC",
                        "slots": [{"days": ["mon"], "start": "25:00", "minutes": 5}],
                    },
                },
            ),
            400,
            "is not a time of day",
        ),
        (lambda api: api.post("/groups", json={"name": "x7", "priority": "high"}), 422, "priority"),
        (lambda api: api.post("/groups", json={"name": "x8", "owner": "me"}), 422, "owner"),
        (
            lambda api: api.patch(f"/groups/{static}", json={"filter": 'model == "x"'}),
            400,
            "is static",
        ),
        (
            lambda api: api.patch(f"/groups/{dynamic}", json={"filter": "model in ["}),
            400,
            "filter, position 11: expected a quoted string",
        ),
        (lambda api: api.patch(f"/groups/{dynamic}", json={}), 400, "name at least one"),
        (
            lambda api: api.patch(f"/groups/{dynamic}", json={"priority": None}),
            400,
            "priority must be",
        ),
        (lambda api: api.patch("/groups/nope", json={"priority": 1}), 404, "no group named 'nope'"),
        (lambda api: api.delete("/groups/nope"), 404, "no group named 'nope'"),
        (
            lambda api: api.post(f"/groups/{dynamic}/members", json={"add": [device.serial]}),
            409,
            "is dynamic",
        ),
        (
            lambda api: api.post(
                f"/groups/{static}/members", json={"add": [device.serial, "GHOST-1"]}
            ),
            404,
            "no device with serial 'GHOST-1'",
        ),
        (
            lambda api: api.post(
                f"/groups/{static}/members",
                json={"add": [device.serial], "remove": [device.serial]},
            ),
            400,
            "both added and removed",
        ),
        (lambda api: api.post(f"/groups/{static}/members", json={}), 400, "name serials"),
        (lambda api: api.post(f"/groups/{static}/members", json={"add": "SN-1"}), 422, "add"),
        (
            lambda api: api.put("/devices/GHOST-1/tags", json={"tags": ["a"]}),
            404,
            "no device with serial 'GHOST-1'",
        ),
        (
            lambda api: api.put(f"/devices/{device.serial}/tags", json={"tags": ["a b"]}),
            400,
            "tag 'a b' is not valid",
        ),
        (
            lambda api: api.put(f"/devices/{device.serial}/tags", json={"tags": ["t"] * 33}),
            422,
            "tags",
        ),
        (
            lambda api: api.put(f"/desired/groups/{static}", json={}),
            400,
            "must name firmware, apps or both",
        ),
        (
            lambda api: api.put(
                f"/desired/groups/{static}", json={"firmware": {"name": fw, "version": "9.9"}}
            ),
            400,
            f"no release {fw} 9.9",
        ),
        (
            lambda api: api.put(
                f"/desired/groups/{static}", json={"firmware": {"name": app, "version": "1.0"}}
            ),
            400,
            "installs as 'app', not 'image'",
        ),
        (
            lambda api: api.put(
                f"/desired/groups/{static}", json={"apps": [{"name": fw, "version": "1.0.0"}]}
            ),
            400,
            "installs as 'image', not 'app'",
        ),
        (
            lambda api: api.put(
                f"/desired/groups/{static}",
                json={"apps": [{"name": app, "version": "1.0", "config": {"x": "y" * 17000}}]},
            ),
            400,
            "at most 16384 bytes",
        ),
        (
            lambda api: api.put(
                f"/desired/groups/{static}",
                json={"apps": [{"name": app, "version": "1.0", "config": [1]}]},
            ),
            422,
            "config",
        ),
        (
            lambda api: api.put(f"/desired/groups/{static}", json={"apps": [{"name": app}]}),
            400,
            "name a version, or mark it absent",
        ),
        (
            lambda api: api.put("/desired/groups/nope", json={"apps": []}),
            404,
            "no group named 'nope'",
        ),
        (
            lambda api: api.put("/desired/devices/GHOST-1", json={"apps": []}),
            404,
            "no device with serial 'GHOST-1'",
        ),
        (lambda api: api.delete(f"/desired/groups/{static}"), 404, "has no desired state"),
        (lambda api: api.get(f"/desired/groups/{static}"), 404, "has no desired state"),
        (lambda api: api.get("/devices/GHOST-1/detail"), 404, "no device with serial 'GHOST-1'"),
        (lambda api: api.get("/devices/GHOST-1/history"), 404, "no device with serial 'GHOST-1'"),
        (
            lambda api: api.get("/fleet/devices", params={"group": "nope"}),
            404,
            "no group named 'nope'",
        ),
        (lambda api: api.get("/fleet/devices", params={"limit": 0}), 422, "limit"),
    ]
    for call, status, message in cases:
        refused(world, call, status, message)


def test_a_group_with_a_campaign_is_not_deleted(world: World) -> None:
    """A campaign (created, then paused, through the campaign API) holds its group: 409
    while it is active, and still after it was aborted (its history needs the group)."""
    fw, group = world.unique("fw"), world.unique("g")
    world.publish(fw, "1.0.0")
    device = world.enroll()
    world.checkin(device)
    with world.api() as api:
        assert api.post("/groups", json={"name": group}).status_code == 201
        api.post(f"/groups/{group}/members", json={"add": [device.serial]})
        made = api.post(
            "/campaigns",
            json={"name": "hold", "group": group, "release": {"name": fw, "version": "1.0.0"}},
        )
        assert made.status_code == 201, made.text
        campaign = made.json()["id"]
        assert api.post(f"/campaigns/{campaign}/pause").status_code == 200
    entry = refused(world, lambda api: api.delete(f"/groups/{group}"), 409, "has a paused campaign")
    assert entry["action"] == "group.delete" and entry["target"] == group
    with world.api() as api:
        aborted = api.post(f"/campaigns/{campaign}/abort", json={"rollback": False})
        assert aborted.status_code == 200, aborted.text
    refused(world, lambda api: api.delete(f"/groups/{group}"), 409, "target of 1 campaign(s)")


@pytest.mark.parametrize("who", ["auditor", "release_manager"])
def test_callers_without_fleet_manage_change_nothing(world: World, who: str) -> None:
    token = getattr(world, who)
    device = world.enroll()
    group = world.unique("g")
    with world.api() as api:
        assert api.post("/groups", json={"name": group}).status_code == 201
    changes: list[Callable[[httpx.Client], httpx.Response]] = [
        lambda api: api.post("/groups", json={"name": world.unique("g")}),
        lambda api: api.patch(f"/groups/{group}", json={"priority": 3}),
        lambda api: api.delete(f"/groups/{group}"),
        lambda api: api.post(f"/groups/{group}/members", json={"add": [device.serial]}),
        lambda api: api.put(f"/devices/{device.serial}/tags", json={"tags": ["x"]}),
        lambda api: api.put(f"/desired/groups/{group}", json={"apps": []}),
        lambda api: api.delete(f"/desired/groups/{group}"),
        lambda api: api.put(f"/desired/devices/{device.serial}", json={"apps": []}),
        lambda api: api.delete(f"/desired/devices/{device.serial}"),
    ]
    for call in changes:
        entry = refused(world, call, 403, "may not fleet.manage", token=token)
        assert entry["action"] == "api.authorize"
    with world.api(token) as api:  # but they read
        assert api.get("/groups").status_code == 200
        assert api.get(f"/groups/{group}").status_code == 200
        assert api.get("/fleet/devices").status_code == 200
        assert api.get(f"/devices/{device.serial}/detail").status_code == 200


def test_the_manufacturer_reads_nothing_and_strangers_are_not_let_in(world: World) -> None:
    manufacturer = world.shared.officer.manufacturer_token
    for path in ("/groups", "/fleet/devices", "/desired/groups/x"):
        entry = refused(
            world, lambda api, p=path: api.get(p), 403, "may not devices.read", token=manufacturer
        )
        assert entry["action"] == "api.authorize"
    entry = refused(
        world,
        lambda api: api.post("/groups", json={"name": "x"}),
        401,
        "invalid or disabled API token",
        token="gat_forged",
    )
    assert entry["action"] == "api.authenticate"

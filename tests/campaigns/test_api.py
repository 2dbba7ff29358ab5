"""Campaigns end to end on a served fleet (SQLite and PostgreSQL): devices enrolled over EST
check in and report over mutual TLS, the operator drives campaigns through the admin API,
and the control plane's own scheduler (its lifespan task) assigns devices and moves phases.

Hostile input on every endpoint — malformed plans and bodies, unknown groups, releases and
campaigns, conflicting commands, a device reporting for a campaign it is not in, callers
without the role — is a precise 4xx, an audited refusal, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from garrison.store.audit_log import verify_stored_chain
from garrison.store.tables import (
    audit_log,
    campaign_devices,
    campaigns,
    desired_state,
    device_commands,
    device_directives,
    device_history,
)
from tests.campaigns.conftest import (
    create,
    directive,
    enroll_group,
    report,
    show,
    states,
    update,
    wait_for,
)
from tests.fleet.conftest import Device, World

CAMPAIGN_TABLES = (
    campaigns,
    campaign_devices,
    device_directives,
    device_history,
    device_commands,
    desired_state,
)


def test_a_campaign_rolls_through_canary_and_waves(world: World, fw: dict[str, Any]) -> None:
    group, devices = enroll_group(world, 6)
    other = world.enroll("gw-9")
    with world.api() as api:
        api.post(f"/groups/{group}/members", json={"add": [other.serial]})
    created = create(world, group, canary=1, waves=[50, 100], failure_threshold=1)
    campaign = created["id"]
    assert created["state"] == "running" and created["phase_name"] == "canary"
    assert (created["members"], created["eligible"]) == (7, 6)
    assert created["release"]["target"] == fw["target_path"]
    serials = sorted(d.serial for d in devices)
    by_serial = {d.serial: d for d in devices}

    found = wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 1)
    [canary] = [s for s, state in states(found).items() if state == "assigned"]
    assert canary == serials[0]  # deterministic: the lowest device id, enrolled first
    assert states(found)[other.serial] == "excluded"
    firmware = directive(world, by_serial[canary])["firmware"]
    assert firmware == {"target": fw["target_path"], "version": "2.0.0", "campaign": campaign}
    assert directive(world, by_serial[serials[1]])["firmware"] is None
    update(world, by_serial[canary], campaign)

    found = wait_for(world, campaign, lambda c: c["phase"] == 1 and c["counts"].get("assigned"))
    wave = sorted(s for s, state in states(found).items() if state == "assigned")
    assert wave == serials[1:3]  # 50 % of 6 is 3, the canary included
    update(world, by_serial[wave[0]], campaign, "rolled-back")  # one failure is allowed
    update(world, by_serial[wave[1]], campaign)

    found = wait_for(world, campaign, lambda c: c["phase"] == 2 and c["counts"].get("assigned"))
    for serial in serials[3:]:
        update(world, by_serial[serial], campaign)
    found = wait_for(world, campaign, lambda c: c["state"] == "completed")
    assert [p["status"] for p in found["phase_progress"]] == ["done", "done", "done"]
    assert found["phase_progress"][1]["states"] == {"rolled-back": 1, "succeeded": 1}
    assert found["counts"] == {"succeeded": 5, "rolled-back": 1, "excluded": 1}

    with world.api(world.auditor) as api:  # reads need only devices.read
        level = api.get("/fleet/level", params={"devices": "true"}).json()
    [mine] = [g for g in level["groups"] if g["group"] == group]
    assert mine["target"] == "2.0.0" and mine["campaign"] == campaign
    assert mine["counts"] == {"on_target": 5, "updating": 0, "failed": 1, "not_reached": 1}
    assert mine["devices"]["failed"] == [wave[0]] and mine["devices"]["not_reached"] == [
        other.serial
    ]
    assert mine["proof"]["members"] == mine["proof"]["classified"] == 7
    assert mine["proof"]["exactly_one_each"] is True
    assert level["total"]["members"] >= 7
    with world.fleet.database.read() as conn:
        verify_stored_chain(conn)
        actions = [
            r.action
            for r in conn.execute(
                select(audit_log.c.action)
                .where(audit_log.c.target == f"campaign:{campaign}")
                .order_by(audit_log.c.seq)
            )
        ]
    assert actions == ["campaign.create", "campaign.phase", "campaign.phase", "campaign.complete"]
    # the release became the group's desired firmware
    with world.api() as api:
        desired = api.get(f"/desired/groups/{group}").json()
    assert desired["firmware"]["version"] == "2.0.0"


def test_halt_pause_resume_and_abort_with_rollback(world: World, fw: dict[str, Any]) -> None:
    group, devices = enroll_group(world, 4)
    campaign = create(world, group, canary=2, failure_threshold=0, max_per_minute=600)["id"]
    by_serial = {d.serial: d for d in devices}
    found = wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 2)
    first, second = sorted(s for s, st in states(found).items() if st == "assigned")
    update(world, by_serial[first], campaign)
    assert (
        report(world, by_serial[second], campaign, "failed", detail="disk full").status_code == 200
    )
    found = wait_for(world, campaign, lambda c: c["state"] == "halted")
    assert found["reason"] == "canary: 1 failed, more than the 0 allowed of 2 device(s)"
    with world.api() as api:
        resumed = api.post(f"/campaigns/{campaign}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "running"
        paused = api.post(f"/campaigns/{campaign}/pause")
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        assert paused.json()["reason"] == "paused by principal:otto"
        aborted = api.post(f"/campaigns/{campaign}/abort", json={"rollback": True})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "aborted" and aborted.json()["sent_back"] == [first]
    found = show(world, campaign)
    assert states(found)[first] == "reverting"
    assert directive(world, by_serial[first])["firmware"] is None
    # the device carries out the rollback command and says so; the scheduler settles it
    with world.device_client(by_serial[first]) as client:
        command = client.get("/device/v1/commands").json()
        assert command["action"] == "rollback"
        done = client.post(
            f"/device/v1/commands/{command['id']}", json={"outcome": "committed", "detail": "ok"}
        )
        assert done.status_code == 204
    found = wait_for(world, campaign, lambda c: c["counts"].get("reverted") == 1)
    assert states(found)[first] == "reverted"


@pytest.fixture
def running(world: World, fw: dict[str, Any]) -> tuple[int, str, list[Device]]:
    group, devices = enroll_group(world, 2)
    campaign = create(world, group, canary=1, max_per_minute=600)["id"]
    wait_for(world, campaign, lambda c: c["counts"].get("assigned") == 1)
    return campaign, group, devices


def audit_head(world: World) -> int:
    with world.fleet.database.read() as conn:
        return int(conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc())).scalar())


def rows(world: World) -> list[list[tuple[Any, ...]]]:
    # device_directives.computed_at, history and commands: any change shows
    return world.rows(*CAMPAIGN_TABLES)


def refused(
    world: World,
    call: Callable[[], httpx.Response],
    status: int,
    message: str,
    action: str,
) -> None:
    """``call`` is refused with ``status`` and ``message``, audited once as ``action``, and
    changes none of the campaign tables (the scheduler writes nothing while no device moves)."""
    before, seq = rows(world), audit_head(world)
    response = call()
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in (detail if isinstance(detail, str) else json.dumps(detail)), detail
    assert rows(world) == before
    with world.fleet.database.read() as conn:
        entries = conn.execute(
            select(audit_log.c.action, audit_log.c.outcome, audit_log.c.details).where(
                audit_log.c.seq > seq
            )
        ).all()
    assert [(e.action, e.outcome) for e in entries] == [(action, "refused")]
    assert json.loads(entries[0].details)["status"] == status


def test_hostile_campaign_requests(
    world: World, running: tuple[int, str, list[Device]], fw: dict[str, Any]
) -> None:
    campaign, group, _ = running
    unsigned = _propose_only(world)

    def post(body: dict[str, Any], token: str | None = None) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with world.api(token) as api:
                return api.post("/campaigns", json=body)

        return call

    base = {"name": "x", "group": group, "release": {"name": "fw", "version": "2.0.0"}}
    create_ = "campaign.create"
    refused(
        world, post({**base, "plan": {"waves": [60, 40, 100]}}), 400, "strictly increasing", create_
    )
    refused(
        world,
        post({**base, "plan": {"canary": "150%"}}),
        400,
        "canary must be a percentage",
        create_,
    )
    refused(
        world, post({**base, "plan": {"canery": 1}}), 400, "unknown plan field 'canery'", create_
    )
    refused(world, post({**base, "plan": {"max_per_minute": 0}}), 400, "max_per_minute", create_)
    refused(world, post({**base, "group": "nope"}), 404, "no group named 'nope'", create_)
    refused(
        world,
        post({**base, "release": {"name": "fw", "version": "7"}}),
        404,
        "no release 'fw' version '7'",
        create_,
    )
    refused(
        world,
        post({**base, "release": {"name": "app", "version": "1.0.0"}}),
        400,
        "is an app package",
        create_,
    )
    refused(
        world,
        post({**base, "release": {"name": unsigned, "version": "1.0.0"}}),
        409,
        "is not published yet",
        create_,
    )
    refused(world, post(base), 409, f"already has campaign {campaign} (running)", create_)
    refused(world, post({**base, "extra": 1}), 422, "extra", create_)
    refused(world, post({**base, "name": ""}), 422, "name", create_)
    refused(world, post(base, world.auditor), 403, "may not campaigns.manage", "api.authorize")
    refused(
        world, post(base, "not-a-token"), 401, "invalid or disabled API token", "api.authenticate"
    )

    def command(
        path: str, body: Any = None, token: str | None = None
    ) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with world.api(token) as api:
                return api.post(path, json=body) if body is not None else api.post(path)

        return call

    c = f"/campaigns/{campaign}"
    refused(
        world, command(f"{c}/resume"), 409, "is running; only a paused or halted", "campaign.resume"
    )
    refused(world, command("/campaigns/99999/pause"), 404, "no campaign 99999", "campaign.pause")
    refused(world, command(f"{c}/abort", {"rollback": "maybe"}), 422, "rollback", "campaign.abort")
    refused(world, command(f"{c}/pause", token=world.auditor), 403, "may not", "api.authorize")
    refused(world, command(f"{c}/abort", token=world.auditor), 403, "may not", "api.authorize")
    refused(world, command("/campaigns/abc/pause"), 422, "campaign_id", "campaign.pause")
    with world.api() as api:
        assert api.post(f"{c}/abort").status_code == 200  # the plan's default: no rollback
    refused(
        world, command(f"{c}/abort"), 409, "is aborted; only a running, paused", "campaign.abort"
    )
    refused(world, command(f"{c}/resume"), 409, "is aborted", "campaign.resume")
    refused(
        world, command(f"{c}/pause"), 409, "is aborted; only a running campaign", "campaign.pause"
    )

    def get(path: str, token: str | None = None, **params: Any) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with world.api(token) as api:
                return api.get(path, params=params)

        return call

    refused(world, get("/campaigns/99999"), 404, "no campaign 99999", "campaign.show")
    refused(world, get(c, state="bogus"), 400, "device state must be one of", "campaign.show")
    refused(world, get(c, limit=-1), 422, "limit", "campaign.show")
    refused(world, get("/campaigns", state="done"), 400, "state must be one of", "campaign.list")
    refused(world, get("/campaigns", limit=0), 422, "limit", "campaign.list")
    refused(world, get("/campaigns", limit=1001), 422, "limit", "campaign.list")
    refused(world, get("/campaigns", before=0), 422, "before", "campaign.list")
    refused(world, get("/campaigns", before="x"), 422, "before", "campaign.list")
    manufacturer = world.shared.officer.manufacturer_token
    refused(world, get("/campaigns", manufacturer), 403, "may not devices.read", "api.authorize")
    refused(world, get("/fleet/level", manufacturer), 403, "may not devices.read", "api.authorize")


def _propose_only(world: World) -> str:
    """A firmware release proposed but not signed: not published."""
    name = world.unique("fwp")
    with world.fleet.api(world.release_manager) as api:
        stored = api.put("/artifacts", content=name.encode() * 100).json()
        made = api.post(
            "/releases",
            json={
                "name": name,
                "version": "1.0.0",
                "hardware": ["gw-1"],
                "security_version": 0,
                "install": "image",
                "health_checks": [],
                "sha256": stored["sha256"],
            },
        )
    assert made.status_code == 201, made.text
    return name


def test_hostile_device_reports(
    world: World, running: tuple[int, str, list[Device]], tmp_path: Path
) -> None:
    campaign, _, devices = running
    found = show(world, campaign)
    [assigned] = [d for d in devices if states(found)[d.serial] == "assigned"]
    [waiting] = [d for d in devices if d is not assigned]
    stranger = world.enroll()
    assert report(world, assigned, campaign, "installing").status_code == 200

    def send(device: Device, body: dict[str, Any]) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with world.device_client(device) as client:
                return client.post("/device/v1/report", json=body)

        return call

    target = "fw/2.0.0/fw-2.0.0.img"
    ok = {"campaign": campaign, "target": target, "state": "committed"}
    action = "device.report"
    # a device reporting for a campaign it is not in, or for another device's place
    refused(world, send(stranger, ok), 409, f"{stranger.serial} is not in campaign", action)
    refused(world, send(assigned, {**ok, "campaign": 99999}), 409, "not in campaign 99999", action)
    refused(world, send(waiting, ok), 409, "the device is pending", action)
    refused(
        world,
        send(assigned, {**ok, "state": "downloading"}),
        409,
        "the device is installing",
        action,
    )
    refused(world, send(assigned, {**ok, "target": "fw/9/fw-9.img"}), 409, "rolls out", action)
    refused(world, send(assigned, {**ok, "version": "9.9"}), 409, "rolls out", action)
    refused(world, send(assigned, {**ok, "state": "succeeded"}), 422, "state", action)
    refused(world, send(assigned, {**ok, "serial": waiting.serial}), 422, "serial", action)
    refused(world, send(assigned, {**ok, "campaign": "three"}), 422, "campaign", action)
    refused(world, send(assigned, {**ok, "detail": "x" * 3000}), 422, "detail", action)

    def anonymous() -> httpx.Response:
        with world.fleet.client() as client:
            return client.post("/device/v1/report", json=ok)

    refused(world, anonymous, 403, "client certificate is required", "device.authenticate")
    # and nothing stopped the device that is entitled to report
    response = report(world, assigned, campaign, "committed")
    assert response.status_code == 200
    assert response.json() == {"campaign": campaign, "state": "succeeded"}

"""The device API under ``/device/v1``: mutual TLS only; the device is its certificate."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from garrison.fleet.directives import Directive
from garrison.fleet.inventory import parse_inventory
from garrison.fleet.inventory_store import record_inventory
from garrison.identity.devices import check_in
from garrison.identity.revocation import invalidate_crl
from garrison.server import fleet_schemas, schemas
from garrison.server.context import CurrentDevice, Plane
from garrison.store.audit_log import append_audit
from garrison.store.tables import devices
from garrison.updates.commands import Command, complete_command, pending_command
from garrison.updates.offers import current_directive, first_directive, offered_target

router = APIRouter(prefix="/device/v1", tags=["device"])


@router.post("/checkin", response_model=fleet_schemas.CheckInResult, name="device.checkin")
async def checkin(
    body: fleet_schemas.CheckIn, device: CurrentDevice, cp: Plane
) -> fleet_schemas.CheckInResult:
    """The device is alive; with ``inventory``, what it runs (stored when it changed). A
    report naming another device or hardware model is refused (403), nothing stored."""
    inventory = (
        None if body.inventory is None else parse_inventory(body.inventory, body.agent_version)
    )

    def run() -> Directive:
        now = cp.now()
        with cp.database.write() as conn:
            if inventory is not None:
                model = conn.execute(
                    select(devices.c.model).where(devices.c.id == device.device_id)
                ).scalar_one()
                record_inventory(conn, device.device_id, device.serial, model, inventory, now)
            # Before check_in writes the device's row: a first contact evaluates dynamic
            # groups, which waits for group locks (lock order: fleet/group_locks.py).
            directive = first_directive(conn, device.device_id, now)
            if check_in(conn, device, now):
                invalidate_crl(conn)
                append_audit(
                    conn,
                    actor=f"device:{device.serial}",
                    action="cert.retire-superseded",
                    target=device.serial,
                    outcome="ok",
                    now=now,
                    details={"current": device.certificate},
                )
            return directive

    directive = await run_in_threadpool(run)
    return fleet_schemas.CheckInResult(
        serial=device.serial,
        certificate=device.certificate,
        server_time=cp.now(),
        poll_seconds=directive.poll_seconds,
        jitter_seconds=directive.jitter_seconds,
        directive_etag=directive.etag,
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 weak comparison)."""
    if header is None:
        return False
    for candidate in header.split(","):
        value = candidate.strip()
        if value == "*":
            return True
        if value.startswith("W/"):
            value = value[2:]
        if value == f'"{etag}"':
            return True
    return False


@router.get(
    "/directive",
    name="device.directive",
    responses={
        200: {"description": "The directive (docs/fleet.md)", "content": {"application/json": {}}},
        304: {"description": "Unchanged since the ETag in If-None-Match"},
    },
)
async def directive(request: Request, device: CurrentDevice, cp: Plane) -> Response:
    """What this device must run. With ``If-None-Match: "<etag>"`` an unchanged directive is
    a ``304`` with no body. Reading it writes nothing (but the first poll of a device)."""
    found = await run_in_threadpool(current_directive, cp.database, device.device_id, cp.now())
    cp.last_seen.record(device.device_id, cp.now())  # written in batches (fleet/last_seen.py)
    headers = {
        "ETag": f'"{found.etag}"',
        "Garrison-Poll": f"{found.poll_seconds};jitter={found.jitter_seconds}",
        "Cache-Control": "no-cache",
    }
    if _etag_matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type="application/json", headers=headers)


@router.get(
    "/update",
    response_model=schemas.UpdateOffer,
    name="device.update",
    responses={204: {"description": "No firmware in this device's directive"}},
)
async def update(device: CurrentDevice, cp: Plane) -> schemas.UpdateOffer | Response:
    """The firmware of this device's directive (its desired state or campaign; nothing on
    update hold). The device verifies it through TUF; the control plane only chooses."""
    target = await run_in_threadpool(offered_target, cp.database, device.device_id, cp.now())
    if target is None:
        return Response(status_code=204)
    return schemas.UpdateOffer(target=target)


@router.get(
    "/commands",
    response_model=schemas.DeviceCommand,
    name="device.commands",
    responses={204: {"description": "Nothing to do"}},
)
async def commands(device: CurrentDevice, cp: Plane) -> schemas.DeviceCommand | Response:
    """The oldest command an operator left for this device (today: ``rollback``)."""

    def run() -> Command | None:
        with cp.database.read() as conn:
            return pending_command(conn, device.device_id)

    command = await run_in_threadpool(run)
    if command is None:
        return Response(status_code=204)
    return schemas.DeviceCommand(id=command.id, action=command.action)


@router.post("/commands/{command_id}", status_code=204, name="device.command-done")
async def command_done(
    command_id: int, body: schemas.CommandResult, device: CurrentDevice, cp: Plane
) -> Response:
    """What the device did with a command."""

    def run() -> None:
        with cp.database.write() as conn:
            complete_command(
                conn,
                device.device_id,
                device.serial,
                command_id,
                body.outcome,
                body.detail,
                cp.now(),
            )

    await run_in_threadpool(run)
    return Response(status_code=204)

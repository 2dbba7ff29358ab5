"""The device API under ``/device/v1``: mutual TLS only; the device is its certificate."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from garrison.identity.devices import check_in
from garrison.identity.revocation import invalidate_crl
from garrison.server import schemas
from garrison.server.context import CurrentDevice, Plane
from garrison.store.audit_log import append_audit
from garrison.updates.commands import Command, complete_command, on_hold, pending_command
from garrison.updates.offers import offered_target

router = APIRouter(prefix="/device/v1", tags=["device"])

POLL_SECONDS = 300


@router.post("/checkin", response_model=schemas.CheckInResult, name="device.checkin")
async def checkin(body: schemas.CheckIn, device: CurrentDevice, cp: Plane) -> schemas.CheckInResult:
    def run() -> None:
        now = cp.now()
        with cp.database.write() as conn:
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

    await run_in_threadpool(run)
    return schemas.CheckInResult(
        serial=device.serial,
        certificate=device.certificate,
        server_time=cp.now(),
        poll_seconds=POLL_SECONDS,
    )


@router.get(
    "/update",
    response_model=schemas.UpdateOffer,
    name="device.update",
    responses={204: {"description": "No release for this device's hardware"}},
)
async def update(device: CurrentDevice, cp: Plane) -> schemas.UpdateOffer | Response:
    """The newest published release for this device's hardware model. The device verifies
    it through TUF; the control plane only chooses."""

    def run() -> str | None:
        with cp.database.read() as conn:
            if on_hold(conn, device.device_id):  # sent back by an operator: stay there
                return None
            return offered_target(conn, device.device_id)

    target = await run_in_threadpool(run)
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

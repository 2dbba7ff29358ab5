"""The device API under ``/device/v1``: mutual TLS only; the device is its certificate."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from garrison.identity.devices import check_in
from garrison.identity.revocation import invalidate_crl
from garrison.server import schemas
from garrison.server.context import CurrentDevice, Plane
from garrison.store.audit_log import append_audit
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
            return offered_target(conn, device.device_id)

    target = await run_in_threadpool(run)
    if target is None:
        return Response(status_code=204)
    return schemas.UpdateOffer(target=target)

"""The device API under ``/device/v1``: mutual TLS only; the device is its certificate."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from garrison.identity.devices import check_in
from garrison.identity.revocation import invalidate_crl
from garrison.server import schemas
from garrison.server.context import CurrentDevice, Plane
from garrison.store.audit_log import append_audit

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

"""The admin REST API under ``/api/v1``. Every route names the permission it needs."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from garrison.access.roles import PERMISSIONS, Permission, Role
from garrison.errors import PolicyError
from garrison.identity.batches import BatchRequest, close_batch, create_batch, list_batches
from garrison.identity.devices import list_devices, revoke_device
from garrison.identity.principals import create_principal, disable_principal
from garrison.identity.revocation import publish_crl
from garrison.pki.idevid import load_manufacturer_ca
from garrison.server import schemas
from garrison.server.context import (
    AuditReader,
    BatchManager,
    Caller,
    DeviceReader,
    DeviceRevoker,
    DeviceRollback,
    Plane,
    PrincipalsManager,
    trust_manufacturer_ca,
)
from garrison.store.audit_log import append_audit, read_audit, verify_stored_chain
from garrison.store.tables import principals as principals_table
from garrison.updates.commands import release_hold, request_rollback

router = APIRouter(prefix="/api/v1", tags=["admin"])


@router.get("/whoami", response_model=schemas.PrincipalPublic, name="principal.whoami")
async def whoami(principal: Caller) -> schemas.PrincipalPublic:
    return schemas.PrincipalPublic(name=principal.name, role=principal.role)


@router.post(
    "/principals", response_model=schemas.PrincipalCreated, status_code=201, name="principal.create"
)
async def add_principal(
    body: schemas.PrincipalCreate,
    cp: Plane,
    principal: PrincipalsManager,
) -> schemas.PrincipalCreated:
    def run() -> str:
        with cp.database.write() as conn:
            now = cp.now()
            token = create_principal(conn, body.name, body.role, now)
            append_audit(
                conn,
                actor=f"principal:{principal.name}",
                action="principal.create",
                target=body.name,
                outcome="ok",
                now=now,
                details={"role": body.role.value},
            )
            return token

    token = await run_in_threadpool(run)
    return schemas.PrincipalCreated(name=body.name, role=body.role, token=token)


@router.get("/principals", response_model=list[schemas.PrincipalPublic], name="principal.list")
async def get_principals(cp: Plane, principal: PrincipalsManager) -> list[schemas.PrincipalPublic]:
    def run() -> list[schemas.PrincipalPublic]:
        with cp.database.read() as conn:
            rows = conn.execute(
                select(principals_table.c.name, principals_table.c.role).order_by(
                    principals_table.c.name
                )
            )
            return [schemas.PrincipalPublic(name=r.name, role=Role(r.role)) for r in rows]

    return await run_in_threadpool(run)


@router.post("/batches", response_model=schemas.BatchCreated, status_code=201, name="batch.create")
async def add_batch(
    body: schemas.BatchCreate,
    cp: Plane,
    principal: BatchManager,
) -> schemas.BatchCreated:
    idevid_ca = None if body.idevid_ca_pem is None else load_manufacturer_ca(body.idevid_ca_pem)
    request = BatchRequest(
        body.name,
        body.manufacturer,
        body.model,
        body.serials,
        body.quota,
        body.valid_days,
        idevid_ca,
    )

    def run() -> schemas.BatchCreated:
        with cp.database.write() as conn:
            now = cp.now()
            created = create_batch(conn, request, now)
            append_audit(
                conn,
                actor=f"principal:{principal.name}",
                action="batch.create",
                target=f"batch:{created.batch_id}",
                outcome="ok",
                now=now,
                details={
                    "manufacturer": body.manufacturer,
                    "model": body.model,
                    "serials": len(body.serials),
                    "quota": body.quota,
                    "expires_at": created.expires_at.isoformat(),
                    "idevid_ca": None if idevid_ca is None else idevid_ca.subject.rfc4514_string(),
                },
            )
        if idevid_ca is not None:
            trust_manufacturer_ca(cp, idevid_ca)
        return schemas.BatchCreated(
            id=created.batch_id,
            expires_at=created.expires_at,
            authentication="token" if idevid_ca is None else "idevid",
            tokens=[schemas.EnrollmentToken(serial=s, token=t) for s, t in created.tokens],
        )

    return await run_in_threadpool(run)


@router.get("/batches", response_model=list[schemas.BatchPublic], name="batch.list")
async def get_batches(cp: Plane, principal: Caller, request: Request) -> list[schemas.BatchPublic]:
    held = PERMISSIONS[principal.role]
    if Permission.BATCHES_MANAGE in held:
        only = None
    elif Permission.BATCHES_READ_OWN in held:
        only = principal.id
    else:
        request.state.audit_action = "api.authorize"
        raise PolicyError(f"role {principal.role.value!r} may not read batches")

    def run() -> list[schemas.BatchPublic]:
        with cp.database.read() as conn:
            return [
                schemas.BatchPublic(
                    id=b.batch_id,
                    name=b.name,
                    manufacturer=b.manufacturer,
                    model=b.model,
                    created_at=b.created_at,
                    expires_at=b.expires_at,
                    quota=b.quota,
                    issued=b.issued,
                    authorized=b.authorized,
                    closed=b.closed,
                    idevid=b.idevid,
                )
                for b in list_batches(conn, only)
            ]

    return await run_in_threadpool(run)


@router.get("/devices", response_model=list[schemas.DevicePublic], name="device.list")
async def get_devices(
    cp: Plane,
    principal: DeviceReader,
    limit: int = Query(default=1000, ge=1, le=10_000),
    offset: int = Query(default=0, ge=0),
) -> list[schemas.DevicePublic]:
    def run() -> list[schemas.DevicePublic]:
        with cp.database.read() as conn:
            return [schemas.DevicePublic(**vars(d)) for d in list_devices(conn, limit, offset)]

    return await run_in_threadpool(run)


@router.post("/devices/{serial}/revoke", response_model=schemas.Revoked, name="device.revoke")
async def revoke(
    serial: str,
    body: schemas.RevokeRequest,
    cp: Plane,
    principal: DeviceRevoker,
) -> schemas.Revoked:
    def run() -> list[str]:
        with cp.database.write() as conn:
            now = cp.now()
            revoked = revoke_device(conn, serial, body.reason, f"principal:{principal.name}", now)
            publish_crl(conn, cp.fleet.issuing, now)
            return revoked

    return schemas.Revoked(serial=serial, certificates=await run_in_threadpool(run))


@router.get("/audit", response_model=list[schemas.AuditEntry], name="audit.read")
async def get_audit(
    cp: Plane,
    principal: AuditReader,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[schemas.AuditEntry]:
    def run() -> list[schemas.AuditEntry]:
        with cp.database.read() as conn:
            return [
                schemas.AuditEntry(
                    seq=r.seq,
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    target=r.target,
                    outcome=r.outcome,
                    details=r.details,
                    entry_hash=r.entry_hash,
                )
                for r in read_audit(conn, after=after, limit=limit)
            ]

    return await run_in_threadpool(run)


@router.get("/audit/verify", response_model=schemas.AuditHead, name="audit.verify")
async def verify_audit(cp: Plane, principal: AuditReader) -> schemas.AuditHead:
    def run() -> tuple[int, str]:
        with cp.database.read() as conn:
            return verify_stored_chain(conn)

    seq, head = await run_in_threadpool(run)
    return schemas.AuditHead(seq=seq, entry_hash=head)


@router.post("/batches/{batch_id}/close", response_model=schemas.BatchClosed, name="batch.close")
async def close(batch_id: int, cp: Plane, principal: BatchManager) -> schemas.BatchClosed:
    """Stop a batch at once: its unused tokens (or IDevIDs) can no longer enroll."""

    def run() -> int:
        with cp.database.write() as conn:
            unused = close_batch(conn, batch_id)
            append_audit(
                conn,
                actor=f"principal:{principal.name}",
                action="batch.close",
                target=f"batch:{batch_id}",
                outcome="ok",
                now=cp.now(),
                details={"unused_authorizations": unused},
            )
            return unused

    return schemas.BatchClosed(id=batch_id, unused=await run_in_threadpool(run))


@router.post(
    "/principals/{name}/disable", response_model=schemas.PrincipalPublic, name="principal.disable"
)
async def disable(name: str, cp: Plane, principal: PrincipalsManager) -> schemas.PrincipalPublic:
    """Disable a principal (a leaked token, a person leaving): refused from its next request."""

    def run() -> Role:
        with cp.database.write() as conn:
            role = disable_principal(conn, name, principal.name)
            append_audit(
                conn,
                actor=f"principal:{principal.name}",
                action="principal.disable",
                target=name,
                outcome="ok",
                now=cp.now(),
            )
            return role

    return schemas.PrincipalPublic(name=name, role=await run_in_threadpool(run))


@router.post("/devices/rollback", response_model=schemas.RollbackQueued, name="device.rollback")
async def rollback(
    body: schemas.RollbackRequest, cp: Plane, principal: DeviceRollback
) -> schemas.RollbackQueued:
    """Send devices (by serial, or every device of a model) back to their previous good
    version; they stay there (update hold) until released."""

    def run() -> list[str]:
        with cp.database.write() as conn:
            return request_rollback(
                conn, body.serials, body.model, f"principal:{principal.name}", cp.now()
            )

    return schemas.RollbackQueued(devices=await run_in_threadpool(run))


@router.post("/devices/{serial}/release-hold", status_code=204, name="device.release-hold")
async def release(serial: str, cp: Plane, principal: DeviceRollback) -> Response:
    """Let a device that was sent back be offered releases again."""

    def run() -> None:
        with cp.database.write() as conn:
            release_hold(conn, serial, f"principal:{principal.name}", cp.now())

    await run_in_threadpool(run)
    return Response(status_code=204)

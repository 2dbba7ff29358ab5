"""What every route can reach: the services of one running control plane, and the typed
dependencies that hand them to routes (the calling principal, the calling device)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ssl
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from garrison.access.roles import Permission, require
from garrison.clock import Clock
from garrison.errors import PolicyError
from garrison.fleet.last_seen import LastSeen
from garrison.identity.certificates import fingerprint
from garrison.identity.devices import DeviceIdentity, authenticate_device
from garrison.identity.enrollment import EnrollmentService
from garrison.identity.fleet import Fleet
from garrison.identity.principals import Principal, authenticate
from garrison.server.errors import HttpError
from garrison.server.tls import client_certificate
from garrison.store.database import Database
from garrison.updates.releases import ReleaseService


@dataclass
class ControlPlane:
    fleet: Fleet
    database: Database
    enrollment: EnrollmentService
    releases: ReleaseService
    clock: Clock
    tls: ssl.SSLContext | None = None  # set by the server that serves this app

    def now(self) -> dt.datetime:
        return self.clock()

    @cached_property
    def last_seen(self) -> LastSeen:
        """This process's device last-seen times, written in batches (accurate to
        :data:`garrison.fleet.last_seen.FLUSH_SECONDS`; flushed when the app shuts down)."""
        return LastSeen(self.database)


def trust_manufacturer_ca(cp: ControlPlane, ca: x509.Certificate) -> None:
    """Let TLS handshakes of this process accept client certificates from ``ca`` (IDevIDs).
    Other processes load registered manufacturer CAs when they start."""
    if cp.tls is not None:
        cp.tls.load_verify_locations(cadata=ca.public_bytes(serialization.Encoding.DER))


def plane(request: Request) -> ControlPlane:
    cp = request.app.state.control_plane
    assert isinstance(cp, ControlPlane)
    return cp


Plane = Annotated[ControlPlane, Depends(plane)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body too large ({declared} bytes, limit {limit})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body too large (more than {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def basic_credentials(request: Request) -> tuple[str, str]:
    """``(user, password)`` from HTTP Basic, or 401 asking for them."""
    challenge = {"WWW-Authenticate": 'Basic realm="garrison-est", charset="UTF-8"'}
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise HttpError(
            401, "enrollment needs HTTP Basic credentials: serial and token", headers=challenge
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(401, "malformed HTTP Basic credentials", headers=challenge) from None
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        raise HttpError(401, "HTTP Basic credentials need both serial and token", headers=challenge)
    request.state.actor = f"factory:{user[:64]}"
    request.state.target = user[:64]
    return user, password


async def current_principal(request: Request, cp: Plane) -> Principal:
    """The principal whose bearer token authenticates this request (401 otherwise)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    principal = None
    if scheme.lower() == "bearer" and token:

        def lookup() -> Principal | None:
            with cp.database.read() as conn:
                return authenticate(conn, token.strip())

        principal = await run_in_threadpool(lookup)
    if principal is None:
        request.state.audit_action = "api.authenticate"
        reason = "missing bearer token" if not token else "invalid or disabled API token"
        raise HttpError(
            401,
            f"authentication required: {reason}",
            hint="send 'Authorization: Bearer <token>' with a principal's API token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.actor = f"principal:{principal.name}"
    return principal


def permitted(permission: Permission) -> Any:
    """A dependency that yields the principal if its role holds ``permission`` (403)."""

    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        try:
            require(principal.role, permission)
        except PolicyError:
            request.state.audit_action = "api.authorize"
            raise
        return principal

    return Depends(check)


async def current_device(request: Request, cp: Plane) -> DeviceIdentity:
    """The active device behind this request's verified client certificate (403 otherwise)."""
    der = client_certificate(request.scope)
    if der is not None:
        request.state.actor = f"tls-client:{fingerprint(der)[:16]}"

    def lookup() -> DeviceIdentity:
        with cp.database.read() as conn:
            return authenticate_device(conn, der, cp.now())

    try:
        device = await run_in_threadpool(lookup)
    except PolicyError:
        request.state.audit_action = "device.authenticate"
        raise
    request.state.actor = f"device:{device.serial}"
    request.state.target = device.serial
    return device


CurrentDevice = Annotated[DeviceIdentity, Depends(current_device)]

PrincipalsManager = Annotated[Principal, permitted(Permission.PRINCIPALS_MANAGE)]
BatchManager = Annotated[Principal, permitted(Permission.BATCHES_MANAGE)]
DeviceReader = Annotated[Principal, permitted(Permission.DEVICES_READ)]
DeviceRevoker = Annotated[Principal, permitted(Permission.DEVICES_REVOKE)]
AuditReader = Annotated[Principal, permitted(Permission.AUDIT_READ)]
ReleaseManager = Annotated[Principal, permitted(Permission.RELEASES_MANAGE)]
DeviceRollback = Annotated[Principal, permitted(Permission.DEVICES_ROLLBACK)]
FleetManager = Annotated[Principal, permitted(Permission.FLEET_MANAGE)]
CampaignManager = Annotated[Principal, permitted(Permission.CAMPAIGNS_MANAGE)]
Caller = Annotated[Principal, Depends(current_principal)]

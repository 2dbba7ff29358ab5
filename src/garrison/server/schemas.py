"""API schemas: what clients send and receive. Separate from the tables, so that token
digests and key material never reach a response."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from garrison.access.roles import Role


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrincipalCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    role: Role


class PrincipalPublic(Strict):
    name: str
    role: Role


class PrincipalCreated(PrincipalPublic):
    token: str = Field(description="The API token. Shown once; only its digest is stored.")


class BatchCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    manufacturer: str = Field(description="Name of a principal with the manufacturer role")
    model: str = Field(min_length=1, max_length=64, description="Hardware model of the devices")
    serials: list[str] = Field(default_factory=list, max_length=100_000)
    quota: int | None = Field(default=None, ge=1, le=100_000)
    valid_days: int = Field(default=30, ge=1, le=366)
    idevid_ca_pem: str | None = Field(
        default=None,
        max_length=16_384,
        description="Manufacturer CA (PEM): its IDevIDs authenticate enrollment instead of tokens",
    )


class EnrollmentToken(Strict):
    serial: str | None
    token: str


class BatchCreated(Strict):
    id: int
    expires_at: dt.datetime
    authentication: str = Field(description="'token' or 'idevid'")
    tokens: list[EnrollmentToken] = Field(
        description="Single-use tokens, shown once (none when devices use their IDevID)"
    )


class BatchClosed(Strict):
    id: int
    unused: int = Field(description="authorizations that can no longer be used")


class BatchPublic(Strict):
    id: int
    name: str
    manufacturer: str | None
    model: str
    created_at: dt.datetime
    expires_at: dt.datetime
    quota: int | None
    issued: int
    authorized: int
    closed: bool
    idevid: bool


class DevicePublic(Strict):
    serial: str
    model: str
    status: str
    enrolled_at: dt.datetime
    last_seen_at: dt.datetime | None
    current_cert: str | None
    cert_not_after: dt.datetime | None


class RevokeRequest(Strict):
    reason: str = Field(default="unspecified", max_length=32)


class Revoked(Strict):
    serial: str
    certificates: list[str]


class AuditEntry(Strict):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    details: dict[str, object]
    entry_hash: str


class AuditHead(Strict):
    seq: int
    entry_hash: str


class ArtifactStored(Strict):
    sha256: str
    length: int


class ReleaseCreate(Strict):
    name: str = Field(max_length=64)
    version: str = Field(max_length=64)
    hardware: list[str] = Field(min_length=1, max_length=64)
    security_version: int = Field(ge=0, le=2**31 - 1)
    install: str = Field(default="image", description="'image' (A/B slot) or 'app' (package)")
    health_checks: list[list[str]] = Field(default_factory=list, max_length=16)
    sha256: str = Field(description="SHA-256 of an uploaded artifact (PUT /api/v1/artifacts)")


class ReleaseSignature(Strict):
    keyid: str = Field(max_length=128)
    signature: str = Field(max_length=2048, description="hex signature over the payload")


class ReleasePublic(Strict):
    id: int
    name: str
    version: str
    target_path: str
    state: str
    signatures: int
    missing: int = Field(description="signatures still needed before publication")
    custom: dict[str, object]


class UpdateOffer(Strict):
    target: str = Field(description="TUF target path of the release to install")


class DeviceCommand(Strict):
    id: int
    action: str


class CommandResult(Strict):
    outcome: str = Field(max_length=32, description="committed, rolled-back, refused or failed")
    detail: str = Field(default="", max_length=300)


class RollbackRequest(Strict):
    serials: list[str] = Field(default_factory=list, max_length=10_000)
    model: str | None = Field(default=None, max_length=64, description="every device of a model")


class RollbackQueued(Strict):
    devices: list[str]

"""Production batches: what a contract manufacturer is allowed to enroll."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from garrison.access.roles import Role
from garrison.errors import InvalidRequest, PolicyError
from garrison.factory.policy import check_serial
from garrison.factory.tokens import new_token, token_digest
from garrison.identity.principals import find_principal
from garrison.pki.idevid import ca_der, issuer_key
from garrison.store.tables import authorizations, batches

MAX_BATCH_SIZE = 100_000
MAX_BATCH_DAYS = 366


@dataclass(frozen=True)
class BatchRequest:
    """What the OEM asks for: an allow-list of serials, a quota, or both."""

    name: str
    manufacturer: str
    model: str
    serials: list[str]
    quota: int | None
    valid_days: int
    idevid_ca: x509.Certificate | None = None


@dataclass(frozen=True)
class CreatedBatch:
    batch_id: int
    expires_at: dt.datetime
    tokens: list[tuple[str | None, str]]  # (serial or None, token) -- shown once; none for IDevID


@dataclass(frozen=True)
class BatchView:
    batch_id: int
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


def validate_batch(request: BatchRequest) -> None:
    """Reject a batch that is empty, too large, too long-lived or has duplicate serials."""
    if not request.serials and request.quota is None:
        raise InvalidRequest("a batch needs an allow-list of serials, a quota, or both")
    if request.quota is not None and not 1 <= request.quota <= MAX_BATCH_SIZE:
        raise InvalidRequest(f"quota must be between 1 and {MAX_BATCH_SIZE}")
    if len(request.serials) > MAX_BATCH_SIZE:
        raise InvalidRequest(f"at most {MAX_BATCH_SIZE} serials per batch")
    if len(set(request.serials)) != len(request.serials):
        raise InvalidRequest("the serial allow-list contains duplicates")
    for serial in request.serials:
        check_serial(serial)
    if not 1 <= request.valid_days <= MAX_BATCH_DAYS:
        raise InvalidRequest(f"valid_days must be between 1 and {MAX_BATCH_DAYS}")
    if not request.name or len(request.name) > 128:
        raise InvalidRequest("batch name must be 1-128 characters")
    if not request.model or len(request.model) > 64:
        raise InvalidRequest("model must be 1-64 characters")


def create_batch(conn: Connection, request: BatchRequest, now: dt.datetime) -> CreatedBatch:
    """Create the batch and its single-use tokens: one per allowed serial, else ``quota``."""
    validate_batch(request)
    manufacturer = find_principal(conn, request.manufacturer)
    if manufacturer is None or manufacturer.role is not Role.MANUFACTURER:
        raise PolicyError(f"{request.manufacturer!r} is not a principal with the manufacturer role")
    expires_at = now + dt.timedelta(days=request.valid_days)
    batch_id = conn.execute(
        batches.insert()
        .values(
            name=request.name,
            manufacturer_id=manufacturer.id,
            model=request.model,
            created_at=now,
            expires_at=expires_at,
            quota=request.quota,
            issued=0,
            closed=False,
            idevid_issuer=None
            if request.idevid_ca is None
            else issuer_key(request.idevid_ca.subject),
            idevid_ca=None if request.idevid_ca is None else ca_der(request.idevid_ca),
        )
        .returning(batches.c.id)
    ).scalar_one()
    slots: list[str | None] = list(request.serials) or [None] * (request.quota or 0)
    tokens = [(serial, new_token()) for serial in slots]
    try:
        with conn.begin_nested():
            conn.execute(
                authorizations.insert(),
                [
                    {"batch_id": batch_id, "serial": serial, "token_digest": token_digest(token)}
                    for serial, token in tokens
                ],
            )
    except IntegrityError:
        raise PolicyError("some of these serials are already authorized in another batch") from None
    # With a manufacturer CA the devices authenticate with their IDevID; the slots' random
    # tokens are never shown, so they cannot be used.
    return CreatedBatch(batch_id, expires_at, [] if request.idevid_ca is not None else tokens)


def list_batches(conn: Connection, manufacturer_id: int | None = None) -> list[BatchView]:
    """Every batch, or only those of one manufacturer."""
    from garrison.store.tables import principals

    authorized = (
        select(func.count()).where(authorizations.c.batch_id == batches.c.id).scalar_subquery()
    )
    query = (
        select(batches, principals.c.name.label("manufacturer"), authorized.label("authorized"))
        .outerjoin(principals, principals.c.id == batches.c.manufacturer_id)
        .order_by(batches.c.id)
    )
    if manufacturer_id is not None:
        query = query.where(batches.c.manufacturer_id == manufacturer_id)
    return [
        BatchView(
            row.id,
            row.name,
            row.manufacturer,
            row.model,
            row.created_at,
            row.expires_at,
            row.quota,
            row.issued,
            row.authorized,
            row.closed,
            row.idevid_issuer is not None,
        )
        for row in conn.execute(query)
    ]


def manufacturer_cas(conn: Connection) -> list[x509.Certificate]:
    """Every manufacturer (IDevID) CA a batch has registered, once each."""
    rows = conn.execute(
        select(batches.c.idevid_ca).where(batches.c.idevid_ca.is_not(None)).distinct()
    )
    return [x509.load_der_x509_certificate(row.idevid_ca) for row in rows]


def close_batch(conn: Connection, batch_id: int) -> int:
    """Close a batch at once (e.g. its tokens leaked); return how many tokens were unused.
    Closing is final: unused tokens can no longer enroll anything."""
    changed = conn.execute(
        update(batches)
        .where(batches.c.id == batch_id, batches.c.closed.is_(False))
        .values(closed=True)
    ).rowcount
    if changed != 1:
        exists = conn.execute(select(batches.c.id).where(batches.c.id == batch_id)).first()
        if exists is None:
            raise LookupError(f"no batch {batch_id}")
        raise PolicyError(f"batch {batch_id} is already closed")
    unused = conn.execute(
        select(func.count()).where(
            authorizations.c.batch_id == batch_id, authorizations.c.used_at.is_(None)
        )
    ).scalar_one()
    return int(unused)

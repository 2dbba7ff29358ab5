"""A device's first certificate: what the one-at-a-time path (:mod:`.enrollment`) and group
commit (:mod:`.group_commit`) share — the statements, the checks of the CSR, the decision
on an authorization row, the audit entry and the result."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy import Row, and_, bindparam, or_, select, update

from garrison.factory.policy import BatchFacts, TokenFacts, decide_enrollment
from garrison.pki.csr import CheckedCsr, check_csr, decode_est_body, require_identity
from garrison.pki.profile import device_uri
from garrison.store.audit_log import AuditEntry
from garrison.store.tables import authorizations, batches, devices

# The hot path's statements, built once: constructing SQLAlchemy statements per request
# cost more than the signature and the database work together.
FACTS = select(
    authorizations.c.id,
    authorizations.c.serial,
    authorizations.c.used_at,
    batches.c.id.label("batch_id"),
    batches.c.expires_at,
    batches.c.quota,
    batches.c.issued,
    batches.c.closed,
    batches.c.model,
    select(devices.c.id)
    .where(devices.c.serial == bindparam("serial"))
    .scalar_subquery()
    .label("enrolled"),
    select(authorizations.c.id)
    .where(authorizations.c.serial == bindparam("serial"))
    .scalar_subquery()
    .label("reserved_by"),
).join(batches, batches.c.id == authorizations.c.batch_id)
TOKEN_FACTS = FACTS.where(authorizations.c.token_digest == bindparam("digest"))
# An IDevID's slot among the batches that registered its manufacturer CA: its allow-list
# entry if any, else a free quota slot; rows other requests hold are skipped (PostgreSQL),
# so concurrent enrollments take different slots instead of colliding.
IDEVID_FACTS = (
    FACTS.where(
        authorizations.c.batch_id.in_(bindparam("batch_ids", expanding=True)),
        or_(
            authorizations.c.serial == bindparam("serial"),
            and_(authorizations.c.serial.is_(None), authorizations.c.used_at.is_(None)),
        ),
    )
    .order_by(authorizations.c.serial.is_(None), authorizations.c.batch_id)
    .limit(1)
    .with_for_update(of=authorizations, skip_locked=True)
)
IDEVID_BATCHES = select(batches.c.id, batches.c.idevid_ca).where(
    batches.c.idevid_issuer == bindparam("issuer"),
    batches.c.closed.is_(False),
    batches.c.expires_at > bindparam("now"),
)
CONSUME_TOKEN = (
    update(authorizations)
    .where(authorizations.c.id == bindparam("auth_id"), authorizations.c.used_at.is_(None))
    .values(used_at=bindparam("now"), serial=bindparam("serial"))
)
INSERT_DEVICE = devices.insert().returning(devices.c.id, sort_by_parameter_order=True)
COUNT_ISSUANCES = (
    update(batches)
    .where(
        batches.c.id == bindparam("batch_id"),
        batches.c.closed.is_(False),
        batches.c.expires_at > bindparam("now"),
        or_(batches.c.quota.is_(None), batches.c.issued + bindparam("n") <= batches.c.quota),
    )
    .values(issued=batches.c.issued + bindparam("n"))
)

FactsRow = Row[Any, *tuple[Any, ...]]


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    device_serial: str


def check_device_csr(body: bytes, serial: str) -> CheckedCsr:
    """The EST body's CSR, with proof of possession, an allowed key, no CA:TRUE, and no
    name but the device's own."""
    checked = check_csr(decode_est_body(body))
    require_identity(checked, serial, device_uri(serial))
    return checked


def decide_first_issuance(
    serial: str, row: FactsRow | None, now: dt.datetime, pending: int = 0
) -> FactsRow:
    """Allow the first issuance for ``serial`` under the authorization ``row`` (a
    :data:`FACTS` row, ``None`` if none matched), or raise the refusal. ``pending`` counts
    issuances of the same batch already decided but not yet written (group commit)."""
    facts = None
    if row is not None:
        issued = row.issued + pending
        batch = BatchFacts(row.batch_id, row.expires_at, row.quota, issued, row.closed)
        facts = TokenFacts(row.id, row.serial, row.used_at is not None, batch)
    decide_enrollment(
        serial,
        facts,
        row is not None and row.enrolled is not None,
        now,
        serial_reserved=row is not None and row.reserved_by not in (None, row.id),
    )
    assert row is not None
    return row


def device_row(serial: str, row: FactsRow, cert_serial: str, now: dt.datetime) -> dict[str, Any]:
    """The ``devices`` row of a device enrolled under the authorization ``row``."""
    return {
        "serial": serial,
        "batch_id": row.batch_id,
        "model": row.model,
        "status": "active",
        "enrolled_at": now,
        "current_cert": cert_serial,
        "retire_pending": False,
    }


def issuance_audit(batch_id: int, serial: str, cert_serial: str, via: str) -> AuditEntry:
    """The audit entry of a first issuance."""
    details = {"certificate": cert_serial, "via": via}
    return AuditEntry(f"batch:{batch_id}", "cert.issue", serial, "ok", details)

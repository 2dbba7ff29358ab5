"""Publishing revocation: the current CRL (kept in the database, re-signed when due) and
the certificate status lookup behind the OCSP responder."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, select, update

from garrison.identity.certificates import REVOKED, find_by_serial
from garrison.identity.devices import REVOCATION_REASONS
from garrison.pki.authority import Authority
from garrison.pki.revocation import CRL_VALIDITY, CertStatus, RevokedEntry, build_crl
from garrison.store.tables import certificates, crl_state

REFRESH_BEFORE = CRL_VALIDITY / 2


def reason_flag(reason: str | None) -> x509.ReasonFlags:
    """The CRL/OCSP reason code of a stored revocation reason."""
    return REVOCATION_REASONS.get(reason or "", x509.ReasonFlags.unspecified)


def revoked_entries(conn: Connection, now: dt.datetime) -> list[RevokedEntry]:
    """Every revoked certificate that has not yet expired (expired ones may leave the CRL)."""
    rows = conn.execute(
        select(
            certificates.c.serial_hex, certificates.c.revoked_at, certificates.c.revocation_reason
        )
        .where(certificates.c.status == REVOKED, certificates.c.not_after > now)
        .order_by(certificates.c.serial_hex)
    )
    return [
        RevokedEntry(
            int(row.serial_hex, 16),
            row.revoked_at,
            reason_flag(row.revocation_reason),
        )
        for row in rows
    ]


_NEXT_CRL_NUMBER = (
    update(crl_state)
    .where(crl_state.c.id == 1)
    .values(crl_number=crl_state.c.crl_number + 1)
    .returning(crl_state.c.crl_number)
)


def publish_crl(conn: Connection, ca: Authority, now: dt.datetime) -> bytes:
    """Sign a new complete CRL with the next CRL number and store it; return its DER.

    The CRL row is locked *before* the revoked certificates are read (its number bumped
    first), so a CRL signed concurrently with a revocation can never overwrite the CRL that
    lists it, and no two CRLs share a number (RFC 5280 section 5.2.3).
    """
    number = conn.execute(_NEXT_CRL_NUMBER).scalar_one()
    crl = build_crl(ca, revoked_entries(conn, now), number, now)
    der = crl.public_bytes(serialization.Encoding.DER)
    next_update = crl.next_update_utc
    assert next_update is not None
    conn.execute(
        update(crl_state).where(crl_state.c.id == 1).values(next_update=next_update, der=der)
    )
    return der


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def invalidate_crl(conn: Connection) -> None:
    """Mark the stored CRL stale: the next request for it signs a fresh one."""
    conn.execute(update(crl_state).where(crl_state.c.id == 1).values(next_update=EPOCH))


def fresh_or_publish_crl(conn: Connection, ca: Authority, now: dt.datetime) -> bytes:
    """Inside a write transaction: the stored CRL if still fresh, else a newly signed one.
    The row is locked first, so requests that all found the CRL stale sign it once."""
    conn.execute(select(crl_state.c.id).where(crl_state.c.id == 1).with_for_update())
    return current_crl(conn, now) or publish_crl(conn, ca, now)


def current_crl(conn: Connection, now: dt.datetime) -> bytes | None:
    """The stored CRL if it is not yet due for refresh, else ``None``."""
    row = conn.execute(
        select(crl_state.c.der, crl_state.c.next_update).where(crl_state.c.id == 1)
    ).first()
    if row is None or not row.der or row.next_update - REFRESH_BEFORE <= now:
        return None
    return bytes(row.der)


def certificate_status(conn: Connection, serial_number: int) -> CertStatus | None:
    """What OCSP says about a serial: ``None`` if this fleet never issued it."""
    record = find_by_serial(conn, serial_number)
    if record is None:
        return None
    if record.status != REVOKED:
        return CertStatus(revoked=None)
    assert record.revoked_at is not None
    reason = reason_flag(record.revocation_reason)
    return CertStatus(RevokedEntry(serial_number, record.revoked_at, reason))

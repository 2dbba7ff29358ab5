"""Recording issued certificates and finding them again (by fingerprint or serial)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, bindparam, select

from garrison.store.tables import certificates, devices

VALID = "valid"
REVOKED = "revoked"


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint (hex) of a DER certificate."""
    return hashlib.sha256(der).hexdigest()


def serial_hex(serial_number: int) -> str:
    return format(serial_number, "x")


@dataclass(frozen=True)
class CertRecord:
    serial_hex: str
    device_id: int
    device_serial: str
    device_status: str
    status: str
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None


_INSERT = certificates.insert()


def certificate_row(device_id: int, cert: x509.Certificate, now: dt.datetime) -> dict[str, Any]:
    """The ``certificates`` row recording ``cert``, issued to ``device_id`` at ``now``."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "serial_hex": serial_hex(cert.serial_number),
        "device_id": device_id,
        "fingerprint": fingerprint(der),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "issued_at": now,
        "status": VALID,
        "der": der,
    }


def record_certificate(
    conn: Connection, device_id: int, cert: x509.Certificate, now: dt.datetime
) -> str:
    """Store an issued certificate; return its serial (hex)."""
    row = certificate_row(device_id, cert, now)
    conn.execute(_INSERT, row)
    return str(row["serial_hex"])


_SELECT = select(
    certificates.c.serial_hex,
    certificates.c.device_id,
    devices.c.serial.label("device_serial"),
    devices.c.status.label("device_status"),
    certificates.c.status,
    certificates.c.not_after,
    certificates.c.revoked_at,
    certificates.c.revocation_reason,
).join(devices, devices.c.id == certificates.c.device_id)
_BY_FINGERPRINT = _SELECT.where(certificates.c.fingerprint == bindparam("fingerprint"))
_BY_SERIAL = _SELECT.where(certificates.c.serial_hex == bindparam("serial_hex"))


def _record(row: object) -> CertRecord:
    return CertRecord(**row._mapping)  # type: ignore[attr-defined]


def find_by_fingerprint(conn: Connection, der: bytes) -> CertRecord | None:
    row = conn.execute(_BY_FINGERPRINT, {"fingerprint": fingerprint(der)}).first()
    return None if row is None else _record(row)


def find_by_serial(conn: Connection, serial_number: int) -> CertRecord | None:
    row = conn.execute(_BY_SERIAL, {"serial_hex": serial_hex(serial_number)}).first()
    return None if row is None else _record(row)

"""Devices on the secure channel: who is calling (from the verified client certificate),
check-in, listing and revocation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import Connection, select, update

from garrison.errors import InvalidRequest, PolicyError
from garrison.identity.certificates import REVOKED, VALID, find_by_fingerprint
from garrison.store.audit_log import append_audit
from garrison.store.tables import certificates, devices

REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
}


class DeviceRefused(PolicyError):
    """The client certificate does not (or no longer) identify an active device."""


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: int
    serial: str
    certificate: str


@dataclass(frozen=True)
class DeviceView:
    serial: str
    model: str
    status: str
    enrolled_at: dt.datetime
    last_seen_at: dt.datetime | None
    current_cert: str | None
    cert_not_after: dt.datetime | None


def authenticate_device(
    conn: Connection, cert_der: bytes | None, now: dt.datetime
) -> DeviceIdentity:
    """The active device that owns ``cert_der``, or :class:`DeviceRefused` saying why not.

    TLS has already verified the chain and validity period; this adds what TLS cannot know:
    that this fleet issued exactly this certificate, and that neither it nor the device has
    been revoked or superseded since.
    """
    if cert_der is None:
        raise DeviceRefused("a client certificate is required (mutual TLS)")
    record = find_by_fingerprint(conn, cert_der)
    if record is None:
        raise DeviceRefused("client certificate was not issued by this fleet")
    if record.device_status != "active":
        raise DeviceRefused(f"device {record.device_serial!r} is revoked")
    if record.status != VALID:
        raise DeviceRefused(f"client certificate is {record.status} ({record.revocation_reason})")
    if record.not_after <= now:
        raise DeviceRefused("client certificate has expired")
    return DeviceIdentity(record.device_id, record.device_serial, record.serial_hex)


def check_in(conn: Connection, device: DeviceIdentity, now: dt.datetime) -> bool:
    """Record that ``device`` was seen. On first use of a renewed certificate, retire the
    older ones (revoked as superseded). Returns whether certificates were retired."""
    row = conn.execute(
        select(devices.c.current_cert, devices.c.retire_pending).where(
            devices.c.id == device.device_id
        )
    ).one()
    retire = bool(row.retire_pending) and row.current_cert == device.certificate
    conn.execute(update(devices).where(devices.c.id == device.device_id).values(last_seen_at=now))
    if not retire:
        return False
    conn.execute(
        update(certificates)
        .where(
            certificates.c.device_id == device.device_id,
            certificates.c.status == VALID,
            certificates.c.serial_hex != device.certificate,
        )
        .values(status=REVOKED, revoked_at=now, revocation_reason="superseded")
    )
    conn.execute(
        update(devices).where(devices.c.id == device.device_id).values(retire_pending=False)
    )
    return True


def list_devices(conn: Connection, limit: int = 1000, offset: int = 0) -> list[DeviceView]:
    query = (
        select(
            devices.c.serial,
            devices.c.model,
            devices.c.status,
            devices.c.enrolled_at,
            devices.c.last_seen_at,
            devices.c.current_cert,
            certificates.c.not_after.label("cert_not_after"),
        )
        .outerjoin(certificates, certificates.c.serial_hex == devices.c.current_cert)
        .order_by(devices.c.serial)
        .limit(limit)
        .offset(offset)
    )
    return [DeviceView(**row._mapping) for row in conn.execute(query)]


def revoke_device(
    conn: Connection, serial: str, reason: str, actor: str, now: dt.datetime
) -> list[str]:
    """Revoke the device and every valid certificate it holds; return those certificates."""
    if reason not in REVOCATION_REASONS:
        raise InvalidRequest(
            f"unknown revocation reason {reason!r}",
            hint="use one of: " + ", ".join(REVOCATION_REASONS),
        )
    device_id = conn.execute(select(devices.c.id).where(devices.c.serial == serial)).scalar()
    if device_id is None:
        raise LookupError(f"no device with serial {serial!r}")
    changed = conn.execute(
        update(devices)
        .where(devices.c.id == device_id, devices.c.status == "active")
        .values(status="revoked")
    ).rowcount
    if changed != 1:
        raise PolicyError(f"device {serial!r} is already revoked")
    revoked = list(
        conn.execute(
            update(certificates)
            .where(certificates.c.device_id == device_id, certificates.c.status == VALID)
            .values(status=REVOKED, revoked_at=now, revocation_reason=reason)
            .returning(certificates.c.serial_hex)
        ).scalars()
    )
    append_audit(
        conn,
        actor=actor,
        action="device.revoke",
        target=serial,
        outcome="ok",
        now=now,
        details={"reason": reason, "certificates": revoked},
    )
    return revoked

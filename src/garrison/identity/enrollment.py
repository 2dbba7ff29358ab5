"""EST enrollment (RFC 7030): factory enrollment with single-use tokens and re-enrollment
with the current certificate. Every issuance and every refusal is audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from garrison.errors import EnrollmentRefused, GarrisonError, PolicyError
from garrison.factory.policy import BatchFacts, TokenFacts, check_serial, decide_enrollment
from garrison.factory.tokens import token_digest
from garrison.identity.certificates import (
    REVOKED,
    VALID,
    find_by_fingerprint,
    fingerprint,
    record_certificate,
)
from garrison.pki.authority import Authority
from garrison.pki.csr import CheckedCsr, check_csr, decode_est_body, require_identity
from garrison.pki.profile import DeviceProfile, device_uri, issue_device_certificate
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.store.tables import authorizations, batches, certificates, devices

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    device_serial: str


class EnrollmentService:
    """Issues device certificates under the fleet's issuing CA."""

    def __init__(
        self,
        database: Database,
        issuing: Authority,
        root: x509.Certificate,
        profile: DeviceProfile,
        clock: Clock = utc_now,
    ) -> None:
        self._db = database
        self._ca = issuing
        self._profile = profile
        self._clock = clock
        self._cacerts = pkcs7.serialize_certificates(
            [issuing.certificate, root], serialization.Encoding.DER
        )

    def cacerts(self) -> bytes:
        """The DER PKCS#7 certs-only structure of ``/cacerts``: issuing CA and root."""
        return self._cacerts

    # -- factory enrollment ------------------------------------------------------------

    def enroll(self, serial: str, token: str, body: bytes) -> Issued:
        """``/simpleenroll`` with HTTP Basic ``serial:token``. Raises on refusal (audited)."""
        now = self._clock()
        try:
            check_serial(serial)
            checked = check_csr(decode_est_body(body))
            require_identity(checked, serial, device_uri(serial))
            facts = self._token_facts(token_digest(token), serial)
            decide_enrollment(serial, facts[0], facts[1], now)
            assert facts[0] is not None
            return self._issue_first(serial, facts[0], checked, now)
        except GarrisonError as exc:
            self._audit_refusal("est.enroll", f"factory:{serial[:64]}", serial[:64], exc, now)
            raise

    def _token_facts(self, digest: str, serial: str) -> tuple[TokenFacts | None, bool]:
        with self._db.read() as conn:
            row = conn.execute(
                select(
                    authorizations.c.id,
                    authorizations.c.serial,
                    authorizations.c.used_at,
                    batches.c.id.label("batch_id"),
                    batches.c.expires_at,
                    batches.c.quota,
                    batches.c.issued,
                    batches.c.closed,
                )
                .join(batches, batches.c.id == authorizations.c.batch_id)
                .where(authorizations.c.token_digest == digest)
            ).first()
            enrolled = (
                conn.execute(select(devices.c.id).where(devices.c.serial == serial)).first()
                is not None
            )
        if row is None:
            return None, enrolled
        batch = BatchFacts(row.batch_id, row.expires_at, row.quota, row.issued, row.closed)
        return TokenFacts(row.id, row.serial, row.used_at is not None, batch), enrolled

    def _issue_first(
        self, serial: str, token: TokenFacts, checked: CheckedCsr, now: dt.datetime
    ) -> Issued:
        cert = issue_device_certificate(self._ca, checked.public_key, serial, self._profile, now)
        batch = token.batch
        with self._db.write() as conn:
            consumed = conn.execute(
                update(authorizations)
                .where(
                    authorizations.c.id == token.authorization_id,
                    authorizations.c.used_at.is_(None),
                )
                .values(used_at=now, serial=serial)
            ).rowcount
            if consumed != 1:
                raise EnrollmentRefused("enrollment token was already used")
            counted = conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch.batch_id,
                    batches.c.closed.is_(False),
                    batches.c.expires_at > now,
                    or_(batches.c.quota.is_(None), batches.c.issued < batches.c.quota),
                )
                .values(issued=batches.c.issued + 1)
            ).rowcount
            if counted != 1:
                raise EnrollmentRefused(f"production batch {batch.batch_id} quota exhausted")
            device_id = self._insert_device(conn, serial, batch.batch_id, now)
            cert_serial = record_certificate(conn, device_id, cert, now)
            conn.execute(
                update(devices).where(devices.c.id == device_id).values(current_cert=cert_serial)
            )
            append_audit(
                conn,
                actor=f"batch:{batch.batch_id}",
                action="cert.issue",
                target=serial,
                outcome="ok",
                now=now,
                details={"certificate": cert_serial, "via": "est.simpleenroll"},
            )
        return Issued(cert, serial)

    @staticmethod
    def _insert_device(conn: Connection, serial: str, batch_id: int, now: dt.datetime) -> int:
        model = conn.execute(select(batches.c.model).where(batches.c.id == batch_id)).scalar_one()
        try:
            with conn.begin_nested():
                return int(
                    conn.execute(
                        devices.insert()
                        .values(
                            serial=serial,
                            batch_id=batch_id,
                            model=model,
                            status="active",
                            enrolled_at=now,
                            retire_pending=False,
                        )
                        .returning(devices.c.id)
                    ).scalar_one()
                )
        except IntegrityError:
            raise EnrollmentRefused(f"device {serial!r} is already enrolled") from None

    # -- re-enrollment -----------------------------------------------------------------

    def reenroll(self, client_cert_der: bytes | None, body: bytes) -> Issued:
        """``/simplereenroll`` authenticated by the device's current certificate over mTLS.

        The presented certificate stays valid until the device first uses the new one (so a
        renewal that fails midway never strands a device); any earlier renewal that the
        device never picked up is revoked as superseded.
        """
        now = self._clock()
        target = "unknown"
        try:
            if client_cert_der is None:
                raise PolicyError("re-enrollment needs the device's current certificate (mTLS)")
            with self._db.read() as conn:
                record = find_by_fingerprint(conn, client_cert_der)
            if record is None:
                raise PolicyError("client certificate was not issued by this fleet")
            target = record.device_serial
            if record.device_status != "active":
                raise PolicyError(f"device {target!r} is revoked")
            if record.status != VALID:
                raise PolicyError(f"client certificate is {record.status}")
            if record.not_after <= now:
                raise PolicyError("client certificate has expired")
            checked = check_csr(decode_est_body(body))
            require_identity(checked, target, device_uri(target))
            cert = issue_device_certificate(
                self._ca, checked.public_key, target, self._profile, now
            )
            with self._db.write() as conn:
                new_serial = record_certificate(conn, record.device_id, cert, now)
                conn.execute(
                    update(certificates)
                    .where(
                        certificates.c.device_id == record.device_id,
                        certificates.c.status == VALID,
                        and_(
                            certificates.c.serial_hex != record.serial_hex,
                            certificates.c.serial_hex != new_serial,
                        ),
                    )
                    .values(status=REVOKED, revoked_at=now, revocation_reason="superseded")
                )
                changed = conn.execute(
                    update(devices)
                    .where(devices.c.id == record.device_id, devices.c.status == "active")
                    .values(current_cert=new_serial, retire_pending=True)
                ).rowcount
                if changed != 1:
                    raise PolicyError(f"device {target!r} is revoked")
                append_audit(
                    conn,
                    actor=f"device:{target}",
                    action="cert.issue",
                    target=target,
                    outcome="ok",
                    now=now,
                    details={
                        "certificate": new_serial,
                        "replaces": record.serial_hex,
                        "via": "est.simplereenroll",
                        "new_key": fingerprint(
                            checked.csr.public_key().public_bytes(
                                serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo,
                            )
                        )[:16],
                    },
                )
            return Issued(cert, target)
        except GarrisonError as exc:
            self._audit_refusal("est.reenroll", f"device:{target}", target, exc, now)
            raise

    def _audit_refusal(
        self, action: str, actor: str, target: str, exc: GarrisonError, now: dt.datetime
    ) -> None:
        with self._db.write() as conn:
            append_audit(
                conn,
                actor=actor,
                action=action,
                target=target,
                outcome="refused",
                now=now,
                details={"reason": str(exc)[:300]},
            )

"""EST enrollment (RFC 7030): factory enrollment with single-use tokens and re-enrollment
with the current certificate. Every issuance and every refusal is audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import Connection, update
from sqlalchemy.exc import IntegrityError

from garrison.clock import Clock, utc_now
from garrison.errors import EnrollmentRefused, PolicyError
from garrison.factory.policy import check_serial
from garrison.factory.tokens import token_digest
from garrison.identity.certificates import (
    REVOKED,
    VALID,
    fingerprint,
    record_certificate,
    serial_hex,
)
from garrison.identity.devices import DeviceIdentity
from garrison.identity.group_commit import GroupCommitter
from garrison.identity.issuance import (
    CONSUME_TOKEN,
    COUNT_ISSUANCES,
    IDEVID_BATCHES,
    IDEVID_FACTS,
    INSERT_DEVICE,
    TOKEN_FACTS,
    FactsRow,
    Issued,
    check_device_csr,
    decide_first_issuance,
    device_row,
    issuance_audit,
)
from garrison.identity.revocation import invalidate_crl
from garrison.pki.authority import Authority
from garrison.pki.csr import CheckedCsr
from garrison.pki.idevid import idevid_serial, issuer_key, verify_idevid
from garrison.pki.profile import DeviceIssuer, DeviceProfile
from garrison.store.audit_log import append_audit, append_audit_many
from garrison.store.database import Database
from garrison.store.tables import certificates, devices


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
        self._issuer = DeviceIssuer(issuing, profile)
        self._clock = clock
        self._committer = GroupCommitter(self)
        self._cacerts = pkcs7.serialize_certificates(
            [issuing.certificate, root], serialization.Encoding.DER
        )

    def cacerts(self) -> bytes:
        """The DER PKCS#7 certs-only structure of ``/cacerts``: issuing CA and root."""
        return self._cacerts

    # -- factory enrollment ------------------------------------------------------------

    def enroll(self, serial: str, token: str, body: bytes) -> Issued:
        """``/simpleenroll`` with HTTP Basic ``serial:token``; raises on refusal.

        Everything happens in one write transaction: the facts are read, the decision made
        and the certificate signed under the same locks that record the issuance, so two
        requests racing with one token can never both succeed. The rows every enrollment
        shares (the batch counter, the audit head) are touched last, to keep the time their
        locks are held short.
        """
        check_serial(serial)
        return self.enroll_checked(serial, token_digest(token), check_device_csr(body, serial))

    def enroll_async(self, serial: str, token: str, body: bytes) -> Awaitable[Issued]:
        """:meth:`enroll`, group-committed by this process's writer thread (to be awaited
        on the running event loop)."""
        return self._committer.submit(serial, token, body)

    def close(self) -> None:
        self._committer.stop()

    def enroll_checked(self, serial: str, digest: str, checked: CheckedCsr) -> Issued:
        """:meth:`enroll` after the checks that need no database."""
        now = self._clock()
        try:
            with self._db.write() as conn:
                row = conn.execute(TOKEN_FACTS, {"digest": digest, "serial": serial}).first()
                return self._issue_first(conn, serial, row, checked, now, "est.simpleenroll")
        except IntegrityError:
            # The device row's unique serial caught a concurrent enrollment of this serial.
            raise EnrollmentRefused(f"device {serial!r} is already enrolled") from None

    def enroll_idevid(self, idevid_der: bytes, body: bytes) -> Issued:
        """``/simpleenroll`` authenticated by a manufacturer-issued IDevID over TLS.

        The IDevID must come from the CA a batch registered; its subject ``serialNumber``
        is the device serial, which must be on that batch's allow-list (or take a quota
        slot). The new certificate certifies the key in the CSR, a key of the device's own.
        """
        now = self._clock()
        idevid = x509.load_der_x509_certificate(idevid_der)
        serial = check_serial(idevid_serial(idevid))
        checked = check_device_csr(body, serial)
        try:
            with self._db.write() as conn:
                batch_ids = self._idevid_batches(conn, idevid, now)
                row = conn.execute(IDEVID_FACTS, {"batch_ids": batch_ids, "serial": serial}).first()
                if row is None:
                    raise EnrollmentRefused(
                        f"serial {serial!r} is not authorized by an open batch of its maker"
                    )
                return self._issue_first(conn, serial, row, checked, now, "est.idevid")
        except IntegrityError:
            raise EnrollmentRefused(f"device {serial!r} is already enrolled") from None

    @staticmethod
    def _idevid_batches(conn: Connection, idevid: x509.Certificate, now: dt.datetime) -> list[int]:
        """The open batches whose registered manufacturer CA issued ``idevid``."""
        refusal: PolicyError | None = None
        found: list[int] = []
        rows = conn.execute(IDEVID_BATCHES, {"issuer": issuer_key(idevid.issuer), "now": now})
        for candidate in rows:
            try:
                verify_idevid(idevid, x509.load_der_x509_certificate(candidate.idevid_ca), now)
            except PolicyError as exc:
                refusal = exc
                continue
            found.append(int(candidate.id))
        if not found:
            raise refusal or EnrollmentRefused(
                "no open batch registers the CA that issued this IDevID"
            )
        return found

    def _issue_first(
        self,
        conn: Connection,
        serial: str,
        row: FactsRow | None,
        checked: CheckedCsr,
        now: dt.datetime,
        via: str,
    ) -> Issued:
        """Decide on the authorization ``row`` and, if allowed, issue and record."""
        row = decide_first_issuance(serial, row, now)
        cert = self._issuer.issue(checked.public_key, serial, now)
        consumed = conn.execute(
            CONSUME_TOKEN, {"auth_id": row.id, "now": now, "serial": serial}
        ).rowcount
        if consumed != 1:
            raise EnrollmentRefused("enrollment token was already used")
        cert_serial = serial_hex(cert.serial_number)
        device_id = conn.execute(
            INSERT_DEVICE, [device_row(serial, row, cert_serial, now)]
        ).scalar_one()
        record_certificate(conn, device_id, cert, now)
        counted = conn.execute(
            COUNT_ISSUANCES, {"batch_id": row.batch_id, "now": now, "n": 1}
        ).rowcount
        if counted != 1:
            raise EnrollmentRefused(f"production batch {row.batch_id} quota exhausted")
        append_audit_many(conn, [issuance_audit(row.batch_id, serial, cert_serial, via)], now)
        return Issued(cert, serial)

    # -- re-enrollment -----------------------------------------------------------------

    def reenroll(self, device: DeviceIdentity, body: bytes) -> Issued:
        """``/simplereenroll`` by a ``device`` authenticated with its current certificate.

        The presented certificate stays valid until the device first uses the new one (so a
        renewal that fails midway never strands a device); any earlier renewal that the
        device never picked up is revoked as superseded.
        """
        now = self._clock()
        checked = check_device_csr(body, device.serial)
        cert = self._issuer.issue(checked.public_key, device.serial, now)
        with self._db.write() as conn:
            # The presented certificate must still be valid now, under its row lock: it may
            # have been retired since the request was authenticated.
            held = conn.execute(
                update(certificates)
                .where(
                    certificates.c.serial_hex == device.certificate,
                    certificates.c.status == VALID,
                )
                .values(status=VALID)
            ).rowcount
            if held != 1:
                raise PolicyError("client certificate was revoked or superseded meanwhile")
            new_serial = record_certificate(conn, device.device_id, cert, now)
            superseded = conn.execute(
                update(certificates)
                .where(
                    certificates.c.device_id == device.device_id,
                    certificates.c.status == VALID,
                    certificates.c.serial_hex.not_in([device.certificate, new_serial]),
                )
                .values(status=REVOKED, revoked_at=now, revocation_reason="superseded")
            ).rowcount
            if superseded:
                invalidate_crl(conn)
            changed = conn.execute(
                update(devices)
                .where(devices.c.id == device.device_id, devices.c.status == "active")
                .values(current_cert=new_serial, retire_pending=True)
            ).rowcount
            if changed != 1:
                raise PolicyError(f"device {device.serial!r} is revoked")
            new_key = checked.public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            append_audit(
                conn,
                actor=f"device:{device.serial}",
                action="cert.issue",
                target=device.serial,
                outcome="ok",
                now=now,
                details={
                    "certificate": new_serial,
                    "replaces": device.certificate,
                    "via": "est.simplereenroll",
                    "key": fingerprint(new_key)[:16],
                },
            )
        return Issued(cert, device.serial)

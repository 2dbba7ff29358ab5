"""Revocation data: signed CRLs (RFC 5280) and OCSP responses (RFC 6960)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp

from garrison.pki.authority import Authority, signature_hash

CRL_VALIDITY = dt.timedelta(days=7)
OCSP_VALIDITY = dt.timedelta(hours=12)
MAX_OCSP_REQUEST_BYTES = 8 * 1024


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as the CRL and OCSP report it."""

    serial_number: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


@dataclass(frozen=True)
class CertStatus:
    """What the fleet knows about one certificate serial: ``None`` means never issued here."""

    revoked: RevokedEntry | None


StatusLookup = Callable[[int], CertStatus | None]


def build_crl(
    ca: Authority,
    revoked: Iterable[RevokedEntry],
    crl_number: int,
    now: dt.datetime,
    validity: dt.timedelta = CRL_VALIDITY,
) -> x509.CertificateRevocationList:
    """A complete CRL signed by ``ca`` listing every entry of ``revoked``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(crl_number), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    for entry in revoked:
        revoked_cert = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason != x509.ReasonFlags.unspecified:
            revoked_cert = revoked_cert.add_extension(x509.CRLReason(entry.reason), False)
        builder = builder.add_revoked_certificate(revoked_cert.build())
    return builder.sign(ca.key, signature_hash(ca.key))


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def answer_ocsp(ca: Authority, request_der: bytes, lookup: StatusLookup, now: dt.datetime) -> bytes:
    """The DER OCSP response to ``request_der``, signed by ``ca`` itself.

    Malformed requests get the RFC 6960 ``malformedRequest`` status; a request about another
    issuer gets ``unauthorized``; a serial this CA never issued is reported ``unknown``.
    """
    if len(request_der) > MAX_OCSP_REQUEST_BYTES:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        algorithm = request.hash_algorithm
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
    except (ValueError, NotImplementedError, UnsupportedAlgorithm):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if not isinstance(algorithm, hashes.SHA1 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if (name_hash, key_hash) != issuer_hashes(ca.certificate, algorithm):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)

    status = lookup(serial)
    if status is None:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
    elif status.revoked is None:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
    else:
        cert_status = ocsp.OCSPCertStatus.REVOKED
        revoked_at = status.revoked.revoked_at
        reason = status.revoked.reason
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=algorithm,
            cert_status=cert_status,
            this_update=now,
            next_update=now + OCSP_VALIDITY,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
        .certificates([ca.certificate])
    )
    for ext in request.extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            builder = builder.add_extension(ext.value, critical=False)
    response = builder.sign(ca.key, signature_hash(ca.key))
    return response.public_bytes(serialization.Encoding.DER)


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """The (issuerNameHash, issuerKeyHash) an OCSP CertID carries for ``issuer``."""
    name_hash = hashes.Hash(algorithm)
    name_hash.update(issuer.subject.public_bytes())
    public_key = issuer.public_key()
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        key_bytes = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        key_bytes = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    else:
        raise TypeError(f"unsupported issuer key type {type(public_key).__name__}")
    key_hash = hashes.Hash(algorithm)
    key_hash.update(key_bytes)
    return name_hash.finalize(), key_hash.finalize()

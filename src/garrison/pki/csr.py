"""Checking a PKCS#10 certificate request as EST delivers it (RFC 7030 section 4.2.1).

The CSR proves possession of the key (its signature) and proposes a public key; the server
decides everything else. A CSR that *asks* for more than a device may have (a CA
certificate, another device's name) is refused rather than silently trimmed, so that the
attempt is visible in the audit log.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from garrison.errors import InvalidRequest, PolicyError

MAX_CSR_BYTES = 16 * 1024
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class CheckedCsr:
    """A CSR whose signature and key type have been verified."""

    csr: x509.CertificateSigningRequest
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def decode_est_body(body: bytes, max_bytes: int = MAX_CSR_BYTES) -> bytes:
    """The DER bytes inside an EST base64 body (line breaks allowed, nothing else)."""
    if len(body) > max_bytes:
        raise InvalidRequest(f"request body too large ({len(body)} bytes, limit {max_bytes})")
    compact = b"".join(body.split())
    if not compact:
        raise InvalidRequest("empty request body: expected a base64-encoded PKCS#10 request")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("request body is not valid base64 (RFC 7030 section 4.2.1)") from exc


def check_csr(der: bytes) -> CheckedCsr:
    """Parse ``der`` as PKCS#10 and verify proof of possession and the key type."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise InvalidRequest("body is not a DER-encoded PKCS#10 certificate request") from exc
    if not csr.is_signature_valid:
        raise InvalidRequest("CSR signature does not verify with its own public key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise PolicyError(f"CSR key curve {key.curve.name} is not allowed (use P-256 or P-384)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise PolicyError(
            f"CSR key type {type(key).__name__} is not allowed (use ECDSA P-256/P-384 or Ed25519)"
        )
    try:
        extensions = list(csr.extensions)
    except ValueError as exc:
        raise InvalidRequest("CSR carries malformed extension requests") from exc
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise PolicyError("CSR asks for a CA certificate (basicConstraints CA:TRUE)")
    return CheckedCsr(csr, key)


def names_in_csr(csr: x509.CertificateSigningRequest) -> set[str]:
    """Every identity the CSR proposes: subject CN and serialNumber, and every SAN entry
    (DNS, URI, IP, e-mail, directory name...). Other subject attributes (O, OU, C) name no
    identity; stock clients often send them, and the issued subject never copies them."""
    names: set[str] = set()
    for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER):
        names.update(str(attr.value) for attr in csr.subject.get_attributes_for_oid(oid))
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    names.update(str(getattr(general_name, "value", general_name)) for general_name in san)
    return names


def require_identity(checked: CheckedCsr, serial: str, uri: str) -> None:
    """Refuse a CSR that names any identity other than the device's ``serial`` (or ``uri``)."""
    foreign = names_in_csr(checked.csr) - {serial, uri}
    if foreign:
        raise PolicyError(
            f"CSR names {sorted(foreign)!r}, but this request is authorized for device {serial!r}"
        )

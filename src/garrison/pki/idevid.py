"""Manufacturer bootstrap identities (IDevID, IEEE 802.1AR): a certificate the device got
at the factory from its manufacturer's CA, naming its serial in the subject's
``serialNumber``. A batch that registers that CA lets such devices enroll without tokens.

Pure: certificates and the time in, the device serial out, or :class:`PolicyError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from garrison.errors import InvalidRequest, PolicyError

MAX_CA_BYTES = 16 * 1024


def load_manufacturer_ca(pem: str) -> x509.Certificate:
    """A manufacturer CA certificate from PEM; it must be a CA allowed to sign certificates."""
    if len(pem) > MAX_CA_BYTES:
        raise InvalidRequest(f"IDevID CA certificate too large (limit {MAX_CA_BYTES} bytes)")
    try:
        ca = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidRequest("idevid_ca is not a PEM certificate") from exc
    try:
        extensions = {type(ext.value): ext.value for ext in ca.extensions}
    except ValueError as exc:
        raise InvalidRequest("idevid_ca has malformed extensions") from exc
    constraints = extensions.get(x509.BasicConstraints)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise InvalidRequest("idevid_ca is not a CA certificate (needs basicConstraints CA:TRUE)")
    usage = extensions.get(x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.key_cert_sign:
        raise InvalidRequest("idevid_ca is not a CA certificate (needs keyUsage keyCertSign)")
    if x509.SubjectKeyIdentifier not in extensions:
        raise InvalidRequest(
            "idevid_ca lacks a subjectKeyIdentifier",
            hint="TLS verifies client certificates strictly (RFC 5280): the CA needs an SKI "
            "and its IDevIDs an authorityKeyIdentifier",
        )
    return ca


def issuer_key(name: x509.Name) -> str:
    """How batches index a manufacturer CA: the SHA-256 of its subject's DER."""
    return hashlib.sha256(name.public_bytes()).hexdigest()


def ca_der(ca: x509.Certificate) -> bytes:
    return ca.public_bytes(serialization.Encoding.DER)


def idevid_serial(cert: x509.Certificate) -> str:
    """The device serial an IDevID names (subject ``serialNumber``)."""
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(values) != 1:
        raise PolicyError("the IDevID certificate must name exactly one subject serialNumber")
    return str(values[0].value)


def verify_idevid(cert: x509.Certificate, ca: x509.Certificate, now: dt.datetime) -> None:
    """Check that ``ca`` issued ``cert``, an end-entity certificate valid at ``now``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise PolicyError(
            "IDevID certificate was not issued by the registered manufacturer CA"
        ) from exc
    except InvalidSignature as exc:
        raise PolicyError("IDevID certificate signature does not verify") from exc
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise PolicyError("IDevID certificate is outside its validity period")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise PolicyError("an IDevID must be an end-entity certificate, not a CA")
    except x509.ExtensionNotFound:
        pass

"""Creating the fleet's certificate authorities and the control plane's TLS certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from garrison.keys import SigningKey

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ROOT_LIFETIME = dt.timedelta(days=25 * 365)
ISSUING_LIFETIME = dt.timedelta(days=10 * 365)
SERVER_LIFETIME = dt.timedelta(days=397)
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Authority:
    """A CA certificate with the key that signs for it."""

    certificate: x509.Certificate
    key: SigningKey


def new_serial() -> int:
    """A random positive serial number of 159 bits (RFC 5280: at most 20 octets)."""
    return secrets.randbits(159) | (1 << 64)


def signature_hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash to sign with for ``key``: none for Ed25519, SHA-384 for P-384, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """digitalSignature for every certificate; keyCertSign and cRLSign for CAs only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, subject_key: PublicKey, path_length: int | None
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(
            key_usage(ca=True),
            True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), False)
    )


def create_root_ca(
    key: SigningKey, organization: str, now: dt.datetime, lifetime: dt.timedelta = ROOT_LIFETIME
) -> Authority:
    """A self-signed root CA for the fleet ``organization``."""
    name = _name(f"{organization} Root CA", organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
    )
    builder = _ca_extensions(builder, key.public_key(), path_length=1)
    return Authority(builder.sign(key, signature_hash(key)), key)


def create_issuing_ca(
    root: Authority,
    key: SigningKey,
    organization: str,
    now: dt.datetime,
    lifetime: dt.timedelta = ISSUING_LIFETIME,
    generation: int = 1,
) -> Authority:
    """An intermediate CA under ``root`` that signs device certificates, CRLs and OCSP."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{organization} Device Issuing CA {generation}", organization))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, root.certificate.not_valid_after_utc))
    )
    builder = _ca_extensions(builder, key.public_key(), path_length=0).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), False
    )
    return Authority(builder.sign(root.key, signature_hash(root.key)), key)


def issue_server_certificate(
    ca: Authority,
    public_key: PublicKey,
    hostnames: list[str],
    now: dt.datetime,
    lifetime: dt.timedelta = SERVER_LIFETIME,
) -> x509.Certificate:
    """The control plane's TLS server certificate for ``hostnames`` (DNS names or IPs)."""
    alt_names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    organization = ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0], str(organization[0].value)))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectAlternativeName(alt_names), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            key_usage(ca=False),
            True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    return builder.sign(ca.key, signature_hash(ca.key))

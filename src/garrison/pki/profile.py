"""The device certificate profile: what the server puts into every device certificate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from garrison.pki.authority import (
    BACKDATE,
    Authority,
    PublicKey,
    key_usage,
    new_serial,
    signature_hash,
)

DEVICE_URI_PREFIX = "urn:garrison:device:"


@dataclass(frozen=True)
class DeviceProfile:
    """Server-side settings for device certificates."""

    lifetime: dt.timedelta
    crl_url: str
    ocsp_url: str


def device_uri(serial: str) -> str:
    """The URI naming a device in its certificate's subjectAltName."""
    return DEVICE_URI_PREFIX + serial


def issue_device_certificate(
    ca: Authority,
    public_key: PublicKey,
    device_serial: str,
    profile: DeviceProfile,
    now: dt.datetime,
) -> x509.Certificate:
    """An end-entity client certificate binding ``public_key`` to ``device_serial``."""
    organization = ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(organization[0].value)),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, device_serial),
            x509.NameAttribute(NameOID.COMMON_NAME, device_serial),
        ]
    )
    not_after = min(now + profile.lifetime, ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            key_usage(ca=False),
            True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(device_uri(device_serial))]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(profile.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(profile.ocsp_url),
                    )
                ]
            ),
            False,
        )
    )
    return builder.sign(ca.key, signature_hash(ca.key))

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


@dataclass(frozen=True)
class _FixedParts:
    """What every device certificate of one CA and profile shares."""

    organization: str
    issuer: x509.Name
    ca_not_after: dt.datetime
    basic_constraints: x509.BasicConstraints
    key_usage: x509.KeyUsage
    eku: x509.ExtendedKeyUsage
    aki: x509.AuthorityKeyIdentifier
    crl_dp: x509.CRLDistributionPoints
    aia: x509.AuthorityInformationAccess


def _fixed_parts(ca: Authority, profile: DeviceProfile) -> _FixedParts:
    organization = ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return _FixedParts(
        organization=str(organization[0].value),
        issuer=ca.certificate.subject,
        ca_not_after=ca.certificate.not_valid_after_utc,
        basic_constraints=x509.BasicConstraints(ca=False, path_length=None),
        key_usage=key_usage(ca=False),
        eku=x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
        aki=x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
        crl_dp=x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(profile.crl_url)],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        aia=x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(profile.ocsp_url),
                )
            ]
        ),
    )


class DeviceIssuer:
    """Issues device certificates for one CA and profile. The parts every certificate
    shares are built once (rebuilding them cost as much as the signature)."""

    def __init__(self, ca: Authority, profile: DeviceProfile) -> None:
        self._ca = ca
        self._profile = profile
        self._fixed = _fixed_parts(ca, profile)

    def issue(
        self, public_key: PublicKey, device_serial: str, now: dt.datetime
    ) -> x509.Certificate:
        """An end-entity client certificate binding ``public_key`` to ``device_serial``."""
        fixed, ca = self._fixed, self._ca
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, fixed.organization),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, device_serial),
                x509.NameAttribute(NameOID.COMMON_NAME, device_serial),
            ]
        )
        not_after = min(now + self._profile.lifetime, fixed.ca_not_after)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(fixed.issuer)
            .public_key(public_key)
            .serial_number(new_serial())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(fixed.basic_constraints, True)
            .add_extension(fixed.key_usage, True)
            .add_extension(fixed.eku, False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(device_uri(device_serial))]
                ),
                False,
            )
            .add_extension(fixed.aki, False)
            .add_extension(fixed.crl_dp, False)
            .add_extension(fixed.aia, False)
        )
        return builder.sign(ca.key, signature_hash(ca.key))


def issue_device_certificate(
    ca: Authority,
    public_key: PublicKey,
    device_serial: str,
    profile: DeviceProfile,
    now: dt.datetime,
) -> x509.Certificate:
    """An end-entity client certificate binding ``public_key`` to ``device_serial`` (for
    many, build one :class:`DeviceIssuer` and reuse it)."""
    return DeviceIssuer(ca, profile).issue(public_key, device_serial, now)

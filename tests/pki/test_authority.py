"""The fleet CAs, the control plane's TLS certificate and the device certificate profile."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from garrison.agent.identity import verify_issued
from garrison.errors import ConfigError, GarrisonError
from garrison.keys import SigningKey, generate_software_key
from garrison.pki.authority import (
    BACKDATE,
    ISSUING_LIFETIME,
    ROOT_LIFETIME,
    SERVER_LIFETIME,
    Authority,
    create_issuing_ca,
    create_root_ca,
    issue_server_certificate,
    new_serial,
    signature_hash,
)
from garrison.pki.profile import (
    DEVICE_URI_PREFIX,
    DeviceProfile,
    device_uri,
    issue_device_certificate,
)
from garrison.settings import Settings

E = TypeVar("E", bound=x509.ExtensionType)

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
ORG = "Acme Turbines"
PROFILE = DeviceProfile(
    lifetime=dt.timedelta(days=90),
    crl_url="https://fleet.example/pki/crl",
    ocsp_url="https://fleet.example/pki/ocsp",
)

KEY_USAGE_CA = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
KEY_USAGE_SIGN_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _fleet(algorithm: str = "ecdsa-p256", now: dt.datetime = NOW) -> tuple[Authority, Authority]:
    root = create_root_ca(generate_software_key(algorithm), ORG, now)
    issuing = create_issuing_ca(root, generate_software_key(algorithm), ORG, now)
    return root, issuing


def _wall_clock() -> dt.datetime:
    """The real time: agent.identity.verify_issued checks validity against the system clock."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def fleet() -> tuple[Authority, Authority]:
    return _fleet()


@pytest.fixture(scope="module")
def root(fleet: tuple[Authority, Authority]) -> Authority:
    return fleet[0]


@pytest.fixture(scope="module")
def issuing(fleet: tuple[Authority, Authority]) -> Authority:
    return fleet[1]


def _device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def _client_verify(
    root: x509.Certificate,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    at: dt.datetime,
) -> x509.verification.VerifiedClient:
    verifier = PolicyBuilder().store(Store([root])).time(at).build_client_verifier()
    return verifier.verify(leaf, intermediates)


# -- root CA -----------------------------------------------------------------------------------


def test_root_is_self_signed(root: Authority) -> None:
    cert = root.certificate
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{ORG} Root CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORG


def test_root_constraints_and_key_usage(root: Authority) -> None:
    cert = root.certificate
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=1)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == KEY_USAGE_CA
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key())


def test_root_validity(root: Authority) -> None:
    assert root.certificate.not_valid_before_utc == NOW - BACKDATE
    assert root.certificate.not_valid_after_utc == NOW + ROOT_LIFETIME
    assert root.certificate.public_key() == root.key.public_key()


# -- issuing CA --------------------------------------------------------------------------------


def test_issuing_is_signed_by_root(root: Authority, issuing: Authority) -> None:
    cert = issuing.certificate
    assert cert.issuer == root.certificate.subject
    assert cert.issuer != cert.subject
    cert.verify_directly_issued_by(root.certificate)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(root.certificate, x509.SubjectKeyIdentifier).value.digest
    assert cert.public_key() == issuing.key.public_key()


def test_issuing_constraints(issuing: Authority) -> None:
    cert = issuing.certificate
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == KEY_USAGE_CA
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"{ORG} Device Issuing CA 1"


def test_issuing_generation_in_name(root: Authority) -> None:
    second = create_issuing_ca(root, generate_software_key(), ORG, NOW, generation=2)
    cn = second.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"{ORG} Device Issuing CA 2"


def test_issuing_default_lifetime(root: Authority, issuing: Authority) -> None:
    assert issuing.certificate.not_valid_before_utc == NOW - BACKDATE
    assert issuing.certificate.not_valid_after_utc == NOW + ISSUING_LIFETIME
    assert issuing.certificate.not_valid_after_utc < root.certificate.not_valid_after_utc


def test_issuing_never_outlives_root() -> None:
    short_root = create_root_ca(generate_software_key(), ORG, NOW, lifetime=dt.timedelta(days=365))
    issuing = create_issuing_ca(short_root, generate_software_key(), ORG, NOW)
    assert issuing.certificate.not_valid_after_utc == short_root.certificate.not_valid_after_utc
    # Also when the root was created long ago and is close to its own end.
    later = NOW + dt.timedelta(days=300)
    late = create_issuing_ca(short_root, generate_software_key(), ORG, later)
    assert late.certificate.not_valid_after_utc == short_root.certificate.not_valid_after_utc


# -- control plane TLS certificate -------------------------------------------------------------


def test_server_certificate(root: Authority, issuing: Authority) -> None:
    key = _device_key()
    hosts = ["fleet.example", "localhost", "127.0.0.1", "::1"]
    cert = issue_server_certificate(issuing, key.public_key(), hosts, NOW)
    cert.verify_directly_issued_by(issuing.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fleet.example"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORG
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fleet.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert _ext(cert, x509.KeyUsage).value == KEY_USAGE_SIGN_ONLY
    assert cert.not_valid_after_utc == NOW + SERVER_LIFETIME

    for name in (x509.DNSName("fleet.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = (
            PolicyBuilder().store(Store([root.certificate])).time(NOW).build_server_verifier(name)
        )
        chain = verifier.verify(cert, [issuing.certificate])
        assert chain == [cert, issuing.certificate, root.certificate]


def test_server_certificate_bounded_by_ca() -> None:
    root = create_root_ca(generate_software_key(), ORG, NOW)
    issuing = create_issuing_ca(
        root, generate_software_key(), ORG, NOW, lifetime=dt.timedelta(days=30)
    )
    cert = issue_server_certificate(issuing, _device_key().public_key(), ["localhost"], NOW)
    assert cert.not_valid_after_utc == issuing.certificate.not_valid_after_utc


# -- device certificates -----------------------------------------------------------------------


def test_device_certificate_profile(issuing: Authority) -> None:
    key = _device_key()
    cert = issue_device_certificate(issuing, key.public_key(), "SN-0042", PROFILE, NOW)
    cert.verify_directly_issued_by(issuing.certificate)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == issuing.certificate.subject

    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=False, path_length=None)

    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == KEY_USAGE_SIGN_ONLY

    san = _ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:garrison:device:SN-0042")]

    subject = cert.subject
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["SN-0042"]
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)] == ["SN-0042"]
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [ORG]

    crl_dp = _ext(cert, x509.CRLDistributionPoints).value
    assert [list(dp.full_name or []) for dp in crl_dp] == [
        [x509.UniformResourceIdentifier(PROFILE.crl_url)]
    ]
    aia = _ext(cert, x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(PROFILE.ocsp_url))
    ]
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(issuing.certificate, x509.SubjectKeyIdentifier).value.digest


def test_device_uri() -> None:
    assert DEVICE_URI_PREFIX == "urn:garrison:device:"
    assert device_uri("SN-1") == "urn:garrison:device:SN-1"


def test_device_lifetime_from_profile(issuing: Authority) -> None:
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-1", PROFILE, NOW)
    assert cert.not_valid_before_utc == NOW - BACKDATE
    assert cert.not_valid_after_utc == NOW + PROFILE.lifetime


def test_device_lifetime_bounded_by_ca() -> None:
    root = create_root_ca(generate_software_key(), ORG, NOW)
    issuing = create_issuing_ca(
        root, generate_software_key(), ORG, NOW, lifetime=dt.timedelta(days=30)
    )
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-1", PROFILE, NOW)
    assert cert.not_valid_after_utc == issuing.certificate.not_valid_after_utc
    assert cert.not_valid_after_utc < NOW + PROFILE.lifetime


def test_device_chain_verifies(root: Authority, issuing: Authority) -> None:
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-7", PROFILE, NOW)
    verified = _client_verify(root.certificate, cert, [issuing.certificate], NOW)
    assert verified.chain == [cert, issuing.certificate, root.certificate]
    assert verified.subjects == [x509.UniformResourceIdentifier("urn:garrison:device:SN-7")]


def test_device_chain_refused_after_expiry(root: Authority, issuing: Authority) -> None:
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-7", PROFILE, NOW)
    too_late = NOW + PROFILE.lifetime + dt.timedelta(seconds=1)
    _client_verify(root.certificate, cert, [issuing.certificate], NOW + PROFILE.lifetime)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        _client_verify(root.certificate, cert, [issuing.certificate], too_late)


def test_device_chain_refused_under_another_fleet(issuing: Authority) -> None:
    other_root, _ = _fleet()
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-7", PROFILE, NOW)
    with pytest.raises(VerificationError):
        _client_verify(other_root.certificate, cert, [issuing.certificate], NOW)


def test_device_certificate_is_no_server_certificate(root: Authority, issuing: Authority) -> None:
    cert = issue_device_certificate(issuing, _device_key().public_key(), "SN-7", PROFILE, NOW)
    verifier = (
        PolicyBuilder()
        .store(Store([root.certificate]))
        .time(NOW)
        .build_server_verifier(x509.DNSName("SN-7"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(cert, [issuing.certificate])


# -- serial numbers ----------------------------------------------------------------------------


def _serial_fits(serial: int) -> bool:
    """Positive and at most 20 octets in DER (including a leading zero octet, if needed)."""
    return serial > 0 and serial.bit_length() // 8 + 1 <= 20


def test_new_serial_shape() -> None:
    serials = [new_serial() for _ in range(1000)]
    assert all(_serial_fits(s) for s in serials)
    assert all(s.bit_length() > 64 for s in serials)
    assert len(set(serials)) == 1000


def test_certificate_serials_distinct_over_1000_issues(issuing: Authority) -> None:
    public_key = _device_key().public_key()
    serials = {
        issue_device_certificate(issuing, public_key, f"SN-{i}", PROFILE, NOW).serial_number
        for i in range(1000)
    }
    assert len(serials) == 1000
    assert all(_serial_fits(s) for s in serials)


def test_ca_serials_positive(root: Authority, issuing: Authority) -> None:
    assert _serial_fits(root.certificate.serial_number)
    assert _serial_fits(issuing.certificate.serial_number)
    assert root.certificate.serial_number != issuing.certificate.serial_number


# -- key algorithms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [("ecdsa-p256", hashes.SHA256), ("ecdsa-p384", hashes.SHA384), ("ed25519", None)],
)
def test_signature_hash(algorithm: str, expected: type[hashes.HashAlgorithm] | None) -> None:
    chosen = signature_hash(generate_software_key(algorithm))
    if expected is None:
        assert chosen is None
    else:
        assert type(chosen) is expected


@pytest.mark.parametrize(
    ("algorithm", "hash_name"),
    [("ecdsa-p256", "sha256"), ("ecdsa-p384", "sha384"), ("ed25519", None)],
)
def test_every_ca_algorithm_signs_a_whole_chain(algorithm: str, hash_name: str | None) -> None:
    root, issuing = _fleet(algorithm)
    leaf = issue_device_certificate(issuing, _device_key().public_key(), "SN-1", PROFILE, NOW)
    server = issue_server_certificate(issuing, _device_key().public_key(), ["localhost"], NOW)
    root.certificate.verify_directly_issued_by(root.certificate)
    issuing.certificate.verify_directly_issued_by(root.certificate)
    leaf.verify_directly_issued_by(issuing.certificate)
    server.verify_directly_issued_by(issuing.certificate)
    for cert in (root.certificate, issuing.certificate, leaf, server):
        used = cert.signature_hash_algorithm
        assert (used.name if used else None) == hash_name


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384"])
def test_ecdsa_chains_pass_the_client_verifier(algorithm: str) -> None:
    now = _wall_clock()
    root, issuing = _fleet(algorithm, now)
    key = _device_key()
    leaf = issue_device_certificate(issuing, key.public_key(), "SN-1", PROFILE, now)
    verified = _client_verify(root.certificate, leaf, [issuing.certificate], now)
    assert verified.chain[-1] == root.certificate
    verify_issued(leaf, [issuing.certificate], root.certificate, key)


def test_mixed_algorithms_chain() -> None:
    root = create_root_ca(generate_software_key("ecdsa-p384"), ORG, NOW)
    issuing = create_issuing_ca(root, generate_software_key("ecdsa-p256"), ORG, NOW)
    assert issuing.certificate.signature_hash_algorithm is not None
    assert issuing.certificate.signature_hash_algorithm.name == "sha384"
    leaf_key: SigningKey = generate_software_key("ed25519")
    leaf = issue_device_certificate(issuing, leaf_key.public_key(), "SN-1", PROFILE, NOW)
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha256"
    _client_verify(root.certificate, leaf, [issuing.certificate], NOW)


def test_ed25519_fleet_cas_are_refused_until_chains_verify() -> None:
    """Stock web-PKI verifiers (the agent's included) refuse Ed25519 signatures, so a fleet
    whose CAs use Ed25519 could never enroll a device: Settings refuses it up front."""
    now = _wall_clock()
    root, issuing = _fleet("ed25519", now)
    key = _device_key()
    leaf = issue_device_certificate(issuing, key.public_key(), "SN-1", PROFILE, now)
    with pytest.raises(GarrisonError, match="does not chain"):
        verify_issued(leaf, [issuing.certificate], root.certificate, key)
    with pytest.raises(ConfigError, match="key_algorithm"):
        Settings(key_algorithm="ed25519").validate()

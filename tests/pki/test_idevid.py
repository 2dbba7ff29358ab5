"""The pure IDevID checks: what a manufacturer CA must be, and what an IDevID must be."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from garrison.errors import InvalidRequest, PolicyError
from garrison.pki.authority import key_usage
from garrison.pki.idevid import (
    MAX_CA_BYTES,
    idevid_serial,
    issuer_key,
    load_manufacturer_ca,
    verify_idevid,
)

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool | None,
    ski: bool = True,
    usage: bool = True,
    days: int = 365,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if usage:
        builder = builder.add_extension(key_usage(ca=bool(ca)), True)
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    return builder.sign(signer, hashes.SHA256())


def _name(**attrs: str) -> x509.Name:
    oids = {"cn": NameOID.COMMON_NAME, "sn": NameOID.SERIAL_NUMBER}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = _cert(_name(cn="Maker CA"), _name(cn="Maker CA"), CA_KEY, CA_KEY, ca=True)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_proper_ca_loads() -> None:
    assert load_manufacturer_ca(_pem(CA)) == CA
    assert issuer_key(CA.subject) == issuer_key(_name(cn="Maker CA"))


@pytest.mark.parametrize(
    ("cert_or_text", "fragment"),
    [
        (_cert(_name(cn="L"), _name(cn="Maker CA"), CA_KEY, CA_KEY, ca=False), "CA:TRUE"),
        (_cert(_name(cn="L"), _name(cn="Maker CA"), CA_KEY, CA_KEY, ca=None), "CA:TRUE"),
        (_cert(_name(cn="C"), _name(cn="C"), CA_KEY, CA_KEY, ca=True, usage=False), "keyCertSign"),
        (
            _cert(_name(cn="C"), _name(cn="C"), CA_KEY, CA_KEY, ca=True, ski=False),
            "subjectKeyIdentifier",
        ),
        ("not a certificate", "not a PEM certificate"),
        ("é" * 10, "not a PEM certificate"),
        ("x" * (MAX_CA_BYTES + 1), "too large"),
    ],
)
def test_bad_manufacturer_cas_are_refused(cert_or_text: object, fragment: str) -> None:
    text = cert_or_text if isinstance(cert_or_text, str) else _pem(cert_or_text)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=fragment):
        load_manufacturer_ca(text)


def _idevid(
    serials: list[str], signer: ec.EllipticCurvePrivateKey = CA_KEY, **kw: object
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, s) for s in serials])
    key = ec.generate_private_key(ec.SECP256R1())
    return _cert(
        subject, CA.subject, key, signer, ca=kw.get("ca", False), days=int(kw.get("days", 365))
    )  # type: ignore[arg-type]


def test_a_good_idevid_names_its_serial() -> None:
    cert = _idevid(["SN-42"])
    verify_idevid(cert, CA, NOW)
    assert idevid_serial(cert) == "SN-42"


@pytest.mark.parametrize("serials", [[], ["A", "B"]])
def test_idevid_must_name_exactly_one_serial(serials: list[str]) -> None:
    with pytest.raises(PolicyError, match="exactly one subject serialNumber"):
        idevid_serial(_idevid(serials))


def test_idevid_from_another_key_is_refused() -> None:
    with pytest.raises(PolicyError, match="signature does not verify"):
        verify_idevid(_idevid(["SN-1"], signer=ec.generate_private_key(ec.SECP256R1())), CA, NOW)


def test_idevid_of_another_issuer_is_refused() -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(_name(cn="Other CA"), _name(cn="Other CA"), other_key, other_key, ca=True)
    with pytest.raises(PolicyError, match="not issued by the registered manufacturer CA"):
        verify_idevid(_idevid(["SN-1"]), other, NOW)


def test_idevid_outside_its_validity_is_refused() -> None:
    with pytest.raises(PolicyError, match="validity"):
        verify_idevid(_idevid(["SN-1"], days=1), CA, NOW + dt.timedelta(days=2))


def test_a_ca_is_no_idevid() -> None:
    with pytest.raises(PolicyError, match="end-entity"):
        verify_idevid(_idevid(["SN-1"], ca=True), CA, NOW)

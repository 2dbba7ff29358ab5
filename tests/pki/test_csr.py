"""EST request bodies and PKCS#10 checks: decoding, proof of possession, key types, names."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from garrison.errors import InvalidRequest, PolicyError
from garrison.pki.csr import (
    MAX_CSR_BYTES,
    CheckedCsr,
    check_csr,
    decode_est_body,
    names_in_csr,
    require_identity,
)
from garrison.pki.profile import device_uri

CsrKey = (
    ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | rsa.RSAPrivateKey
)

SERIAL = "SN-0042"
URI = device_uri(SERIAL)


def _csr(
    key: CsrKey | None = None,
    *,
    cn: str | None = SERIAL,
    serial_number: str | None = None,
    dns: list[str] | None = None,
    uris: list[str] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> bytes:
    """A signed DER CSR with the given subject attributes and requested extensions."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = []
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
    alt_names += [x509.UniformResourceIdentifier(u) for u in uris or []]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), False)
    for value, critical in extensions or []:
        builder = builder.add_extension(value, critical)
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def _checked(**kwargs: object) -> CheckedCsr:
    return check_csr(_csr(**kwargs))  # type: ignore[arg-type]


# -- decode_est_body ---------------------------------------------------------------------------


def test_decode_plain_base64() -> None:
    der = _csr()
    assert decode_est_body(base64.b64encode(der)) == der


@pytest.mark.parametrize("separator", [b"\n", b"\r\n"])
def test_decode_base64_with_line_breaks(separator: bytes) -> None:
    der = _csr()
    encoded = base64.b64encode(der)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    body = separator.join(lines) + separator
    assert len(lines) > 1
    assert decode_est_body(body) == der
    assert decode_est_body(base64.encodebytes(der)) == der


@pytest.mark.parametrize(
    "body",
    [
        b"MIIB!!!!",
        b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        b"MIIBAAAA\x00",
        b"MII",  # bad padding
        "MIIBäöü".encode(),
    ],
)
def test_decode_refuses_non_base64(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not valid base64") as info:
        decode_est_body(body)
    assert info.type is InvalidRequest


@pytest.mark.parametrize("body", [b"", b"\n", b"\r\n \t\r\n"])
def test_decode_refuses_empty(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="empty request body"):
        decode_est_body(body)


def test_decode_size_limit_boundary() -> None:
    assert MAX_CSR_BYTES == 16 * 1024
    at_limit = base64.b64encode(b"\x01" * (MAX_CSR_BYTES // 4 * 3))
    assert len(at_limit) == MAX_CSR_BYTES
    assert decode_est_body(at_limit) == b"\x01" * (MAX_CSR_BYTES // 4 * 3)

    over = at_limit + b"\n"
    assert len(over) == MAX_CSR_BYTES + 1
    with pytest.raises(
        InvalidRequest,
        match=rf"request body too large \({MAX_CSR_BYTES + 1} bytes, limit {MAX_CSR_BYTES}\)",
    ):
        decode_est_body(over)


def test_decode_custom_limit() -> None:
    assert decode_est_body(b"AAAA", max_bytes=4) == b"\x00\x00\x00"
    with pytest.raises(InvalidRequest, match="limit 3"):
        decode_est_body(b"AAAA", max_bytes=3)


# -- check_csr: parsing and proof of possession ------------------------------------------------


@pytest.mark.parametrize(
    "der",
    [b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30\x82\xff\xff" + b"\x00" * 16],
)
def test_check_refuses_garbage(der: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not a DER-encoded PKCS#10") as info:
        check_csr(der)
    assert info.type is InvalidRequest


def test_check_refuses_a_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_der_x509_csr(_csr(key))
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(csr.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(InvalidRequest, match="not a DER-encoded PKCS#10"):
        check_csr(cert.public_bytes(serialization.Encoding.DER))


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()],
    ids=["p256", "ed25519"],
)
def test_check_refuses_bad_signature(key: CsrKey) -> None:
    der = bytearray(_csr(key))
    signature = x509.load_der_x509_csr(bytes(der)).signature
    assert bytes(der).endswith(signature)
    der[-1] ^= 0x01  # last octet of the signature (for ECDSA: inside INTEGER s)
    with pytest.raises(InvalidRequest, match="signature does not verify") as info:
        check_csr(bytes(der))
    assert info.type is InvalidRequest


def test_check_refuses_tampered_subject() -> None:
    der = _csr(cn="SN-AAAA")
    tampered = der.replace(b"SN-AAAA", b"SN-BBBB")
    assert tampered != der
    with pytest.raises(InvalidRequest, match="signature does not verify"):
        check_csr(tampered)


# -- check_csr: key types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p256", "p384", "ed25519"],
)
def test_check_accepts_allowed_keys(key: CsrKey) -> None:
    checked = check_csr(_csr(key))
    assert isinstance(checked, CheckedCsr)
    assert checked.public_key == key.public_key()
    assert checked.csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SERIAL


@pytest.mark.parametrize(
    ("curve", "name"),
    [(ec.SECP256K1(), "secp256k1"), (ec.SECP521R1(), "secp521r1")],
)
def test_check_refuses_other_curves(curve: ec.EllipticCurve, name: str) -> None:
    with pytest.raises(PolicyError, match=f"CSR key curve {name} is not allowed") as info:
        check_csr(_csr(ec.generate_private_key(curve)))
    assert info.type is PolicyError


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_check_refuses_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(PolicyError, match="CSR key type RSAPublicKey is not allowed") as info:
        check_csr(_csr(rsa_key))
    assert info.type is PolicyError


def test_check_refuses_ed448() -> None:
    with pytest.raises(PolicyError, match="CSR key type Ed448PublicKey is not allowed"):
        check_csr(_csr(ed448.Ed448PrivateKey.generate()))


# -- check_csr: requested extensions -----------------------------------------------------------


@pytest.mark.parametrize("path_length", [None, 0])
@pytest.mark.parametrize("critical", [True, False])
def test_check_refuses_ca_true(path_length: int | None, critical: bool) -> None:
    ca = x509.BasicConstraints(ca=True, path_length=path_length)
    with pytest.raises(PolicyError, match=r"basicConstraints CA:TRUE") as info:
        check_csr(_csr(extensions=[(ca, critical)]))
    assert info.type is PolicyError


def test_check_accepts_ca_false() -> None:
    not_ca = x509.BasicConstraints(ca=False, path_length=None)
    checked = check_csr(_csr(extensions=[(not_ca, True)]))
    assert checked.csr.extensions.get_extension_for_class(x509.BasicConstraints).value == not_ca


def test_check_refuses_malformed_extension() -> None:
    broken = x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02")
    with pytest.raises(InvalidRequest, match="malformed extension requests"):
        check_csr(_csr(extensions=[(broken, False)]))


# -- names and require_identity ----------------------------------------------------------------


def test_names_in_csr_collects_every_identity() -> None:
    checked = _checked(cn="a", serial_number="b", dns=["c.example"], uris=["urn:x:d"])
    assert names_in_csr(checked.csr) == {"a", "b", "c.example", "urn:x:d"}
    assert names_in_csr(_checked(cn=None).csr) == set()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cn": SERIAL},
        {"cn": SERIAL, "serial_number": SERIAL},
        {"cn": None, "serial_number": SERIAL},
        {"cn": SERIAL, "uris": [URI]},
        {"cn": None, "uris": [URI]},
        {"cn": None},
    ],
    ids=["cn", "cn+serialNumber", "serialNumber", "cn+urn", "urn", "no-names"],
)
def test_require_identity_accepts_own_names(kwargs: dict[str, object]) -> None:
    require_identity(_checked(**kwargs), SERIAL, URI)


@pytest.mark.parametrize(
    ("kwargs", "foreign"),
    [
        ({"cn": "SN-9999"}, "SN-9999"),
        ({"cn": SERIAL, "serial_number": "SN-9999"}, "SN-9999"),
        ({"cn": SERIAL, "dns": ["evil.example"]}, "evil.example"),
        ({"cn": SERIAL, "uris": [device_uri("SN-9999")]}, device_uri("SN-9999")),
        ({"cn": SERIAL.lower()}, SERIAL.lower()),
    ],
    ids=["cn", "serialNumber", "dns-san", "uri-san", "case"],
)
def test_require_identity_refuses_foreign_names(kwargs: dict[str, object], foreign: str) -> None:
    with pytest.raises(PolicyError) as info:
        require_identity(_checked(**kwargs), SERIAL, URI)
    assert info.type is PolicyError
    message = str(info.value)
    assert f"CSR names {[foreign]!r}" in message
    assert f"authorized for device {SERIAL!r}" in message


def test_require_identity_lists_every_foreign_name() -> None:
    checked = _checked(cn="zz", dns=["aa.example"], uris=[URI])
    with pytest.raises(PolicyError, match=r"CSR names \['aa.example', 'zz'\]"):
        require_identity(checked, SERIAL, URI)

"""CRLs and OCSP responses, built and checked with the clock passed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp

from garrison.keys import generate_software_key
from garrison.pki.authority import Authority, create_issuing_ca, create_root_ca
from garrison.pki.profile import DeviceProfile, issue_device_certificate
from garrison.pki.revocation import (
    CRL_VALIDITY,
    MAX_OCSP_REQUEST_BYTES,
    OCSP_VALIDITY,
    CertStatus,
    RevokedEntry,
    answer_ocsp,
    build_crl,
    issuer_hashes,
)

NOW = dt.datetime(2025, 6, 1, 8, 30, 0, tzinfo=dt.UTC)
PROFILE = DeviceProfile(dt.timedelta(days=90), "https://f.example/crl", "https://f.example/ocsp")
Status = ocsp.OCSPCertStatus
RespStatus = ocsp.OCSPResponseStatus


def _ca(algorithm: str = "ecdsa-p256") -> tuple[Authority, Authority]:
    root = create_root_ca(generate_software_key(algorithm), "Acme", NOW - dt.timedelta(days=30))
    issuing = create_issuing_ca(
        root, generate_software_key(algorithm), "Acme", NOW - dt.timedelta(days=30)
    )
    return root, issuing


@pytest.fixture(scope="module")
def pki() -> tuple[Authority, Authority]:
    return _ca()


@pytest.fixture(scope="module")
def ca(pki: tuple[Authority, Authority]) -> Authority:
    return pki[1]


def _leaf(ca: Authority, serial: str = "SN-1") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return issue_device_certificate(ca, key.public_key(), serial, PROFILE, NOW)


def _verify_signature(public_key: object, signature: bytes, data: bytes, algorithm: object) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        assert algorithm is None
        public_key.verify(signature, data)
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(algorithm, hashes.HashAlgorithm)
        public_key.verify(signature, data, ec.ECDSA(algorithm))


# -- CRL ---------------------------------------------------------------------------------------

REVOKED = [
    RevokedEntry(1001, NOW - dt.timedelta(days=3), x509.ReasonFlags.key_compromise),
    RevokedEntry(1002, NOW - dt.timedelta(days=2), x509.ReasonFlags.superseded),
    RevokedEntry(1003, NOW - dt.timedelta(days=1)),
]


def test_crl_lists_entries_with_reasons(ca: Authority) -> None:
    crl = build_crl(ca, REVOKED, crl_number=7, now=NOW)
    assert len(crl) == 3
    for entry in REVOKED:
        revoked = crl.get_revoked_certificate_by_serial_number(entry.serial_number)
        assert revoked is not None
        assert revoked.revocation_date_utc == entry.revoked_at
        if entry.reason == x509.ReasonFlags.unspecified:
            # RFC 5280 5.3.1: the reason code "unspecified" SHOULD be absent.
            with pytest.raises(x509.ExtensionNotFound):
                revoked.extensions.get_extension_for_class(x509.CRLReason)
        else:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason)
            assert reason.value.reason == entry.reason
    assert crl.get_revoked_certificate_by_serial_number(9999) is None


@pytest.mark.parametrize(
    "reason", [r for r in x509.ReasonFlags if r != x509.ReasonFlags.unspecified]
)
def test_crl_every_reason_round_trips(ca: Authority, reason: x509.ReasonFlags) -> None:
    crl = build_crl(ca, [RevokedEntry(42, NOW, reason)], 1, NOW)
    revoked = crl.get_revoked_certificate_by_serial_number(42)
    assert revoked is not None
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason == reason


def test_crl_metadata(ca: Authority) -> None:
    crl = build_crl(ca, REVOKED, crl_number=7, now=NOW)
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + CRL_VALIDITY
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_crl_custom_validity_and_empty(ca: Authority) -> None:
    crl = build_crl(ca, [], crl_number=1, now=NOW, validity=dt.timedelta(hours=6))
    assert len(crl) == 0
    assert crl.next_update_utc == NOW + dt.timedelta(hours=6)


def test_crl_survives_der_round_trip(ca: Authority) -> None:
    der = build_crl(ca, REVOKED, 3, NOW).public_bytes(serialization.Encoding.DER)
    crl = x509.load_der_x509_crl(der)
    assert {r.serial_number for r in crl} == {1001, 1002, 1003}
    public_key = ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public_key)


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384", "ed25519"])
def test_crl_signature_valid_under_ca_key_only(algorithm: str) -> None:
    root, issuing = _ca(algorithm)
    crl = build_crl(issuing, REVOKED, 1, NOW)
    public_key = issuing.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    assert crl.is_signature_valid(public_key)
    root_key = root.certificate.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    assert not crl.is_signature_valid(root_key)
    _verify_signature(
        public_key, crl.signature, crl.tbs_certlist_bytes, crl.signature_hash_algorithm
    )


# -- OCSP --------------------------------------------------------------------------------------


class Lookup:
    """A status table that records which serials were asked for."""

    def __init__(self, table: dict[int, CertStatus]) -> None:
        self.table = table
        self.asked: list[int] = []

    def __call__(self, serial: int) -> CertStatus | None:
        self.asked.append(serial)
        return self.table.get(serial)


def _request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _answer(
    ca: Authority, request: bytes, lookup: Callable[[int], CertStatus | None]
) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(answer_ocsp(ca, request, lookup, NOW))


def _good_lookup(cert: x509.Certificate) -> Lookup:
    return Lookup({cert.serial_number: CertStatus(revoked=None)})


def test_ocsp_good(ca: Authority) -> None:
    leaf = _leaf(ca)
    lookup = _good_lookup(leaf)
    response = _answer(ca, _request(leaf, ca.certificate), lookup)
    assert lookup.asked == [leaf.serial_number]
    assert response.response_status == RespStatus.SUCCESSFUL
    assert response.certificate_status == Status.GOOD
    assert response.serial_number == leaf.serial_number
    assert response.revocation_time_utc is None
    assert response.revocation_reason is None
    assert response.this_update_utc == NOW
    assert response.next_update_utc == NOW + OCSP_VALIDITY


@pytest.mark.parametrize(
    "reason",
    [x509.ReasonFlags.key_compromise, x509.ReasonFlags.superseded, x509.ReasonFlags.unspecified],
)
def test_ocsp_revoked_with_time_and_reason(ca: Authority, reason: x509.ReasonFlags) -> None:
    leaf = _leaf(ca)
    revoked_at = NOW - dt.timedelta(hours=5)
    entry = RevokedEntry(leaf.serial_number, revoked_at, reason)
    lookup = Lookup({leaf.serial_number: CertStatus(revoked=entry)})
    response = _answer(ca, _request(leaf, ca.certificate), lookup)
    assert response.response_status == RespStatus.SUCCESSFUL
    assert response.certificate_status == Status.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason == reason


def test_ocsp_unknown_serial(ca: Authority) -> None:
    leaf = _leaf(ca)
    lookup = Lookup({})
    response = _answer(ca, _request(leaf, ca.certificate), lookup)
    assert lookup.asked == [leaf.serial_number]
    assert response.response_status == RespStatus.SUCCESSFUL
    assert response.certificate_status == Status.UNKNOWN
    assert response.serial_number == leaf.serial_number


def test_ocsp_echoes_nonce(ca: Authority) -> None:
    leaf = _leaf(ca)
    nonce = bytes(range(32))
    response = _answer(ca, _request(leaf, ca.certificate, nonce=nonce), _good_lookup(leaf))
    echoed = response.extensions.get_extension_for_class(x509.OCSPNonce)
    assert echoed.value.nonce == nonce
    assert not echoed.critical


def test_ocsp_without_nonce_has_none(ca: Authority) -> None:
    leaf = _leaf(ca)
    response = _answer(ca, _request(leaf, ca.certificate), _good_lookup(leaf))
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384", "ed25519"])
def test_ocsp_response_signed_by_ca(algorithm: str) -> None:
    root, issuing = _ca(algorithm)
    leaf = _leaf(issuing)
    response = _answer(issuing, _request(leaf, issuing.certificate), _good_lookup(leaf))
    public_key = issuing.certificate.public_key()
    _verify_signature(
        public_key,
        response.signature,
        response.tbs_response_bytes,
        response.signature_hash_algorithm,
    )
    with pytest.raises(InvalidSignature):
        _verify_signature(
            root.certificate.public_key(),
            response.signature,
            response.tbs_response_bytes,
            response.signature_hash_algorithm,
        )
    ski = issuing.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert response.responder_key_hash == ski.value.digest
    assert response.responder_name is None
    assert response.certificates == [issuing.certificate]


def test_ocsp_tampered_response_fails_verification(ca: Authority) -> None:
    leaf = _leaf(ca)
    response = _answer(ca, _request(leaf, ca.certificate), _good_lookup(leaf))
    public_key = ca.certificate.public_key()
    tbs = bytearray(response.tbs_response_bytes)
    tbs[-1] ^= 0x01
    with pytest.raises(InvalidSignature):
        _verify_signature(public_key, response.signature, bytes(tbs), hashes.SHA256())


@pytest.mark.parametrize(
    "hash_algorithm",
    [hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
    ids=["sha1", "sha256", "sha384", "sha512"],
)
def test_ocsp_cert_id_hashes(ca: Authority, hash_algorithm: hashes.HashAlgorithm) -> None:
    leaf = _leaf(ca)
    response = _answer(ca, _request(leaf, ca.certificate, hash_algorithm), _good_lookup(leaf))
    assert response.response_status == RespStatus.SUCCESSFUL
    assert response.certificate_status == Status.GOOD
    assert response.hash_algorithm.name == hash_algorithm.name
    name_hash, key_hash = issuer_hashes(ca.certificate, hash_algorithm)
    assert response.issuer_name_hash == name_hash
    assert response.issuer_key_hash == key_hash


def test_ocsp_sha224_cert_id_is_malformed(ca: Authority) -> None:
    leaf = _leaf(ca)
    lookup = _good_lookup(leaf)
    response = _answer(ca, _request(leaf, ca.certificate, hashes.SHA224()), lookup)
    assert response.response_status == RespStatus.MALFORMED_REQUEST
    assert lookup.asked == []


def test_ocsp_other_issuer_is_unauthorized(pki: tuple[Authority, Authority]) -> None:
    root, ca = pki
    _, other = _ca()
    foreign_leaf = _leaf(other)
    lookup = _good_lookup(foreign_leaf)
    response = _answer(ca, _request(foreign_leaf, other.certificate), lookup)
    assert response.response_status == RespStatus.UNAUTHORIZED
    assert lookup.asked == []
    # A CertID naming the root as issuer is not this responder's either.
    response = _answer(ca, _request(ca.certificate, root.certificate), lookup)
    assert response.response_status == RespStatus.UNAUTHORIZED


@pytest.mark.parametrize(
    "request_der",
    [b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30\x82\x01\x00" + b"\x00" * 10],
    ids=["empty", "text", "wrong-structure", "truncated"],
)
def test_ocsp_garbage_is_malformed(ca: Authority, request_der: bytes) -> None:
    lookup = Lookup({})
    response = _answer(ca, request_der, lookup)
    assert response.response_status == RespStatus.MALFORMED_REQUEST
    assert lookup.asked == []


def _request_of_size(ca: Authority, leaf: x509.Certificate, size: int) -> bytes:
    """A valid OCSP request padded to exactly ``size`` bytes with a long nonce."""
    for nonce_length in range(size, 0, -1):
        der = _request(leaf, ca.certificate, nonce=b"n" * nonce_length)
        if len(der) == size:
            return der
    raise AssertionError(f"no request of exactly {size} bytes")


def test_ocsp_size_limit_boundary(ca: Authority) -> None:
    leaf = _leaf(ca)
    at_limit = _request_of_size(ca, leaf, MAX_OCSP_REQUEST_BYTES)
    response = _answer(ca, at_limit, _good_lookup(leaf))
    assert response.response_status == RespStatus.SUCCESSFUL
    assert response.certificate_status == Status.GOOD

    over = _request_of_size(ca, leaf, MAX_OCSP_REQUEST_BYTES + 1)
    lookup = _good_lookup(leaf)
    response = _answer(ca, over, lookup)
    assert response.response_status == RespStatus.MALFORMED_REQUEST
    assert lookup.asked == []


def test_ocsp_oversize_garbage_is_malformed(ca: Authority) -> None:
    response = _answer(ca, b"\x30" * (MAX_OCSP_REQUEST_BYTES * 4), Lookup({}))
    assert response.response_status == RespStatus.MALFORMED_REQUEST


SHA1_OID_DER = bytes.fromhex("06052b0e03021a")  # 1.3.14.3.2.26
UNKNOWN_OID_DER = bytes.fromhex("06052b0e03021b")  # 1.3.14.3.2.27, same length, not a hash


def test_ocsp_unknown_cert_id_hash_is_malformed(ca: Authority) -> None:
    leaf = _leaf(ca)
    request = _request(leaf, ca.certificate, hashes.SHA1())
    assert request.count(SHA1_OID_DER) == 1
    request = request.replace(SHA1_OID_DER, UNKNOWN_OID_DER)
    response = _answer(ca, request, Lookup({}))
    assert response.response_status == RespStatus.MALFORMED_REQUEST


def test_issuer_hashes_match_cryptography(ca: Authority) -> None:
    leaf = _leaf(ca)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        built = ocsp.load_der_ocsp_request(_request(leaf, ca.certificate, algorithm))
        assert issuer_hashes(ca.certificate, algorithm) == (
            built.issuer_name_hash,
            built.issuer_key_hash,
        )


def test_issuer_hashes_ed25519() -> None:
    _, issuing = _ca("ed25519")
    leaf = _leaf(issuing)
    built = ocsp.load_der_ocsp_request(_request(leaf, issuing.certificate, hashes.SHA1()))
    assert issuer_hashes(issuing.certificate, hashes.SHA1()) == (
        built.issuer_name_hash,
        built.issuer_key_hash,
    )

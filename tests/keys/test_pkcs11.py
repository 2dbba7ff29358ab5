"""PKCS#11 keys against a real SoftHSM2 token (fixtures: tests/conftest_softhsm.py)."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType, ObjectClass

from garrison.errors import KeyStoreError
from garrison.keys.pkcs11 import (
    Pkcs11EcKey,
    Pkcs11Ref,
    format_pkcs11_uri,
    generate_pkcs11_key,
    open_pkcs11_key,
    parse_pkcs11_uri,
)
from tests.conftest_softhsm import SoftHsmToken

pytestmark = pytest.mark.softhsm

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Closes every key a test opens, so the token's shared login is released."""
    with ExitStack() as keys:
        yield keys


@pytest.fixture
def key(softhsm_token: SoftHsmToken, pkcs11_key_label: str, stack: ExitStack) -> Pkcs11EcKey:
    t = softhsm_token
    return stack.enter_context(
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label)
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _self_signed(
    key: ec.EllipticCurvePrivateKey, algorithm: hashes.SHA256 | hashes.SHA384 | None = None
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name("Garrison test root"))
        .issuer_name(_name("Garrison test root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, algorithm or hashes.SHA256())
    )


def _verify(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))


# --- signing with the builders ---------------------------------------------------------------


def test_self_signed_certificate_verifies(key: Pkcs11EcKey, tmp_path: Path) -> None:
    cert = _self_signed(key)

    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(cert)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path / "root.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-attime", str(int((NOW + dt.timedelta(days=1)).timestamp())),
         "-CAfile", str(pem), str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_crl_verifies(key: Pkcs11EcKey) -> None:
    cert = _self_signed(key)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(1234)
        .revocation_date(NOW)
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=7))
        .add_revoked_certificate(revoked)
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )

    assert crl.is_signature_valid(key.public_key())
    reloaded = x509.load_der_x509_crl(crl.public_bytes(serialization.Encoding.DER))
    assert reloaded.is_signature_valid(key.public_key())
    assert reloaded.issuer == cert.subject
    assert reloaded.get_revoked_certificate_by_serial_number(1234) is not None


def test_ocsp_response_verifies(key: Pkcs11EcKey) -> None:
    issuer = _self_signed(key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("device-0001"))
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    leaf.verify_directly_issued_by(issuer)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + dt.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(key, hashes.SHA256())
    )

    reloaded = ocsp.load_der_ocsp_response(response.public_bytes(serialization.Encoding.DER))
    assert reloaded.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert isinstance(reloaded.signature_hash_algorithm, hashes.SHA256)
    _verify(key.public_key(), reloaded.signature, reloaded.tbs_response_bytes)


def test_p384_key_signs_with_sha384(
    softhsm_token: SoftHsmToken, pkcs11_key_label: str, stack: ExitStack
) -> None:
    t = softhsm_token
    key = stack.enter_context(
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label, "ecdsa-p384")
    )

    assert isinstance(key.curve, ec.SECP384R1)
    assert key.key_size == 384
    cert = _self_signed(key, hashes.SHA384())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    cert.verify_directly_issued_by(cert)


def test_sign_accepts_prehashed_digest(key: Pkcs11EcKey) -> None:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"firmware image")
    signature = key.sign(digest.finalize(), ec.ECDSA(Prehashed(hashes.SHA256())))

    _verify(key.public_key(), signature, b"firmware image")


@pytest.mark.parametrize(
    "algorithm",
    [
        ec.ECDSA(hashes.SHA1()),
        ec.ECDSA(hashes.SHA256(), deterministic_signing=True),
        ec.ECDSA(Prehashed(hashes.SHA1())),
    ],
    ids=["sha1", "deterministic", "prehashed-sha1"],
)
def test_sign_refuses_weak_or_unsupported_algorithms(key: Pkcs11EcKey, algorithm: ec.ECDSA) -> None:
    data = b"\x00" * 20 if isinstance(algorithm.algorithm, Prehashed) else b"data"
    with pytest.raises(KeyStoreError):
        key.sign(data, algorithm)


# --- opening, closing, sharing a token ------------------------------------------------------


def test_reopened_key_has_same_public_key_and_signs(
    softhsm_token: SoftHsmToken, pkcs11_key_label: str, stack: ExitStack
) -> None:
    t = softhsm_token
    with generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label) as first:
        public = first.public_key()

    again = stack.enter_context(
        open_pkcs11_key(t.module_path, t.token_label, t.pin, first.ref.object)
    )
    assert again.public_key() == public
    assert again.ref == Pkcs11Ref(token=t.token_label, object=pkcs11_key_label)
    _verify(public, again.sign(b"hello", ec.ECDSA(hashes.SHA256())), b"hello")
    _self_signed(again).verify_directly_issued_by(_self_signed(again))


def test_two_keys_on_one_token_share_the_login(
    softhsm_token: SoftHsmToken, pkcs11_key_label: str, stack: ExitStack
) -> None:
    t = softhsm_token
    root = stack.enter_context(
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label + "-root")
    )
    issuing = generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label + "-ca")
    same = open_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label + "-root")

    issuing.close()  # would log out the whole token if the login were not shared
    same.close()
    signature = root.sign(b"still logged in", ec.ECDSA(hashes.SHA256()))
    _verify(root.public_key(), signature, b"still logged in")


def test_closed_key_refuses_to_sign(softhsm_token: SoftHsmToken, pkcs11_key_label: str) -> None:
    t = softhsm_token
    key = generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label)
    key.close()
    key.close()  # idempotent

    with pytest.raises(KeyStoreError, match="closed"):
        key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    assert "closed" in repr(key)


def test_private_value_cannot_leave_the_token(key: Pkcs11EcKey) -> None:
    with pytest.raises(KeyStoreError, match="non-exportable"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyStoreError, match="non-exportable"):
        key.private_numbers()
    with pytest.raises(KeyStoreError, match="non-exportable"):
        key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyStoreError, match="non-exportable"):
        pickle.dumps(key)
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key


def test_generated_key_is_sensitive_non_extractable_token_object(
    softhsm_token: SoftHsmToken, key: Pkcs11EcKey
) -> None:
    # A second, login-less session: the token is already logged in through ``key``.
    token = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    with token.open() as session:
        (private,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key.ref.object}
        )
        assert private[Attribute.TOKEN]
        assert private[Attribute.PRIVATE]
        assert private[Attribute.SENSITIVE]
        assert not private[Attribute.EXTRACTABLE]
        assert private[Attribute.SIGN]
        assert not private[Attribute.DERIVE]
        assert not private[Attribute.DECRYPT]
        with pytest.raises(pkcs11.AttributeSensitive):
            private[Attribute.VALUE]


def test_extractable_key_is_refused(
    softhsm_token: SoftHsmToken, key: Pkcs11EcKey, pkcs11_key_label: str
) -> None:
    label = pkcs11_key_label + "-extractable"
    token = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    with token.open(rw=True) as session:  # logged in through ``key``
        session.generate_keypair(
            KeyType.EC,
            label=label,
            store=True,
            public_template={Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")},
            private_template={Attribute.EXTRACTABLE: True},
        )

    t = softhsm_token
    with pytest.raises(KeyStoreError, match="can leave the token"):
        open_pkcs11_key(t.module_path, t.token_label, t.pin, label)


def test_key_pair_whose_public_key_does_not_match_is_refused(
    softhsm_token: SoftHsmToken, key: Pkcs11EcKey, pkcs11_key_label: str
) -> None:
    # Give key A the public key object of key B: the sign-and-verify check on open must fail.
    label = pkcs11_key_label + "-mismatched"
    token = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    p256 = {Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}
    with token.open(rw=True) as session:  # logged in through ``key``
        public_a, _ = session.generate_keypair(
            KeyType.EC, id=b"A", label=label, store=True, public_template=p256
        )
        public_b, _ = session.generate_keypair(
            KeyType.EC, id=b"B", label=label + "-other", store=True, public_template=p256
        )
        public_a.destroy()
        public_b[Attribute.LABEL] = label
        public_b[Attribute.ID] = b"A"

    t = softhsm_token
    with pytest.raises(KeyStoreError, match="does not match the private key"):
        open_pkcs11_key(t.module_path, t.token_label, t.pin, label)


# --- refusals and errors --------------------------------------------------------------------


def test_duplicate_label_is_refused(softhsm_token: SoftHsmToken, key: Pkcs11EcKey) -> None:
    t = softhsm_token
    with pytest.raises(KeyStoreError, match="already exists") as err:
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, key.ref.object)
    assert "open_pkcs11_key" in err.value.hint


def test_wrong_pin_is_refused(softhsm_token: SoftHsmToken, pkcs11_key_label: str) -> None:
    t = softhsm_token
    with generate_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label):
        pass

    # Not logged in: the token itself checks the PIN.
    with pytest.raises(KeyStoreError, match=r"wrong PIN for token 'garrison-test'") as err:
        open_pkcs11_key(t.module_path, t.token_label, "0000", pkcs11_key_label)
    assert "PIN" in err.value.hint
    # Logged in through another key: the PIN must still match.
    with (
        open_pkcs11_key(t.module_path, t.token_label, t.pin, pkcs11_key_label),
        pytest.raises(KeyStoreError, match=r"wrong PIN for token 'garrison-test'"),
    ):
        open_pkcs11_key(t.module_path, t.token_label, "0000", pkcs11_key_label)


def test_unknown_token_is_reported(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with pytest.raises(KeyStoreError, match=r"no token labelled 'nope'.*'garrison-test'"):
        open_pkcs11_key(t.module_path, "nope", t.pin, "root-ca")


def test_unknown_key_label_is_reported(softhsm_token: SoftHsmToken, key: Pkcs11EcKey) -> None:
    t = softhsm_token
    with pytest.raises(KeyStoreError, match=r"no private key labelled 'nope'") as err:
        open_pkcs11_key(t.module_path, t.token_label, t.pin, "nope")
    assert repr(key.ref.object) in str(err.value)  # lists the keys that exist
    assert "generate_pkcs11_key" in err.value.hint


def test_missing_module_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="PKCS#11 module not found"):
        open_pkcs11_key(str(tmp_path / "missing.so"), "garrison", "1234", "root-ca")


def test_file_that_is_not_a_module_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"not a shared library")
    with pytest.raises(KeyStoreError, match="cannot load PKCS#11 module"):
        generate_pkcs11_key(str(bogus), "garrison", "1234", "root-ca")


def test_unknown_curve_and_empty_label_are_refused(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with pytest.raises(KeyStoreError, match="unsupported curve"):
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, "k", curve="ed25519")
    with pytest.raises(KeyStoreError, match="needs a label"):
        generate_pkcs11_key(t.module_path, t.token_label, t.pin, "")


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_signing_from_threads(
    softhsm_token: SoftHsmToken, pkcs11_key_label: str, stack: ExitStack
) -> None:
    t = softhsm_token
    keys = [
        stack.enter_context(generate_pkcs11_key(t.module_path, t.token_label, t.pin, label, curve))
        for label, curve in [
            (pkcs11_key_label + "-p256", "ecdsa-p256"),
            (pkcs11_key_label + "-p384", "ecdsa-p384"),
        ]
    ]
    start = threading.Barrier(8)

    def work(worker: int) -> list[tuple[int, bytes, bytes]]:
        start.wait()
        out = []
        for i in range(50):
            which = (worker + i) % 2
            message = f"worker {worker} message {i}".encode()
            out.append((which, message, keys[which].sign(message, ec.ECDSA(hashes.SHA256()))))
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [item for batch in pool.map(work, range(8)) for item in batch]

    assert len(results) == 400
    for which, message, signature in results:
        keys[which].public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


# --- URIs (no token needed) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pkcs11:token=garrison;object=root-ca", Pkcs11Ref("garrison", "root-ca")),
        ("pkcs11:object=root-ca;token=garrison", Pkcs11Ref("garrison", "root-ca")),
        ("pkcs11:token=My%20Token;object=ca%3Bkey%25", Pkcs11Ref("My Token", "ca;key%")),
        ("pkcs11:token=caf%C3%A9;object=k", Pkcs11Ref("café", "k")),
        ("PKCS11:token=t;object=o", Pkcs11Ref("t", "o")),
    ],
)
def test_parse_uri(uri: str, expected: Pkcs11Ref) -> None:
    assert parse_pkcs11_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:token=garrison", "lacks object"),
        ("pkcs11:object=root-ca", "lacks token"),
        ("pkcs11:", "lacks token and object"),
        ("file:token=garrison;object=root-ca", "not a PKCS#11 URI"),
        ("garbage", "not a PKCS#11 URI"),
        ("pkcs11:token=garrison;object=root-ca;id=%01", "unsupported attribute 'id'"),
        ("pkcs11:token=garrison;object=root-ca?pin-value=1234", "query"),
        ("pkcs11:token=a;token=b;object=c", "repeated"),
        ("pkcs11:token=;object=c", "empty or badly encoded"),
        ("pkcs11:token=a b;object=c", "empty or badly encoded"),
        ("pkcs11:token=%zz;object=c", "empty or badly encoded"),
        ("pkcs11:token=%ff;object=c", "not UTF-8"),
        ("pkcs11:token;object=c", "empty or badly encoded"),
    ],
)
def test_parse_uri_refuses(uri: str, message: str) -> None:
    with pytest.raises(KeyStoreError, match=message):
        parse_pkcs11_uri(uri)


@pytest.mark.parametrize(
    "ref",
    [Pkcs11Ref("garrison", "root-ca"), Pkcs11Ref("My Token", "a;b=c?d/e%f"), Pkcs11Ref("é", "ü")],
)
def test_format_uri_round_trips(ref: Pkcs11Ref) -> None:
    uri = format_pkcs11_uri(ref)
    assert uri.startswith("pkcs11:token=")
    assert parse_pkcs11_uri(uri) == ref


def test_format_uri_example() -> None:
    assert format_pkcs11_uri(Pkcs11Ref("garrison", "root ca")) == (
        "pkcs11:token=garrison;object=root%20ca"
    )

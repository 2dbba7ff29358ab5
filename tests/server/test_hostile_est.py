"""Hostile input on the device-facing endpoints: EST enrollment and re-enrollment, the
device API and the OCSP responder.

The bar for every case: a precise 4xx and message, a ``refused`` audit entry, and no state
change (above all: nothing issued). :func:`assert_refused` checks all of it in one place.

A refusal that never reaches the application (a TLS handshake with a foreign certificate)
cannot be audited there; that case checks that nothing at all changed.

The cases share one served fleet per backend (``shared``, in tests/server/conftest.py):
each creates its own batch with fresh serials, and every check is relative (state before
and after, audit entries after a sequence number), so they stay independent while the
module runs in seconds.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import secrets
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select, update

from garrison.access.audit import AuditRecord
from garrison.store import tables
from garrison.store.audit_log import read_audit
from tests.conftest import RunningFleet, make_csr
from tests.server.conftest import Batch, SharedFleet

PKCS10 = "application/pkcs10"
ENROLL = "/.well-known/est/simpleenroll"
REENROLL = "/.well-known/est/simplereenroll"
CHECKIN = "/device/v1/checkin"
OCSP = "/pki/ocsp"
CSR_LIMIT = 16 * 1024  # garrison.pki.csr.MAX_CSR_BYTES
OCSP_LIMIT = 8 * 1024  # garrison.pki.revocation.MAX_OCSP_REQUEST_BYTES


# -- the bar: a precise answer, audited, nothing changed -----------------------------------


class NotAudited(AssertionError):
    """A refusal that was answered correctly but left no ``refused`` audit entry."""


STATE_TABLES = [
    t for t in tables.metadata.sorted_tables if t not in (tables.audit_log, tables.audit_head)
]


def state_of(served: RunningFleet) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table except the audit log, in primary-key order."""
    with served.database.read() as conn:
        return {
            table.name: [
                tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key))
            ]
            for table in STATE_TABLES
        }


def row_count(served: RunningFleet, table: Any) -> int:
    with served.database.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def last_audit_seq(served: RunningFleet) -> int:
    with served.database.read() as conn:
        seq = conn.execute(select(func.max(tables.audit_log.c.seq))).scalar_one()
    return int(seq or 0)


def audit_after(served: RunningFleet, seq: int) -> list[AuditRecord]:
    with served.database.read() as conn:
        return list(read_audit(conn, after=seq))


def assert_refused(
    served: RunningFleet,
    send: Callable[[], httpx.Response],
    status: int,
    fragment: str,
    action: str,
) -> httpx.Response:
    """Call ``send`` (which makes one request) and check the whole bar for a refusal.

    Exactly ``status``; ``fragment`` in the body; no new certificate row and, beyond that,
    not one row changed in any table but the audit log; and a new audit entry with outcome
    ``refused`` and ``action`` (checked last, raised as :class:`NotAudited`).
    """
    seq, state = last_audit_seq(served), state_of(served)
    certificates = row_count(served, tables.certificates)
    response = send()
    where = f"{response.request.method} {response.request.url.path}"
    text = response.text
    assert response.status_code == status, f"{where}: {response.status_code} {text[:500]}"
    assert fragment in text, f"{where}: {fragment!r} not in {text[:500]!r}"
    assert row_count(served, tables.certificates) == certificates, f"{where} issued a certificate"
    assert state_of(served) == state, f"{where} changed state although it was refused"
    new = audit_after(served, seq)
    if not any(r.outcome == "refused" and r.action == action for r in new):
        seen = [(r.action, r.outcome) for r in new]
        raise NotAudited(f"{where}: no refused {action!r} audit entry (new entries: {seen})")
    return response


# -- EST requests ----------------------------------------------------------------------------


def basic(serial: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{serial}:{token}".encode()).decode()


def est_body(der: bytes) -> bytes:
    """An EST request body: base64 of the DER, with line breaks (RFC 7030 section 4.2.1)."""
    return base64.encodebytes(der)


@dataclass(frozen=True)
class EstRequest:
    """One POST to an EST endpoint; ``None`` leaves a header out."""

    content: bytes | Iterator[bytes]
    authorization: str | None = None
    content_type: str | None = PKCS10

    def send(self, client: httpx.Client, path: str = ENROLL) -> httpx.Response:
        headers = {}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return client.post(path, content=self.content, headers=headers)


def honest(serial: str, token: str | None = None, **changes: Any) -> EstRequest:
    """A correct (re-)enrollment request for ``serial``, with ``changes`` applied."""
    request = EstRequest(est_body(make_csr(serial)[1]), basic(serial, token) if token else None)
    return dataclasses.replace(request, **changes)


def raw_basic(credentials: bytes) -> str:
    """An HTTP Basic header carrying exactly ``credentials`` (however malformed)."""
    return "Basic " + base64.b64encode(credentials).decode()


def csr_with_key(serial: str, key: Any) -> bytes:
    """An EST body holding a CSR for ``serial`` signed with ``key`` (of any type)."""
    return est_body(make_csr(serial, key)[1])


def on_curve(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


def rsa_2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def tampered_signature(der: bytes) -> bytes:
    """``der`` with the last byte of its signature flipped (still well-formed DER)."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


def streamed(total: int, chunk: int = 4096) -> Iterator[bytes]:
    """A body sent with chunked transfer encoding: the server never sees a Content-Length."""
    for _ in range(total // chunk):
        yield b"A" * chunk


def issued_certificate(response: httpx.Response) -> x509.Certificate:
    """The one certificate of a successful EST answer (base64 PKCS#7 certs-only)."""
    assert response.status_code == 200, response.text
    (cert,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))
    return cert


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def served(shared: SharedFleet) -> RunningFleet:
    """In this module, ``served`` is the shared fleet (it overrides tests/conftest.py)."""
    return shared.served


@pytest.fixture
def est(served: RunningFleet) -> Iterator[httpx.Client]:
    """An HTTPS client without a client certificate."""
    with served.client() as client:
        yield client


@dataclass(frozen=True)
class DeviceFiles:
    serial: str
    cert: Path
    key: Path


def write_identity(directory: Path, serial: str, key: Any, cert: x509.Certificate) -> DeviceFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "device.crt", directory / "device.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return DeviceFiles(serial, cert_path, key_path)


def enroll(shared: SharedFleet) -> tuple[str, Any, x509.Certificate]:
    """A new device enrolled through EST: its serial, key and certificate."""
    batch = shared.batch(size=1)
    (serial,) = batch.serials
    key, der = make_csr(serial)
    with shared.served.client() as client:
        request = EstRequest(est_body(der), basic(serial, batch.token(serial)))
        return serial, key, issued_certificate(request.send(client))


@pytest.fixture
def device(shared: SharedFleet, tmp_path: Path) -> DeviceFiles:
    """A new enrolled device, its certificate and key in files for mutual TLS."""
    serial, key, cert = enroll(shared)
    return write_identity(tmp_path / serial, serial, key, cert)


def revoke(shared: SharedFleet, serial: str) -> None:
    with shared.served.api(shared.officer.token) as api:
        response = api.post(f"/devices/{serial}/revoke", json={"reason": "key-compromise"})
    assert response.status_code == 200, response.text


# -- simpleenroll: malformed, oversized and overreaching requests ----------------------------
# Each builder gets (serial, its valid token, another serial of the same batch); fragments
# may name them as {serial} and {other}.

HOSTILE_ENROLLMENTS = [
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=None),
        401,
        "enrollment needs HTTP Basic credentials: serial and token",
        id="no-authorization",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization="Basic %%not-base64%%"),
        401,
        "malformed HTTP Basic credentials",
        id="basic-not-base64",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=raw_basic(b"\xff:\xfe")),
        401,
        "malformed HTTP Basic credentials",
        id="basic-not-utf8",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=raw_basic(t.encode())),
        401,
        "HTTP Basic credentials need both serial and token",
        id="basic-without-colon",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=basic("", t)),
        401,
        "HTTP Basic credentials need both serial and token",
        id="empty-serial",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content_type="application/json"),
        415,
        "content type must be application/pkcs10, not 'application/json'",
        id="content-type-json",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content_type=None),
        415,
        "content type must be application/pkcs10, not 'none'",
        id="content-type-missing",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=b"this is *not* base64!"),
        400,
        "request body is not valid base64",
        id="body-not-base64",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=base64.encodebytes(secrets.token_bytes(300))),
        400,
        "body is not a DER-encoded PKCS#10 certificate request",
        id="base64-of-garbage",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=b""),
        400,
        "empty request body",
        id="empty-body",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=b"A" * 64 * 1024),
        413,
        f"request body too large ({64 * 1024} bytes, limit {CSR_LIMIT})",
        id="oversized",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=streamed(64 * 1024)),
        413,
        f"request body too large (more than {CSR_LIMIT} bytes)",
        id="oversized-chunked-stream",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=est_body(tampered_signature(make_csr(s)[1]))),
        400,
        "CSR signature does not verify with its own public key",
        id="csr-signature-tampered",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=est_body(make_csr(s, ca=True)[1])),
        403,
        "CSR asks for a CA certificate (basicConstraints CA:TRUE)",
        id="csr-asks-for-ca",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=est_body(make_csr(o)[1])),
        403,
        "CSR names ['{other}'], but this request is authorized for device '{serial}'",
        id="csr-cn-of-another-device",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=est_body(make_csr(s, extra_dns="evil.example")[1])),
        403,
        "CSR names ['evil.example']",
        id="csr-extra-dns-san",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=csr_with_key(s, rsa_2048())),
        403,
        "RSAPublicKey is not allowed",
        id="csr-rsa-key",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=csr_with_key(s, on_curve(ec.SECP521R1()))),
        403,
        "CSR key curve secp521r1 is not allowed",
        id="csr-p521-key",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, content=csr_with_key(s, on_curve(ec.SECP256K1()))),
        403,
        "CSR key curve secp256k1 is not allowed",
        id="csr-secp256k1-key",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=basic("../x", t)),
        400,
        "device serial '../x' is not valid",
        id="serial-path-traversal",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=basic("S" * 65, t)),
        400,
        f"device serial '{'S' * 65}' is not valid",
        id="serial-65-chars",
    ),
    pytest.param(
        lambda s, t, o: honest(s, t, authorization=basic("SN 1", t)),
        400,
        "device serial 'SN 1' is not valid",
        id="serial-with-space",
    ),
]


@pytest.mark.parametrize(("build", "status", "fragment"), HOSTILE_ENROLLMENTS)
def test_hostile_enrollment_is_refused_and_burns_nothing(
    shared: SharedFleet,
    est: httpx.Client,
    build: Callable[[str, str, str], EstRequest],
    status: int,
    fragment: str,
) -> None:
    batch = shared.batch(size=2)
    serial, other = batch.serials
    attempt = build(serial, batch.token(serial), other)
    expected = fragment.format(serial=serial, other=other)
    response = assert_refused(
        shared.served, lambda: attempt.send(est), status, expected, "est.enroll"
    )
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    # Nothing was consumed: the genuine device still enrolls with the same token.
    issued_certificate(honest(serial, batch.token(serial)).send(est))


# -- simpleenroll: tokens, batches and races -------------------------------------------------


def test_token_reuse_is_refused(shared: SharedFleet, est: httpx.Client) -> None:
    batch = shared.batch(size=1)
    (serial,) = batch.serials
    issued_certificate(honest(serial, batch.token(serial)).send(est))
    replay = honest(serial, batch.token(serial))
    assert_refused(
        shared.served,
        lambda: replay.send(est),
        403,
        "enrollment token was already used",
        "est.enroll",
    )


def unknown_token(batch: Batch) -> str:
    return "gst_" + secrets.token_urlsafe(24)


@pytest.mark.parametrize(
    ("claimed", "token_of", "fragment"),
    [
        pytest.param(
            lambda b: b.serials[0],
            lambda b: b.token(b.serials[1]),
            "enrollment token is not issued for serial '{claimed}'",
            id="token-of-another-serial",
        ),
        pytest.param(
            lambda b: "UNLISTED-1",
            lambda b: b.token(b.serials[0]),
            "enrollment token is not issued for serial '{claimed}'",
            id="unknown-serial-with-real-token",
        ),
        pytest.param(
            lambda b: b.serials[0],
            unknown_token,
            "unknown enrollment token",
            id="unknown-token",
        ),
        pytest.param(
            lambda b: "UNLISTED-1",
            unknown_token,
            "unknown enrollment token",
            id="unknown-serial-with-valid-looking-token",
        ),
    ],
)
def test_wrong_token_is_refused(
    shared: SharedFleet,
    est: httpx.Client,
    claimed: Callable[[Batch], str],
    token_of: Callable[[Batch], str],
    fragment: str,
) -> None:
    batch = shared.batch(size=2)
    serial = claimed(batch)
    attempt = honest(serial, token_of(batch))
    assert_refused(
        shared.served,
        lambda: attempt.send(est),
        403,
        fragment.format(claimed=serial),
        "est.enroll",
    )


def test_enrollment_over_quota_is_refused(shared: SharedFleet, est: httpx.Client) -> None:
    batch = shared.batch(size=3, quota=2)
    first, second, third = batch.serials
    issued_certificate(honest(first, batch.token(first)).send(est))
    issued_certificate(honest(second, batch.token(second)).send(est))
    attempt = honest(third, batch.token(third))
    assert_refused(
        shared.served,
        lambda: attempt.send(est),
        403,
        f"production batch {batch.id} quota exhausted",
        "est.enroll",
    )


def test_enrollment_in_expired_batch_is_refused(shared: SharedFleet, est: httpx.Client) -> None:
    batch = shared.batch(size=1, valid_days=1)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with shared.served.database.write() as conn:  # test set-up: the batch runs out
        conn.execute(
            update(tables.batches).where(tables.batches.c.id == batch.id).values(expires_at=past)
        )
    (serial,) = batch.serials
    attempt = honest(serial, batch.token(serial))
    assert_refused(
        shared.served,
        lambda: attempt.send(est),
        403,
        f"production batch {batch.id} expired",
        "est.enroll",
    )


def test_quota_token_cannot_claim_a_serial_allow_listed_elsewhere(
    shared: SharedFleet, est: httpx.Client
) -> None:
    reserved = shared.batch(size=1).serials[0]  # allow-listed, not yet enrolled
    (quota_token,) = shared.batch(serials=[], quota=1).tokens
    attempt = honest(reserved, quota_token)
    assert_refused(
        shared.served,
        lambda: attempt.send(est),
        403,
        f"serial {reserved!r} is authorized by another token",
        "est.enroll",
    )


def test_concurrent_replays_of_one_token_issue_exactly_one_certificate(
    shared: SharedFleet,
) -> None:
    threads = 8
    batch = shared.batch(size=1)
    (serial,) = batch.serials
    attempts = [honest(serial, batch.token(serial)) for _ in range(threads)]
    start = threading.Barrier(threads)
    seq = last_audit_seq(shared.served)
    certificates = row_count(shared.served, tables.certificates)

    def race(attempt: EstRequest) -> httpx.Response:
        with shared.served.client() as client:
            client.get("/healthz")  # connect first, so that the requests themselves race
            start.wait(timeout=30)
            return attempt.send(client)

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(race, attempts))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [403] * (threads - 1), [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 403):
        assert "already used" in refused.text or "already enrolled" in refused.text, refused.text
    assert row_count(shared.served, tables.certificates) == certificates + 1
    new = audit_after(shared.served, seq)
    assert [(r.action, r.target) for r in new if r.outcome == "ok"] == [("cert.issue", serial)]
    assert [r.action for r in new if r.outcome == "refused"] == ["est.enroll"] * (threads - 1)


# -- simplereenroll --------------------------------------------------------------------------


def test_reenroll_with_the_current_certificate_works(
    served: RunningFleet, device: DeviceFiles
) -> None:
    """The positive control: the mutual TLS set-up the refusals below rely on is sound."""
    with served.client(device.cert, device.key) as client:
        cert = issued_certificate(honest(device.serial).send(client, REENROLL))
    assert cert.subject.rfc4514_string().startswith(f"CN={device.serial}")


def test_reenroll_without_client_certificate_is_refused(
    served: RunningFleet, est: httpx.Client, device: DeviceFiles
) -> None:
    attempt = honest(device.serial)
    assert_refused(
        served,
        lambda: attempt.send(est, REENROLL),
        403,
        "a client certificate is required (mutual TLS)",
        "device.authenticate",
    )


def test_reenroll_of_revoked_device_is_refused(shared: SharedFleet, device: DeviceFiles) -> None:
    revoke(shared, device.serial)
    attempt = honest(device.serial)
    with shared.served.client(device.cert, device.key) as client:
        assert_refused(
            shared.served,
            lambda: attempt.send(client, REENROLL),
            403,
            f"device {device.serial!r} is revoked",
            "device.authenticate",
        )


@pytest.mark.parametrize(
    ("build", "status", "fragment"),
    [
        pytest.param(
            lambda s: honest("OTHER-1"),
            403,
            "CSR names ['OTHER-1'], but this request is authorized for device '{serial}'",
            id="csr-names-another-device",
        ),
        pytest.param(
            lambda s: honest(s, content=est_body(make_csr(s, ca=True)[1])),
            403,
            "CSR asks for a CA certificate",
            id="csr-asks-for-ca",
        ),
        pytest.param(
            lambda s: honest(s, content=base64.encodebytes(b"garbage")),
            400,
            "body is not a DER-encoded PKCS#10 certificate request",
            id="base64-of-garbage",
        ),
        pytest.param(
            lambda s: honest(s, content_type="text/plain"),
            415,
            "content type must be application/pkcs10, not 'text/plain'",
            id="wrong-content-type",
        ),
        pytest.param(
            lambda s: honest(s, content=b"A" * 64 * 1024),
            413,
            "request body too large",
            id="oversized",
        ),
    ],
)
def test_hostile_reenroll_is_refused(
    served: RunningFleet,
    device: DeviceFiles,
    build: Callable[[str], EstRequest],
    status: int,
    fragment: str,
) -> None:
    attempt = build(device.serial)
    with served.client(device.cert, device.key) as client:
        assert_refused(
            served,
            lambda: attempt.send(client, REENROLL),
            status,
            fragment.format(serial=device.serial),
            "est.reenroll",
        )


def foreign_identity(directory: Path, serial: str) -> DeviceFiles:
    """A well-formed client certificate for ``serial``, signed by a CA this fleet never saw."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign Root CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return write_identity(directory, serial, key, cert)


def pinned_client(
    served: RunningFleet, identity: DeviceFiles, version: ssl.TLSVersion
) -> httpx.Client:
    """A client presenting ``identity``, speaking exactly TLS ``version``."""
    context = ssl.create_default_context(cafile=str(served.root_ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    context.minimum_version = context.maximum_version = version
    return httpx.Client(base_url=served.url, verify=context, timeout=30)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        # TLS 1.2: the server refuses inside the handshake (it closes without an alert).
        pytest.param(ssl.TLSVersion.TLSv1_2, httpx.ConnectError, id="tls1.2"),
        # TLS 1.3: the client has finished its side of the handshake when the server checks
        # the certificate; the server drops the connection before reading the request.
        pytest.param(ssl.TLSVersion.TLSv1_3, httpx.TransportError, id="tls1.3"),
    ],
)
def test_reenroll_with_a_foreign_ca_certificate_fails_the_handshake(
    served: RunningFleet,
    device: DeviceFiles,
    tmp_path: Path,
    version: ssl.TLSVersion,
    expected: type[httpx.TransportError],
) -> None:
    with pinned_client(served, device, version) as genuine:  # the positive control
        assert genuine.get("/healthz").status_code == 200
    forged = foreign_identity(tmp_path / "forged", device.serial)
    seq, state = last_audit_seq(served), state_of(served)
    with pinned_client(served, forged, version) as client, pytest.raises(expected):
        honest(device.serial).send(client, REENROLL)
    assert state_of(served) == state
    assert audit_after(served, seq) == []  # the request never reached the application


# -- the device API --------------------------------------------------------------------------


def test_checkin_without_client_certificate_is_refused(
    served: RunningFleet, est: httpx.Client
) -> None:
    assert_refused(
        served,
        lambda: est.post(CHECKIN, json={}),
        403,
        "a client certificate is required (mutual TLS)",
        "device.authenticate",
    )


def test_checkin_of_revoked_device_is_refused(shared: SharedFleet, device: DeviceFiles) -> None:
    with shared.served.client(device.cert, device.key) as client:
        assert client.post(CHECKIN, json={}).status_code == 200  # the positive control
        revoke(shared, device.serial)
        assert_refused(
            shared.served,
            lambda: client.post(CHECKIN, json={}),
            403,
            f"device {device.serial!r} is revoked",
            "device.authenticate",
        )


def test_checkin_with_malformed_body_is_refused(served: RunningFleet, device: DeviceFiles) -> None:
    with served.client(device.cert, device.key) as client:
        assert_refused(
            served,
            lambda: client.post(CHECKIN, json={"agent_version": "1", "is_admin": True}),
            422,
            "Extra inputs are not permitted",
            "device.checkin",
        )


def test_checkin_with_oversized_body_is_refused(served: RunningFleet, device: DeviceFiles) -> None:
    body = json.dumps({"agent_version": "1", "pad": "x" * (2 << 20)})
    with served.client(device.cert, device.key) as client:
        assert_refused(
            served,
            lambda: client.post(
                CHECKIN, content=body, headers={"Content-Type": "application/json"}
            ),
            413,
            "",
            "device.checkin",
        )


def test_wrong_method_on_enroll_is_refused(served: RunningFleet, est: httpx.Client) -> None:
    assert_refused(served, lambda: est.get(ENROLL), 405, "Method Not Allowed", "est.enroll")


# -- OCSP ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(
            lambda c: c.post(
                OCSP,
                content=b"\x30\x03garbage",
                headers={"Content-Type": "application/ocsp-request"},
            ),
            id="post-garbage",
        ),
        pytest.param(lambda c: c.post(OCSP, content=b""), id="post-empty"),
        pytest.param(lambda c: c.get(OCSP + "/not%20base64!"), id="get-not-base64"),
        pytest.param(
            lambda c: c.get(OCSP + "/" + base64.b64encode(b"junk").decode()), id="get-junk"
        ),
    ],
)
def test_malformed_ocsp_request_gets_malformed_request_status(
    served: RunningFleet, est: httpx.Client, send: Callable[[httpx.Client], httpx.Response]
) -> None:
    state = state_of(served)
    response = send(est)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert state_of(served) == state


def test_oversized_ocsp_request_is_refused(served: RunningFleet, est: httpx.Client) -> None:
    assert_refused(
        served,
        lambda: est.post(OCSP, content=b"\x30" * (OCSP_LIMIT + 1)),
        413,
        f"request body too large ({OCSP_LIMIT + 1} bytes, limit {OCSP_LIMIT})",
        "ocsp.request",
    )

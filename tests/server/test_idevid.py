"""Enrollment with a manufacturer bootstrap certificate (IDevID) instead of a token, with
curl as the client: a registered manufacturer CA, its IDevIDs, and what is refused."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from garrison.pki.authority import key_usage
from garrison.server.embedded import EmbeddedServer, free_port
from garrison.server.run import Listen
from tests.conftest import Officer, RunningFleet, make_csr

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Manufacturer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Manufacturer:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .add_extension(key_usage(ca=True), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def idevid(self, directory: Path, serial: str) -> tuple[Path, Path]:
        """An IDevID for ``serial`` (cert and key files in ``directory``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "idevid.pem", directory / "idevid.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _register(
    served: RunningFleet, officer: Officer, maker: Manufacturer, serials: list[str]
) -> dict:  # type: ignore[type-arg]
    with served.api(officer.token) as api:
        response = api.post(
            "/batches",
            json={"name": "idevid batch", "manufacturer": "acme", "model": "gw",
                  "serials": serials, "idevid_ca_pem": maker.pem},
        )  # fmt: skip
    assert response.status_code == 201, response.text
    body: dict = response.json()  # type: ignore[type-arg]
    assert body["authentication"] == "idevid" and body["tokens"] == []
    return body


def _curl_enroll(
    url: str, root: Path, cert: Path, key: Path, csr_der: bytes, tmp: Path
) -> tuple[int, bytes]:
    body = tmp / "csr.b64"
    body.write_bytes(base64.encodebytes(csr_der))
    out = tmp / "out"
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(root), "--cert", str(cert), "--key", str(key),
         "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{body}",
         "-o", str(out), "-w", "%{http_code}", f"{url}/.well-known/est/simpleenroll"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return int(result.stdout or 0), out.read_bytes() if out.exists() else b""


def test_idevid_enrollment_with_curl(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    maker = Manufacturer.create("Acme EMS IDevID CA")
    _register(served, officer, maker, ["ID-1", "ID-2"])
    cert_path, key_path = maker.idevid(tmp_path / "ID-1", "ID-1")
    device_key, csr = make_csr("ID-1")
    status, body = _curl_enroll(served.url, served.root_ca, cert_path, key_path, csr, tmp_path)
    assert status == 200, body
    from cryptography.hazmat.primitives.serialization import pkcs7

    ldevid = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))[0]
    assert ldevid.public_key() == device_key.public_key()
    assert ldevid.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "ID-1"
    ldevid.verify_directly_issued_by(served.fleet.issuing.certificate)

    # The same IDevID cannot enroll twice, and an IDevID is no key to the device API.
    status, text = _curl_enroll(
        served.url, served.root_ca, cert_path, key_path, make_csr("ID-1")[1], tmp_path
    )
    assert status == 403 and b"already used" in text
    with served.client(cert_path, key_path) as client:
        refused = client.post("/device/v1/checkin", json={})
    assert refused.status_code == 403 and "not issued by this fleet" in refused.text

    # A serial the batch does not list, and a CSR naming another device.
    other_cert, other_key = maker.idevid(tmp_path / "ID-9", "ID-9")
    status, text = _curl_enroll(
        served.url, served.root_ca, other_cert, other_key, make_csr("ID-9")[1], tmp_path
    )
    assert status == 403 and b"not authorized by an open batch" in text
    id2_cert, id2_key = maker.idevid(tmp_path / "ID-2", "ID-2")
    status, text = _curl_enroll(
        served.url, served.root_ca, id2_cert, id2_key, make_csr("ID-1")[1], tmp_path
    )
    assert status == 403 and b"authorized for device 'ID-2'" in text
    with served.api(officer.token) as api:
        actions = [
            (e["action"], e["outcome"], e["details"].get("via"))
            for e in api.get("/audit", params={"limit": 1000}).json()
        ]
    assert ("cert.issue", "ok", "est.idevid") in actions
    assert sum(1 for a in actions if a[:2] == ("est.enroll", "refused")) >= 3


def test_unregistered_manufacturer_fails_the_handshake(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    _register(served, officer, Manufacturer.create("Registered CA"), ["ID-5"])
    rogue = Manufacturer.create("Registered CA")  # same name, another key
    cert_path, key_path = rogue.idevid(tmp_path, "ID-5")
    with served.client(cert_path, key_path) as client, pytest.raises(httpx.TransportError):
        client.post(
            "/.well-known/est/simpleenroll",
            content=base64.encodebytes(make_csr("ID-5")[1]),
            headers={"Content-Type": "application/pkcs10"},
        )


def test_a_restarted_server_still_trusts_registered_manufacturers(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    maker = Manufacturer.create("Acme Restart CA")
    _register(served, officer, maker, ["ID-7"])
    cert_path, key_path = maker.idevid(tmp_path, "ID-7")
    port = free_port()
    with EmbeddedServer(served.fleet, served.database, Listen("127.0.0.1", port)):
        status, _ = _curl_enroll(f"https://127.0.0.1:{port}", served.root_ca, cert_path, key_path,
                                 make_csr("ID-7")[1], tmp_path)  # fmt: skip
    assert status == 200


def test_a_non_ca_certificate_cannot_be_registered(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    maker = Manufacturer.create("Acme CA")
    leaf_path, _ = maker.idevid(tmp_path, "X-1")
    cases = ((leaf_path.read_text(), "not a CA certificate"), ("garbage", "not a PEM"))
    with served.api(officer.token) as api:
        for pem, fragment in cases:
            batch = {"name": "b", "manufacturer": "acme", "model": "gw", "serials": ["X-1"]}
            response = api.post("/batches", json={**batch, "idevid_ca_pem": pem})
            assert response.status_code == 400, response.text
            assert fragment in response.text


def test_several_batches_of_one_manufacturer(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    """A second purchase order with the same manufacturer CA works; a closed one does not."""
    maker = Manufacturer.create("Acme Two Orders CA")
    first = _register(served, officer, maker, ["PO1-1"])
    _register(served, officer, maker, ["PO2-1"])
    cert_path, key_path = maker.idevid(tmp_path / "PO2-1", "PO2-1")
    status, _ = _curl_enroll(
        served.url, served.root_ca, cert_path, key_path, make_csr("PO2-1")[1], tmp_path
    )
    assert status == 200
    with served.api(officer.token) as api:
        assert api.post(f"/batches/{first['id']}/close").status_code == 200
    cert_path, key_path = maker.idevid(tmp_path / "PO1-1", "PO1-1")
    status, text = _curl_enroll(
        served.url, served.root_ca, cert_path, key_path, make_csr("PO1-1")[1], tmp_path
    )
    assert status == 403 and b"not authorized by an open batch" in text


def test_concurrent_idevid_enrollments_take_different_quota_slots(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    maker = Manufacturer.create("Acme Quota CA")
    with served.api(officer.token) as api:
        response = api.post("/batches", json={"name": "q", "manufacturer": "acme", "model": "gw",
                                              "quota": 12, "idevid_ca_pem": maker.pem})  # fmt: skip
    assert response.status_code == 201

    def enroll(n: int) -> int:
        serial = f"Q-{n}"
        cert_path, key_path = maker.idevid(tmp_path / serial, serial)
        with served.client(cert_path, key_path) as client:
            return client.post(
                "/.well-known/est/simpleenroll",
                content=base64.encodebytes(make_csr(serial)[1]),
                headers={"Content-Type": "application/pkcs10"},
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(enroll, range(8)))
    assert statuses == [200] * 8

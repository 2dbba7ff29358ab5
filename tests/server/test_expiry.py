"""Expired device certificates: refused by the TLS handshake, and by the service check
behind it (tested with the clock moved past the certificate's end)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from garrison.identity.devices import DeviceRefused, authenticate_device
from garrison.pki.profile import DeviceProfile, issue_device_certificate
from tests.conftest import Officer, RunningFleet, create_batch, make_csr


def _write(
    directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _enroll(
    served: RunningFleet, officer: Officer, serial: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    batch = create_batch(served, officer, serials=[serial])
    token = batch["tokens"][0]["token"]  # type: ignore[index]
    key, der = make_csr(serial)
    with served.client() as client:
        response = client.post(
            "/.well-known/est/simpleenroll",
            content=base64.encodebytes(der),
            headers={"Content-Type": "application/pkcs10"},
            auth=(serial, token),
        )
    assert response.status_code == 200, response.text
    return key, pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))[0]


def test_expired_certificate_fails_the_tls_handshake(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    key, good = _enroll(served, officer, "EXP-1")
    with served.client(*_write(tmp_path, key, good)) as client:
        assert client.post("/device/v1/checkin", json={}).status_code == 200
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    profile = DeviceProfile(dt.timedelta(days=1), "https://x/crl", "https://x/ocsp")
    expired = issue_device_certificate(
        served.fleet.issuing, key.public_key(), "EXP-1", profile, past
    )
    (tmp_path / "old").mkdir()
    with (
        served.client(*_write(tmp_path / "old", key, expired)) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post("/device/v1/checkin", json={})


def test_service_refuses_a_certificate_past_its_end(served: RunningFleet, officer: Officer) -> None:
    _, cert = _enroll(served, officer, "EXP-2")
    der = cert.public_bytes(serialization.Encoding.DER)
    with served.database.read() as conn:
        assert authenticate_device(conn, der, dt.datetime.now(dt.UTC)).serial == "EXP-2"
        after = cert.not_valid_after_utc + dt.timedelta(seconds=1)
        with pytest.raises(DeviceRefused, match="expired"):
            authenticate_device(conn, der, after)

"""A fleet for the console to show: devices enrolled through real EST with a factory token,
check-ins with an inventory over mutual TLS, and releases published by a release manager."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from securesystemslib.signer import CryptoSigner

from garrison.updates.offline import configure_release_managers
from tests.conftest import Officer, RunningFleet, create_batch, make_csr


@dataclass(frozen=True)
class Device:
    serial: str
    model: str
    pem: Path  # certificate and key, for mutual TLS


def enroll_devices(
    served: RunningFleet, officer: Officer, serials: list[str], model: str, directory: Path
) -> list[Device]:
    """Enroll ``serials`` (of hardware ``model``) through EST with one factory batch."""
    batch = create_batch(served, officer, serials=serials, model=model, name=f"{model} batch")
    tokens: list[dict[str, Any]] = batch["tokens"]  # type: ignore[assignment]
    directory.mkdir(parents=True, exist_ok=True)
    devices = []
    with served.client() as client:
        for entry in tokens:
            serial = entry["serial"]
            key, der = make_csr(serial)
            response = client.post(
                "/.well-known/est/simpleenroll",
                content=base64.encodebytes(der),
                headers={"Content-Type": "application/pkcs10"},
                auth=(serial, entry["token"]),
            )
            assert response.status_code == 200, response.text
            cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))[0]
            pem = directory / f"{serial}.pem"
            pem.write_bytes(
                cert.public_bytes(serialization.Encoding.PEM)
                + key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            devices.append(Device(serial, model, pem))
    return devices


def inventory(device: Device, firmware: str, apps: dict[str, str] | None = None) -> dict[str, Any]:
    """An inventory as the agent reports it (docs/fleet.md)."""
    return {
        "serial": device.serial,
        "hardware": device.model,
        "firmware": firmware,
        "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
        "apps": apps or {},
        "uptime_seconds": 86_400,
    }


def check_in(served: RunningFleet, device: Device, body: dict[str, Any]) -> dict[str, Any]:
    """One check-in of ``device`` over mutual TLS; the control plane's answer."""
    with served.client(device.pem) as client:
        response = client.post("/device/v1/checkin", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


class Publisher:
    """One release manager (threshold 1, its key made here) who publishes releases."""

    def __init__(self, served: RunningFleet, name: str = "rita") -> None:
        self.served = served
        self.signer = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
        configure_release_managers(
            served.fleet, served.database, [self.signer.public_key], 1, dt.datetime.now(dt.UTC)
        )
        with served.api() as api:
            made = api.post("/principals", json={"name": name, "role": "release-manager"})
        assert made.status_code == 201, made.text
        self.token: str = made.json()["token"]

    def publish(
        self, name: str, version: str, hardware: list[str], install: str = "image"
    ) -> dict[str, Any]:
        """Upload an artifact, propose the release and sign it: published."""
        data = hashlib.sha256(f"{name} {version}".encode()).digest() * 512
        with self.served.api(self.token) as api:
            stored = api.put("/artifacts", content=data).json()
            created = api.post(
                "/releases",
                json={
                    "name": name,
                    "version": version,
                    "hardware": hardware,
                    "security_version": 1,
                    "install": install,
                    "health_checks": [],
                    "sha256": stored["sha256"],
                },
            )
            assert created.status_code == 201, created.text
            release: dict[str, Any] = created.json()
            payload = api.get(f"/releases/{release['id']}/payload").content
            signature = self.signer.sign(payload)
            signed = api.post(
                f"/releases/{release['id']}/signatures",
                json={"keyid": signature.keyid, "signature": signature.signature},
            )
        assert signed.status_code == 200 and signed.json()["state"] == "published", signed.text
        published: dict[str, Any] = signed.json()
        return published

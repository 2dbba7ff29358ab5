"""Devices for the console to show: enrolled through real EST with a factory token, then
checking in with an inventory over mutual TLS. They do not run the agent's cycle: what the
console shows of them stays put while a test looks (the screenshots use :mod:`garrison.sim`
for a fleet that moves)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

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

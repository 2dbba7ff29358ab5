"""A served fleet for the fleet-model tests: one per backend per test module.

It has an operator ``otto`` (fleet.manage), an auditor ``aude`` (reads only), a release
manager ``rm`` whose releases publish at once (threshold 1), and the officer and
manufacturer of :mod:`tests.server.conftest`. Devices enroll over real EST with a fresh key
and talk to the device API over real mutual TLS.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from securesystemslib.signer import CryptoSigner
from sqlalchemy import Table, select

from garrison.updates.offline import configure_release_managers
from tests.conftest import make_csr
from tests.server.conftest import SharedFleet, shared_fleet


@dataclass
class Device:
    serial: str
    model: str
    cert: Path
    key: Path

    def inventory(self, **fields: Any) -> dict[str, Any]:
        """A valid inventory of this device; ``fields`` override."""
        doc: dict[str, Any] = {
            "serial": self.serial,
            "hardware": self.model,
            "firmware": "1.0.0",
            "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
            "apps": {},
            "uptime_seconds": 100,
        }
        doc.update(fields)
        return doc


@dataclass
class World:
    """A served fleet with principals for every role the fleet model cares about."""

    shared: SharedFleet
    tmp: Path
    operator: str
    auditor: str
    release_manager: str
    signer: CryptoSigner
    _n: Iterator[int] = field(default_factory=itertools.count)

    @property
    def fleet(self) -> Any:
        return self.shared.served

    def unique(self, prefix: str) -> str:
        return self.shared.unique(prefix)

    def api(self, token: str | None = None) -> httpx.Client:
        return self.fleet.api(token or self.operator)

    def enroll(self, model: str = "gw-1", serial: str | None = None) -> Device:
        """A device of ``model`` enrolled over EST, with its certificate and key on disk."""
        serial = serial or self.unique("FL")
        batch = self.shared.batch(serials=[serial], model=model)
        key, der = make_csr(serial)
        with self.fleet.client() as client:
            response = client.post(
                "/.well-known/est/simpleenroll",
                content=base64.encodebytes(der),
                headers={"Content-Type": "application/pkcs10"},
                auth=(serial, batch.token(serial)),
            )
        assert response.status_code == 200, response.text
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))[0]
        directory = self.tmp / serial
        directory.mkdir(parents=True)
        cert_path, key_path = directory / "cert.pem", directory / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Device(serial, model, cert_path, key_path)

    def device_client(self, device: Device) -> httpx.Client:
        return self.fleet.client(device.cert, device.key)

    def checkin(self, device: Device, **fields: Any) -> httpx.Response:
        """Check ``device`` in with its inventory (``fields`` override inventory fields)."""
        with self.device_client(device) as client:
            return client.post(
                "/device/v1/checkin",
                json={"agent_version": "0.4.0", "inventory": device.inventory(**fields)},
            )

    def publish(
        self,
        name: str,
        version: str,
        *,
        hardware: tuple[str, ...] = ("gw-1",),
        install: str = "image",
    ) -> dict[str, Any]:
        """Upload, propose and sign (threshold 1): a published release."""
        data = hashlib.sha256(f"{name} {version} {install}".encode()).digest() * 64
        with self.fleet.api(self.release_manager) as api:
            stored = api.put("/artifacts", content=data).json()
            created = api.post(
                "/releases",
                json={
                    "name": name,
                    "version": version,
                    "hardware": list(hardware),
                    "security_version": 0,
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
            assert signed.status_code == 200 and signed.json()["state"] == "published"
        return release

    def rows(self, *tables: Table) -> list[list[tuple[Any, ...]]]:
        """Every row of ``tables``, sorted: to show that a refusal changed nothing."""
        with self.fleet.database.read() as conn:
            return [sorted(tuple(r) for r in conn.execute(select(t))) for t in tables]


def make_world(shared: SharedFleet, tmp: Path) -> World:
    signer = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
    served = shared.served
    configure_release_managers(
        served.fleet, served.database, [signer.public_key], 1, dt.datetime.now(dt.UTC)
    )
    tokens = {}
    with served.api() as api:
        for name, role in (("otto", "operator"), ("aude", "auditor"), ("rm", "release-manager")):
            made = api.post("/principals", json={"name": name, "role": role})
            assert made.status_code == 201, made.text
            tokens[name] = made.json()["token"]
    return World(shared, tmp, tokens["otto"], tokens["aude"], tokens["rm"], signer)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One served fleet per backend for the test module that asks for it."""
    directory = tmp_path_factory.mktemp(request.param)
    with shared_fleet(request.param, directory) as shared:
        yield make_world(shared, directory / "devices")

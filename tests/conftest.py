"""Shared fixtures: a real fleet on SQLite or PostgreSQL, served over real HTTPS.

Every test that takes ``db_url`` runs once per backend. PostgreSQL is the server at
127.0.0.1:5432 (``GARRISON_TEST_PG_URL`` overrides); each test gets a fresh database.
Where no PostgreSQL answers, those runs skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from garrison.identity.fleet import Fleet, init_fleet, load_fleet
from garrison.server.embedded import EmbeddedServer, free_port
from garrison.server.run import Listen
from garrison.settings import Settings
from garrison.store.database import Database

pytest_plugins = ["tests.conftest_softhsm"]

PG_URL = os.environ.get("GARRISON_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'garrison.db'}"
        return
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(
                "PostgreSQL is not reachable at 127.0.0.1:5432, and CI must run these tests"
            )
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    import psycopg

    name = f"garrison_test_{secrets.token_hex(6)}"
    admin_dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_dsn.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Clock:
    """A settable clock for the services under test."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class RunningFleet:
    """A fleet with its database and, when served, its URL and admin token."""

    fleet: Fleet
    database: Database
    admin_token: str
    url: str = ""

    @property
    def root_ca(self) -> Path:
        return self.fleet.paths.root_ca

    def api(self, token: str | None = None) -> httpx.Client:
        import ssl

        return httpx.Client(
            base_url=self.url + "/api/v1",
            verify=ssl.create_default_context(cafile=str(self.root_ca)),
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
        )

    def client(self, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
        """An HTTPS client pinned to the fleet root, optionally presenting a certificate."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.root_ca))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key else None)
        return httpx.Client(base_url=self.url, verify=context, timeout=30)


def make_fleet(data_dir: Path, db_url: str, port: int | None = None) -> RunningFleet:
    port = port or free_port()
    settings = Settings(
        organization="Test Fleet",
        public_url=f"https://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        database_url=db_url,
    )
    token = init_fleet(data_dir, settings, dt.datetime.now(dt.UTC))
    fleet = load_fleet(data_dir)
    database = Database(db_url)
    database.migrate()
    return RunningFleet(fleet, database, token, f"https://127.0.0.1:{port}")


@pytest.fixture
def fleet(tmp_path: Path, db_url: str) -> Iterator[RunningFleet]:
    """A freshly initialized fleet (not served)."""
    running = make_fleet(tmp_path / "fleet", db_url)
    yield running
    running.database.dispose()


@pytest.fixture
def served(fleet: RunningFleet) -> Iterator[RunningFleet]:
    """The fleet, served over HTTPS on a free loopback port."""
    port = int(fleet.url.rsplit(":", 1)[1])
    with EmbeddedServer(fleet.fleet, fleet.database, Listen("127.0.0.1", port)):
        yield fleet


@dataclass
class Officer:
    """A security officer and a manufacturer principal on a served fleet."""

    token: str
    manufacturer_token: str


@pytest.fixture
def officer(served: RunningFleet) -> Officer:
    with served.api() as api:
        sec = api.post("/principals", json={"name": "sofia", "role": "security-officer"})
        man = api.post("/principals", json={"name": "acme", "role": "manufacturer"})
    assert sec.status_code == 201 and man.status_code == 201
    return Officer(sec.json()["token"], man.json()["token"])


def create_batch(served: RunningFleet, officer: Officer, **fields: object) -> dict[str, object]:
    """Create a batch through the API (defaults: 3 serials SN-1..SN-3) and return its JSON."""
    body: dict[str, object] = {
        "name": "test batch",
        "manufacturer": "acme",
        "model": "gw-1",
        "serials": ["SN-1", "SN-2", "SN-3"],
    }
    body.update(fields)
    with served.api(officer.token) as api:
        response = api.post("/batches", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def make_csr(
    serial: str,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    ca: bool = False,
    extra_dns: str | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A DER CSR for ``serial`` (optionally asking for CA:TRUE or an extra DNS name)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)])
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if extra_dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(extra_dns)]), False
        )
    csr = builder.sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)

"""Shared fixtures: a real fleet on SQLite or PostgreSQL, served over real HTTPS.

Every test that takes ``db_url`` runs once per backend. PostgreSQL is the server at
127.0.0.1:5432 (``GARRISON_TEST_PG_URL`` overrides); each test gets a fresh database.
Where no PostgreSQL answers, those runs skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A fresh, empty database URL: ``sqlite`` in ``directory``, or a new ``postgresql``
    database on ``PG_URL``'s server, dropped (even if connected) on the way out. Where
    PostgreSQL does not answer, the test skips, except under CI (``CI`` set), where it fails.
    """
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'garrison.db'}"
        return
    import psycopg

    name = f"garrison_test_{secrets.token_hex(6)}"
    admin_dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable, and CI must run these tests: {exc}")
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite in tmp_path, or a new PostgreSQL database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


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
    """A fleet with its database and admin token, to be served on a loopback ``port``."""

    fleet: Fleet
    database: Database
    admin_token: str
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def root_ca(self) -> Path:
        return self.fleet.paths.root_ca

    def serve(self) -> EmbeddedServer:
        """The control plane on ``port``, over HTTPS, for a ``with`` block."""
        return EmbeddedServer(self.fleet, self.database, Listen("127.0.0.1", self.port))

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


def make_fleet(
    data_dir: Path, db_url: str, *, port: int | None = None, **settings: Any
) -> RunningFleet:
    """A fleet initialized in ``data_dir`` on a migrated ``db_url``, for loopback ``port``
    (default: a free one); ``settings`` are further :class:`Settings` fields."""
    port = port or free_port()
    fields: dict[str, Any] = {
        "organization": "Test Fleet",
        "public_url": f"https://127.0.0.1:{port}",
        "listen": f"127.0.0.1:{port}",
        "database_url": db_url,
    }
    token = init_fleet(data_dir, Settings(**(fields | settings)), dt.datetime.now(dt.UTC))
    fleet = load_fleet(data_dir)
    database = Database(db_url)
    database.migrate()
    return RunningFleet(fleet, database, token, port)


@pytest.fixture
def fleet(tmp_path: Path, db_url: str) -> Iterator[RunningFleet]:
    """A freshly initialized fleet (not served)."""
    running = make_fleet(tmp_path / "fleet", db_url)
    yield running
    running.database.dispose()


@pytest.fixture
def served(fleet: RunningFleet) -> Iterator[RunningFleet]:
    """The fleet, served over HTTPS on a free loopback port."""
    with fleet.serve():
        yield fleet


@dataclass
class Officer:
    """A security officer and a manufacturer principal on a served fleet."""

    token: str
    manufacturer_token: str


def make_officer(served: RunningFleet) -> Officer:
    """Create ``sofia`` (security officer) and ``acme`` (manufacturer) with the admin token."""
    with served.api() as api:
        sec = api.post("/principals", json={"name": "sofia", "role": "security-officer"})
        man = api.post("/principals", json={"name": "acme", "role": "manufacturer"})
    assert sec.status_code == 201 and man.status_code == 201, (sec.text, man.text)
    return Officer(sec.json()["token"], man.json()["token"])


@pytest.fixture
def officer(served: RunningFleet) -> Officer:
    return make_officer(served)


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

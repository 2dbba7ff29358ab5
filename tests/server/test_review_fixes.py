"""Regression tests for defects found in review: each failed before its fix."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from typer.testing import CliRunner

from garrison.access.roles import Role
from garrison.cli.main import app
from garrison.errors import PolicyError
from garrison.identity import revocation
from garrison.identity.batches import BatchRequest, CreatedBatch, create_batch
from garrison.identity.certificates import serial_hex
from garrison.identity.devices import authenticate_device, check_in, revoke_device
from garrison.identity.enrollment import EnrollmentService
from garrison.identity.principals import create_principal
from garrison.store.tables import certificates
from tests.conftest import Officer, RunningFleet, make_csr

NOW = dt.datetime.now(dt.UTC)


def _service(fleet: RunningFleet) -> EnrollmentService:
    f = fleet.fleet
    return EnrollmentService(fleet.database, f.issuing, f.root_certificate, f.device_profile)


def _batch(fleet: RunningFleet, serials: list[str]) -> CreatedBatch:
    with fleet.database.write() as conn:
        create_principal(conn, "maker", Role.MANUFACTURER, NOW)
        return create_batch(conn, BatchRequest("b", "maker", "gw", serials, None, 30), NOW)


def _csr(serial: str) -> bytes:
    return base64.encodebytes(make_csr(serial)[1])


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_certificate_retired_mid_request_cannot_renew(fleet: RunningFleet) -> None:
    service = _service(fleet)
    token = _batch(fleet, ["R-1"]).tokens[0][1]
    c1 = service.enroll("R-1", token, _csr("R-1")).certificate
    with fleet.database.read() as conn:
        stale = authenticate_device(conn, _der(c1), NOW)  # authenticated before retirement
    c2 = service.reenroll(stale, _csr("R-1")).certificate
    with fleet.database.read() as conn:
        current = authenticate_device(conn, _der(c2), NOW)
    with fleet.database.write() as conn:
        assert check_in(conn, current, NOW)  # first use of C2 retires C1
    with pytest.raises(PolicyError, match="revoked or superseded meanwhile"):
        service.reenroll(stale, _csr("R-1"))
    with fleet.database.read() as conn:
        status = dict(conn.execute(select(certificates.c.serial_hex, certificates.c.status)).all())
    assert status[serial_hex(c2.serial_number)] == "valid"


def test_a_crl_signed_during_a_revocation_never_hides_it(
    fleet: RunningFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL only: on SQLite the process's writer lock serializes the two
    transactions whatever the CRL code does, so the race cannot happen there."""
    if fleet.database.dialect != "postgresql":
        pytest.skip("the race needs two concurrent write transactions (PostgreSQL)")
    service = _service(fleet)
    cert = service.enroll("C-1", _batch(fleet, ["C-1"]).tokens[0][1], _csr("C-1")).certificate
    real_build = revocation.build_crl
    building = threading.Event()

    def slow_build(*args: object, **kwargs: object) -> x509.CertificateRevocationList:
        crl = real_build(*args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread().name == "crl-refresh":
            building.set()
            time.sleep(0.5)  # a slow HSM signature while a revocation commits
        return crl

    monkeypatch.setattr(revocation, "build_crl", slow_build)

    def refresh() -> None:
        with fleet.database.write() as conn:
            revocation.publish_crl(conn, fleet.fleet.issuing, NOW)

    worker = threading.Thread(target=refresh, name="crl-refresh")
    worker.start()
    assert building.wait(5), "the concurrent CRL refresh never started"
    with fleet.database.write() as conn:
        revoke_device(conn, "C-1", "key-compromise", "principal:test", NOW)
        revocation.publish_crl(conn, fleet.fleet.issuing, NOW)
    worker.join()
    with fleet.database.read() as conn:
        stored = revocation.current_crl(conn, NOW)
    assert stored is not None
    crl = x509.load_der_x509_crl(stored)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def test_audit_text_from_anonymous_callers_is_not_markup(
    served: RunningFleet, officer: Officer
) -> None:
    with served.client() as client:
        client.post(
            "/.well-known/est/simpleenroll",
            content=_csr("X"),
            headers={"Content-Type": "application/pkcs10"},
            auth=("[/]", "gst_x"),
        )
    result = CliRunner().invoke(
        app,
        ["audit", "list", "--data-dir", str(served.fleet.paths.root), "--server", served.url,
         "--token", officer.token, "--limit", "1000"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 0, repr(result.exception)
    assert "factory:[/]" in result.output


def test_oversized_bodies_to_unknown_paths_are_refused_unaudited(
    served: RunningFleet, officer: Officer
) -> None:
    with served.client() as client:
        response = client.post("/nope/" + "a" * 200, content=b"x" * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413
    with served.api(officer.token) as api:
        entries = api.get("/audit", params={"limit": 1000}).json()
    assert not [e for e in entries if "nope" in e["action"] or "nope" in e["target"]]


def test_anonymous_est_bodies_are_capped_small(served: RunningFleet) -> None:
    """Without credentials the body is never read (401); with any credentials, a body past
    the CSR limit is refused as it streams in (413)."""
    big = b"A" * (128 * 1024)
    headers = {"Content-Type": "application/pkcs10"}
    with served.client() as client:
        anonymous = client.post("/.well-known/est/simpleenroll", content=big, headers=headers)
        guessing = client.post(
            "/.well-known/est/simpleenroll", content=big, headers=headers, auth=("SN-1", "gst_x")
        )
    assert anonymous.status_code == 401
    assert guessing.status_code == 413


def test_the_enrollment_writer_stops_with_its_server(fleet: RunningFleet, tmp_path: object) -> None:
    """Each served app runs one enrollment writer thread; stopping the server stops it."""
    from garrison.server.embedded import EmbeddedServer, free_port
    from garrison.server.run import Listen

    def writers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "garrison-enroll-writer")

    token = _batch(fleet, ["W-1"]).tokens[0][1]
    before = writers()
    port = free_port()
    with EmbeddedServer(fleet.fleet, fleet.database, Listen("127.0.0.1", port)):
        url = f"https://127.0.0.1:{port}"
        import ssl

        import httpx

        context = ssl.create_default_context(cafile=str(fleet.root_ca))
        with httpx.Client(base_url=url, verify=context) as client:
            response = client.post(
                "/.well-known/est/simpleenroll",
                content=_csr("W-1"),
                headers={"Content-Type": "application/pkcs10"},
                auth=("W-1", token),
            )
        assert response.status_code == 200
        assert writers() == before + 1
    deadline = time.monotonic() + 5
    while writers() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writers() == before


def test_a_stale_crl_is_signed_once_however_many_ask(served: RunningFleet) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from garrison.store.tables import crl_state

    with served.client() as client:
        assert client.get("/pki/crl").status_code == 200
    with served.database.write() as conn:
        revocation.invalidate_crl(conn)
        before = conn.execute(select(crl_state.c.crl_number)).scalar_one()

    def fetch(_: int) -> int:
        with served.client() as client:
            return client.get("/pki/crl").status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(fetch, range(6))) == [200] * 6
    with served.database.read() as conn:
        after = conn.execute(select(crl_state.c.crl_number)).scalar_one()
    assert after == before + 1

"""A whole fleet whose CA keys live in a real SoftHSM2 token: init, enroll, revoke, CRL, OCSP.

Nothing about the CA keys may exist in a file; every signature the control plane makes
(device certificates, CRL, OCSP) is made inside the token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from garrison.agent.agent import Agent
from garrison.agent.identity import AgentConfig, StateDir
from garrison.identity.fleet import pkcs11_key_refs
from garrison.keys.pkcs11 import Pkcs11EcKey
from tests.conftest import RunningFleet, create_batch, make_fleet, make_officer
from tests.conftest_softhsm import SoftHsmToken

pytestmark = pytest.mark.softhsm


@pytest.fixture
def hsm_fleet(
    tmp_path: Path,
    softhsm_token: SoftHsmToken,
    pkcs11_key_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningFleet]:
    monkeypatch.setenv("GARRISON_PKCS11_PIN", softhsm_token.pin)
    refs = pkcs11_key_refs(f"pkcs11:token={softhsm_token.token_label};object={pkcs11_key_label}")
    running = make_fleet(
        tmp_path / "fleet",
        f"sqlite:///{tmp_path / 'g.db'}",
        pkcs11_module=softhsm_token.module_path,
        **refs,
    )
    yield running
    running.database.dispose()


def test_ca_keys_never_touch_disk(hsm_fleet: RunningFleet) -> None:
    """Both CAs and all four TUF roles sign inside the token."""
    assert isinstance(hsm_fleet.fleet.issuing.key, Pkcs11EcKey)
    assert isinstance(hsm_fleet.fleet.timestamp_signer._private_key, Pkcs11EcKey)  # type: ignore[attr-defined]
    key_files = sorted(p.name for p in (hsm_fleet.fleet.paths.root / "keys").iterdir())
    assert key_files == ["server.key.pem"]  # only the TLS server key, encrypted
    root = hsm_fleet.fleet.root_certificate
    issuing = hsm_fleet.fleet.issuing.certificate
    issuing.verify_directly_issued_by(root)


def test_full_run_with_ca_in_softhsm(hsm_fleet: RunningFleet, tmp_path: Path) -> None:
    issuing = hsm_fleet.fleet.issuing.certificate
    with hsm_fleet.serve():
        officer = make_officer(hsm_fleet)
        batch = create_batch(hsm_fleet, officer, serials=["HSM-1", "HSM-2"])
        tokens = {t["serial"]: t["token"] for t in batch["tokens"]}  # type: ignore[attr-defined]
        agents = {}
        for serial, token in tokens.items():
            agent = Agent(StateDir(tmp_path / serial))
            config = AgentConfig(serial=serial, server_url=hsm_fleet.url)
            identity = agent.enroll(config, token, hsm_fleet.root_ca.read_bytes())
            identity.certificate.verify_directly_issued_by(issuing)
            assert agent.check_in().serial == serial
            agents[serial] = agent

        with hsm_fleet.api(officer.token) as api:
            assert api.post("/devices/HSM-2/revoke", json={"reason": "key-compromise"}).is_success
        with hsm_fleet.client() as client:
            crl = x509.load_der_x509_crl(client.get("/pki/crl").content)
            revoked_cert = agents["HSM-2"].state.current()
            assert revoked_cert is not None
            serial_number = revoked_cert.certificate.serial_number
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(revoked_cert.certificate, issuing, hashes.SHA256())
                .build()
            )
            answer = client.post(
                "/pki/ocsp",
                content=request.public_bytes(serialization.Encoding.DER),
                headers={"Content-Type": "application/ocsp-request"},
            )
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial_number) is not None
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    public_key = issuing.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )

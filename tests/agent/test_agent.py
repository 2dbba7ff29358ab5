"""The agent against a real control plane: enrollment, renewal, and renewal that fails midway."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from garrison.agent.agent import Agent, ChannelError
from garrison.agent.est_client import EnrollmentFailed
from garrison.agent.identity import AgentConfig, StateDir
from garrison.errors import ConfigError
from garrison.keys import SigningKey
from tests.conftest import Clock, Officer, RunningFleet, create_batch
from tests.conftest_softhsm import SoftHsmToken


def _enrolled(served: RunningFleet, officer: Officer, tmp_path: Path, clock: Clock) -> Agent:
    batch = create_batch(served, officer, serials=["AG-1"])
    token = batch["tokens"][0]["token"]  # type: ignore[index]
    agent = Agent(StateDir(tmp_path / "AG-1"), clock=clock)
    agent.enroll(
        AgentConfig(serial="AG-1", server_url=served.url), token, served.root_ca.read_bytes()
    )
    return agent


def test_enroll_then_check_in(served: RunningFleet, officer: Officer, tmp_path: Path) -> None:
    agent = _enrolled(served, officer, tmp_path, Clock())
    identity = agent.state.current()
    assert identity is not None and identity.generation == 1
    assert "ENCRYPTED PRIVATE KEY" in identity.key_path.read_text()
    assert identity.key_path.stat().st_mode & 0o077 == 0
    assert agent.check_in().certificate == format(identity.certificate.serial_number, "x")
    with pytest.raises(ConfigError, match="already holds an identity"):
        agent.enroll(agent.state.load_config(), "gst_x", served.root_ca.read_bytes())


def test_cycle_renews_when_due_and_retires_the_old_certificate(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    clock = Clock()
    agent = _enrolled(served, officer, tmp_path, clock)
    old = agent.state.current()
    assert old is not None
    agent.cycle()
    assert agent.state.current() == old  # not yet due
    clock.advance(dt.timedelta(days=60))  # 66 % of the 90-day lifetime has passed
    agent.cycle()
    new = agent.state.current()
    assert new is not None and new.generation == 2
    assert new.certificate.public_key() != old.certificate.public_key()
    # The server retired the old certificate at the new one's first use.
    with served.database.read() as conn:
        from sqlalchemy import select

        from garrison.store.tables import certificates

        rows = dict(conn.execute(select(certificates.c.serial_hex, certificates.c.status)).all())
    assert rows[format(old.certificate.serial_number, "x")] == "revoked"
    assert rows[format(new.certificate.serial_number, "x")] == "valid"


class RecordingStop(threading.Event):
    """A stop event whose ``wait`` returns at once, recording the delay asked for; it is set
    after ``waits`` waits, which ends the agent's loop."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits = waits
        self.delays: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.delays.append(timeout)
        if len(self.delays) >= self.waits:
            self.set()
        return self.is_set()


def test_run_waits_the_poll_interval_and_its_jitter_after_a_cycle(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    agent = _enrolled(served, officer, tmp_path, Clock())
    stop = RecordingStop(waits=2)
    agent.run(stop)
    answer = agent.check_in()
    poll, jitter = answer.poll_seconds, answer.jitter_seconds
    assert len(stop.delays) == 2
    assert all(poll - jitter <= delay <= poll + jitter for delay in stop.delays)


def test_run_backs_off_while_the_control_plane_is_down(
    served: RunningFleet,
    officer: Officer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = _enrolled(served, officer, tmp_path, Clock())
    config = agent.state.load_config()
    dead = AgentConfig(serial=config.serial, server_url="https://127.0.0.1:1")
    agent.state.save_config(dead, served.root_ca.read_bytes())
    stop = RecordingStop(waits=4)
    with caplog.at_level(logging.WARNING, logger="garrison.agent"):
        agent.run(stop)  # returns: every failure was caught, and the event ended the loop
    for attempt, delay in enumerate(stop.delays, start=1):  # 5 s doubling, jittered by half
        assert 5 * 2 ** (attempt - 1) / 2 <= delay <= 5 * 2 ** (attempt - 1)
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 4
    assert failures[0].startswith("agent cycle failed (attempt 1, retry in")
    assert "cannot reach the control plane" in failures[0]
    assert failures[3].startswith("agent cycle failed (attempt 4,")


def test_renewal_interrupted_before_commit_keeps_the_working_identity(
    served: RunningFleet, officer: Officer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _enrolled(served, officer, tmp_path, Clock())
    before = agent.state.current()

    def power_cut(*_args: object) -> None:
        raise OSError("simulated power cut while writing the new certificate")

    with monkeypatch.context() as patch:
        patch.setattr(StateDir, "commit", power_cut)
        with pytest.raises(OSError, match="power cut"):
            agent.renew()
    # The server issued a certificate the device never stored; the old one keeps working.
    assert agent.state.current() == before
    assert agent.check_in().serial == "AG-1"
    # The next renewal succeeds and supersedes the orphaned certificate too.
    renewed = agent.renew()
    assert renewed.generation == 2
    with served.database.read() as conn:
        from sqlalchemy import func, select

        from garrison.store.tables import certificates

        valid = conn.execute(
            select(func.count()).where(certificates.c.status == "valid")
        ).scalar_one()
    assert valid == 1


def test_renewal_with_the_server_down_changes_nothing(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    agent = _enrolled(served, officer, tmp_path, Clock())
    before = agent.state.current()
    config = agent.state.load_config()
    dead = AgentConfig(serial=config.serial, server_url="https://127.0.0.1:1")
    agent.state.save_config(dead, served.root_ca.read_bytes())
    with pytest.raises(EnrollmentFailed, match="cannot reach"):
        agent.renew()
    with pytest.raises(ChannelError, match="cannot reach"):
        agent.check_in()
    agent.state.save_config(config, served.root_ca.read_bytes())
    assert agent.state.current() == before
    assert agent.check_in().serial == "AG-1"


def _another_root() -> bytes:
    """A self-signed CA certificate of no fleet we serve (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another Fleet Root CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_enrollment_refuses_a_server_outside_the_pinned_fleet(
    served: RunningFleet, officer: Officer, tmp_path: Path
) -> None:
    batch = create_batch(served, officer, serials=["AG-2"])
    token = batch["tokens"][0]["token"]  # type: ignore[index]
    agent = Agent(StateDir(tmp_path / "AG-2"))
    config = AgentConfig(serial="AG-2", server_url=served.url)
    with pytest.raises(EnrollmentFailed, match="certificate verify failed"):
        agent.enroll(config, token, _another_root())
    assert agent.state.current() is None
    # Refused in the TLS handshake, before the token was sent: it still enrolls.
    assert agent.enroll(config, token, served.root_ca.read_bytes()).generation == 1


@dataclass(frozen=True)
class TokenDevice:
    """A device whose key store is a PKCS#11 token, with its enrollment token."""

    agent: Agent
    config: AgentConfig
    token: str


@pytest.fixture
def token_device(
    served: RunningFleet,
    officer: Officer,
    tmp_path: Path,
    softhsm_token: SoftHsmToken,
    pkcs11_key_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> TokenDevice:
    monkeypatch.setenv("GARRISON_PKCS11_PIN", softhsm_token.pin)
    batch = create_batch(served, officer, serials=["HW-1"])
    config = AgentConfig(
        serial="HW-1",
        server_url=served.url,
        key_store=f"pkcs11:token={softhsm_token.token_label};object={pkcs11_key_label}",
        pkcs11_module=softhsm_token.module_path,
    )
    token: str = batch["tokens"][0]["token"]  # type: ignore[index]
    return TokenDevice(Agent(StateDir(tmp_path / "HW-1")), config, token)


@pytest.mark.softhsm
def test_device_key_in_a_pkcs11_token(served: RunningFleet, token_device: TokenDevice) -> None:
    agent = token_device.agent
    identity = agent.enroll(token_device.config, token_device.token, served.root_ca.read_bytes())
    assert identity.key_ref.startswith("pkcs11:") and not identity.key_path.exists()
    with pytest.raises(ConfigError, match="PKCS#11"):
        agent.check_in()


@pytest.mark.softhsm
def test_a_failed_pkcs11_enrollment_can_be_retried(
    served: RunningFleet, token_device: TokenDevice
) -> None:
    agent, config = token_device.agent, token_device.config
    with pytest.raises(EnrollmentFailed, match="unknown enrollment token"):
        agent.enroll(config, "gst_wrong", served.root_ca.read_bytes())
    identity = agent.enroll(config, token_device.token, served.root_ca.read_bytes())
    assert identity.generation == 1 and identity.key_ref.startswith("pkcs11:")


def _token_keys(softhsm_token: SoftHsmToken, prefix: str) -> list[str]:
    """Labels of the public key objects in the token whose label starts with ``prefix``."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    token = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    with token.open() as session:  # public objects need no login
        labels = [
            o[Attribute.LABEL]
            for o in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        ]
    return sorted(label for label in labels if label.startswith(prefix))


@pytest.mark.softhsm
def test_a_refused_pkcs11_renewal_leaves_no_key_in_the_token(
    served: RunningFleet,
    token_device: TokenDevice,
    softhsm_token: SoftHsmToken,
    pkcs11_key_label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = token_device.agent
    opened = []
    new_key = StateDir.new_key

    def recording(state: StateDir, *args: Any) -> tuple[str, SigningKey]:
        ref, key = new_key(state, *args)
        opened.append(key)
        return ref, key

    monkeypatch.setattr(StateDir, "new_key", recording)
    agent.enroll(token_device.config, token_device.token, served.root_ca.read_bytes())
    assert len(opened) == 1 and "closed" in repr(opened[0])  # the token login is released
    enrolled = _token_keys(softhsm_token, pkcs11_key_label)
    assert len(enrolled) == 1
    for _ in range(3):  # the agent retries; every attempt is refused before a key is made
        with pytest.raises(ConfigError, match="PKCS#11"):
            agent.renew()
    assert _token_keys(softhsm_token, pkcs11_key_label) == enrolled
    assert not (agent.state.root / "gen-2").exists()

"""The agent's work: first enrollment, check-in over mTLS, automatic renewal."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import httpx
from cryptography import x509

from garrison import __version__
from garrison.agent.channel import device_client
from garrison.agent.est_client import build_csr, enroll, fetch_cacerts, reenroll
from garrison.agent.identity import AgentConfig, Identity, StateDir, verify_issued
from garrison.agent.renewal import backoff, renewal_due
from garrison.clock import Clock, utc_now
from garrison.errors import ConfigError, GarrisonError
from garrison.factory.policy import check_serial
from garrison.keys import SigningKey
from garrison.keys.pkcs11 import closing_key

log = logging.getLogger("garrison.agent")


class ChannelError(GarrisonError):
    """The control plane refused the device or could not be reached."""


@dataclass(frozen=True)
class CheckInResult:
    serial: str
    certificate: str
    poll_seconds: int


class Agent:
    """One device's agent, working from its state directory."""

    def __init__(self, state: StateDir, clock: Clock = utc_now, timeout: float = 30.0) -> None:
        self.state = state
        self.clock = clock
        self.timeout = timeout

    # -- enrollment --------------------------------------------------------------------

    def enroll(self, config: AgentConfig, token: str, fleet_root_pem: bytes) -> Identity:
        """First enrollment with a factory token. The key is generated here and stays here."""
        check_serial(config.serial)
        if self.state.current() is not None:
            raise ConfigError(
                f"{self.state.root} already holds an identity for {config.serial}",
                hint="a device enrolls once; renewal is automatic ('garrison agent renew')",
            )
        self.state.save_config(config, fleet_root_pem)
        if config.key_store == "file":
            self.state.ensure_passphrase()
        with self._client(config) as client:
            key_ref, key = self.state.new_key(config, 1)
            with closing_key(key):
                issued = enroll(client, config.serial, token, build_csr(key, config.serial))
                chain = self._verified_chain(client, issued[0], key)
        return self.state.commit(1, key_ref, chain)

    def _verified_chain(
        self, client: httpx.Client, leaf: x509.Certificate, key: SigningKey
    ) -> list[x509.Certificate]:
        root = self.state.fleet_root()
        intermediates = [c for c in fetch_cacerts(client) if c != root]
        verify_issued(leaf, intermediates, root, key)
        return [leaf, *intermediates]

    # -- the channel -------------------------------------------------------------------

    def _client(self, config: AgentConfig, identity: Identity | None = None) -> httpx.Client:
        return device_client(self.state, config, identity, timeout=self.timeout)

    def check_in(self) -> CheckInResult:
        """Tell the control plane we are alive, over mTLS with the current identity."""
        config = self.state.load_config()
        identity = self.state.require_current()
        with self._client(config, identity) as client:
            try:
                response = client.post("/device/v1/checkin", json={"agent_version": __version__})
            except httpx.HTTPError as exc:
                raise ChannelError(f"cannot reach the control plane: {exc}") from exc
        if response.status_code != 200:
            raise ChannelError(f"check-in refused ({response.status_code}): {response.text[:300]}")
        body = response.json()
        return CheckInResult(body["serial"], body["certificate"], int(body["poll_seconds"]))

    # -- renewal -----------------------------------------------------------------------

    def renewal_due(self) -> bool:
        config = self.state.load_config()
        cert = self.state.require_current().certificate
        return renewal_due(
            cert.not_valid_before_utc, cert.not_valid_after_utc, self.clock(), config.renew_fraction
        )

    def renew(self) -> Identity:
        """Re-enroll with a new key. The current identity stays active until the new one is
        complete on disk; an interruption at any point leaves a working identity."""
        config = self.state.load_config()
        current = self.state.require_current()
        generation = current.generation + 1
        # The channel first: an identity it refuses (a key in a PKCS#11 token) must not cost
        # a new key object in the token on every attempt.
        with self._client(config, current) as client:
            key_ref, key = self.state.new_key(config, generation)
            with closing_key(key):
                issued = reenroll(client, build_csr(key, config.serial))
                chain = self._verified_chain(client, issued[0], key)
        identity = self.state.commit(generation, key_ref, chain)
        self.check_in()  # first use of the new certificate retires the old one server-side
        self.state.prune(keep=generation)
        return identity

    # -- the daemon --------------------------------------------------------------------

    def cycle(self) -> CheckInResult:
        """One round of the daemon: renew the identity if it is due, then check in."""
        if self.renewal_due():
            identity = self.renew()
            log.info("renewed identity: certificate %x", identity.certificate.serial_number)
        return self.check_in()

    def run(self, stop: threading.Event) -> None:
        """Run :meth:`cycle` every poll interval until ``stop`` is set; back off on failures."""
        attempt = 0
        while not stop.is_set():
            try:
                result = self.cycle()
                attempt, wait = 0, float(result.poll_seconds)
            except GarrisonError as exc:
                attempt += 1
                wait = backoff(attempt).total_seconds()
                log.warning(
                    "agent cycle failed (attempt %d, retry in %.0fs): %s", attempt, wait, exc
                )
            stop.wait(wait)

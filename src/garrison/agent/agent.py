"""The agent's work: first enrollment, automatic renewal, and the daemon's cycle.

One :meth:`Agent.cycle`, over one kept-alive mutual-TLS connection:

1. renew the identity if it is due (a renewal checks in with the new certificate);
2. finish what an interruption left (a pending trial; the outcome of an install);
3. check in — only when the inventory changed (:func:`.inventory.inventory_digest`), or
   as a heartbeat every :data:`HEARTBEAT_POLLS` cycles;
4. poll the directive with ``If-None-Match`` (skipped when the check-in's answer names the
   ETag already kept): an idle cycle is one ``GET`` answered ``304``;
5. converge: :func:`.converge.plan` decides, :class:`.executor.Converger` carries it out
   (firmware and apps TUF-verified, installs only in the maintenance window);
6. carry out an operator's command (a rollback) — only when the directive names one
   (``command``; or every cycle from a control plane that serves no directive): then
   ``GET /device/v1/commands`` and its outcome; send the queued
   reports, and check in again if the device changed;
7. wait ``poll_seconds`` ± a uniformly random ``jitter_seconds`` (the server's numbers).

An error of a step of 2, 5 or 6 does not skip the rest: what it stopped is recorded, the
command, the reports and the check-in still happen, and the cycle then raises the first
error (the daemon backs off). The device's storage failing anywhere (``OSError``) is
raised as :class:`.executor.StorageFailed`; :meth:`Agent.run` survives every
:class:`GarrisonError`.

The agent keeps its directive and record in ``STATE/fleet`` (:mod:`.fleet_state`).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cryptography import x509

from garrison import __version__
from garrison.agent.channel import device_client
from garrison.agent.converge import Plan, plan
from garrison.agent.directive import NO_DIRECTIVE, Directive
from garrison.agent.est_client import build_csr, enroll, fetch_cacerts, reenroll
from garrison.agent.executor import Converger, Outcome, storage_failed
from garrison.agent.fleet_channel import ChannelError, CheckInResult, FleetChannel
from garrison.agent.fleet_state import FleetFiles, Record
from garrison.agent.identity import AgentConfig, Identity, StateDir, verify_issued
from garrison.agent.inventory import (
    collect_inventory,
    host_uptime,
    inventory_digest,
    printable,
)
from garrison.agent.renewal import backoff, renewal_due
from garrison.clock import Clock, utc_now
from garrison.errors import ConfigError, GarrisonError
from garrison.factory.policy import check_serial
from garrison.keys import SigningKey
from garrison.keys.pkcs11 import closing_key
from garrison.updates.client import InstallResult, UpdateClient, run_operator_command
from garrison.updates.device_state import UpdateState
from garrison.updates.installer import Checkpoint, no_checkpoint

log = logging.getLogger("garrison.agent")

HEARTBEAT_POLLS = 12
MIN_WAIT_SECONDS = 1.0

__all__ = ["Agent", "ChannelError", "CheckInResult", "CycleResult"]


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did. ``check_in`` is None when nothing changed (no check-in was
    needed); ``directive_status`` is the directive poll's HTTP status (None when the
    check-in's answer showed the kept directive current); ``plan`` is None for an agent
    without a device; ``exchanges`` lists every HTTP exchange of the cycle (after a
    renewal), in order."""

    serial: str
    check_in: CheckInResult | None
    directive_status: int | None
    directive: Directive
    plan: Plan | None
    did: tuple[str, ...]
    command: InstallResult | None
    poll_seconds: int
    jitter_seconds: int
    exchanges: tuple[tuple[str, int], ...] = field(default=())


class Agent:
    """One device's agent, working from its state directory.

    ``rng`` draws the jitter of the poll interval; ``uptime`` reports the device's uptime
    (default: the host's, :func:`.inventory.host_uptime`); ``checkpoint`` is handed to the
    installers so tests can cut the power at each step. ``transport`` replaces the network
    under the device channel (tests that play a hostile control plane); without it every
    request goes over mutual TLS pinned to the fleet root.
    """

    def __init__(
        self,
        state: StateDir,
        clock: Clock = utc_now,
        timeout: float = 30.0,
        *,
        rng: random.Random | None = None,
        uptime: Callable[[], int] = host_uptime,
        checkpoint: Checkpoint = no_checkpoint,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.state = state
        self.transport = transport
        self.clock = clock
        self.timeout = timeout
        self.rng = rng if rng is not None else random.SystemRandom()
        self.uptime = uptime
        self.checkpoint = checkpoint
        self.files = FleetFiles(state.root)

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
        if self.transport is not None:
            return httpx.Client(
                base_url=config.server_url, transport=self.transport, timeout=self.timeout
            )
        return device_client(self.state, config, identity, timeout=self.timeout)

    def _updates(self, config: AgentConfig) -> UpdateState | None:
        """The device's update state, or None for an agent provisioned without a device
        or TUF root (it checks in, but has nothing to converge)."""
        updates = UpdateState.of(self.state, config)
        if not updates.initial_root_path.is_file() or not updates.device_dir.is_dir():
            return None
        try:
            updates.device()
        except ConfigError:
            return None
        return updates

    def inventory(self, record: Record | None = None) -> dict[str, object]:
        """The inventory this device reports now (:mod:`.inventory`)."""
        config = self.state.load_config()
        record = record if record is not None else self.files.load_record()
        updates = self._updates(config)
        device = None if updates is None else updates.device()
        return collect_inventory(
            config.serial,
            config.hardware,
            None if device is None else device.root,
            None if device is None else device.load_env(),
            record.last_update,
            self.uptime(),
        )

    def check_in(self) -> CheckInResult:
        """Tell the control plane we are alive and what we run (the inventory), over mTLS
        with the current identity."""
        config = self.state.load_config()
        identity = self.state.require_current()
        record = self.files.load_record()
        with self._client(config, identity) as http:
            result = self._check_in(FleetChannel(http), record)
        self.files.save_record(record)
        return result

    def _check_in(self, channel: FleetChannel, record: Record) -> CheckInResult:
        inventory = self.inventory(record)
        # a device that does not know its hardware model cannot name it (the control plane
        # checks it against the enrolled model): it checks in without an inventory
        known = inventory if inventory["hardware"] else None
        result = channel.check_in(__version__, known)
        record.inventory_digest = inventory_digest(inventory)
        record.polls_since_checkin = 0
        record.poll = [result.poll_seconds, result.jitter_seconds]
        return result

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

    def cycle(self) -> CycleResult:
        """One round of the daemon (see the module docstring). Raises what stopped it: the
        control plane unreachable, a malformed directive (not acted on), an update that
        could not proceed for now, the device's storage failing
        (:class:`.executor.StorageFailed`); what was done before is kept and reported."""
        try:
            return self._guarded_cycle()
        except OSError as exc:
            raise storage_failed(exc) from exc

    def _guarded_cycle(self) -> CycleResult:
        if self.renewal_due():
            identity = self.renew()
            log.info("renewed identity: certificate %x", identity.certificate.serial_number)
        config = self.state.load_config()
        identity = self.state.require_current()
        record = self.files.load_record()
        updates = self._updates(config)
        with self._client(config, identity) as http:
            channel = FleetChannel(http)
            before = record.last_cycle
            try:
                return self._cycle(channel, http, config, record, updates)
            except GarrisonError as exc:
                if record.last_cycle is before:  # stopped before the end recorded the cycle
                    at = self.clock().isoformat()
                    record.last_cycle = {"at": at, "did": [], "plan": [], "error": str(exc)}
                raise
            finally:
                self.files.save_record(record)

    def _cycle(
        self,
        channel: FleetChannel,
        http: httpx.Client,
        config: AgentConfig,
        record: Record,
        updates: UpdateState | None,
    ) -> CycleResult:
        converger = None
        notes: list[str] = []
        errors: list[GarrisonError] = []
        if updates is not None:
            converger = Converger(
                updates,
                record,
                lambda: UpdateClient.for_channel(
                    self.state, http, clock=self.clock, checkpoint=self.checkpoint
                ),
                clock=self.clock,
                save=self.files.save_record,
                flush=lambda: self._flush(channel, record),
                checkpoint=self.checkpoint,
            )
            try:
                notes += converger.recover()
            except GarrisonError as exc:  # nothing converges before the interruption is done
                errors.append(exc)
                notes.append(f"stopped: {exc}")
                converger = None

        checked = None
        inventory = self.inventory(record)
        due = record.polls_since_checkin + 1 >= HEARTBEAT_POLLS
        if inventory_digest(inventory) != record.inventory_digest or due:
            checked = self._check_in(channel, record)
        else:
            record.polls_since_checkin += 1

        directive, status = self._directive(channel, record, checked)

        outcome, planned = Outcome(), None
        if converger is not None:
            try:
                planned = plan(directive, converger.facts(), self.clock())
                converger.forget_downloads(_targets(directive))
                outcome = converger.run(planned)
                converger.confirm(directive.firmware)
            except GarrisonError as exc:
                outcome.error = outcome.error or exc
            except OSError as exc:
                outcome.error = outcome.error or storage_failed(exc)
        if outcome.error is not None:
            errors.append(outcome.error)
        command = None
        # Asked only when the directive names a command: an idle cycle is one request. A
        # control plane without directives (204/404: older than them) is asked every cycle.
        if directive.command is not None or status in (204, 404):
            try:
                command = run_operator_command(
                    http, UpdateState.of(self.state, config), self.checkpoint
                )
            except GarrisonError as exc:
                errors.append(exc)
                notes.append(f"operator command: {exc}")
        if command is not None:
            record.last_update = {
                "target": None,
                "outcome": command.outcome,
                "version": command.version,
                "event": printable(f"operator rollback: {command.event}"),
                "at": self.clock().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        self._flush(channel, record)
        if (outcome.changed or command is not None) and (
            inventory_digest(self.inventory(record)) != record.inventory_digest
        ):
            checked = self._check_in(channel, record)
        did = [*notes, *outcome.did]
        if command is not None:
            did.append(f"operator rollback: {command.outcome}, {command.version} runs")
        poll, jitter = record.poll
        record.last_cycle = {
            "at": self.clock().isoformat(),
            "directive": directive.etag,
            "plan": [] if planned is None else planned.describe(),
            "did": did,
            "error": "; ".join(str(error) for error in errors),
        }
        if errors:
            raise errors[0]
        return CycleResult(
            config.serial,
            checked,
            status,
            directive,
            planned,
            tuple(did),
            command,
            poll,
            jitter,
            tuple(channel.exchanges),
        )

    def _directive(
        self, channel: FleetChannel, record: Record, checked: CheckInResult | None
    ) -> tuple[Directive, int | None]:
        """The directive to follow and the poll's status (None: not polled, the check-in
        named the kept ETag). A new directive is kept on disk; the poll interval is the
        server's latest word."""
        kept = self.files.load_directive()
        if checked is not None and kept is not None and checked.directive_etag == kept.etag:
            return kept, None
        answer = channel.directive(None if kept is None else kept.etag)
        if answer.poll_seconds is not None and answer.jitter_seconds is not None:
            record.poll = [answer.poll_seconds, answer.jitter_seconds]
        if answer.directive is not None:
            self.files.save_directive(answer.directive)
            return answer.directive, answer.status
        if answer.status == 304 and kept is not None:
            if answer.poll_seconds is None:
                record.poll = [kept.poll_seconds, kept.jitter_seconds]
            return kept, answer.status
        self.files.drop_directive()  # none for this device (or a 304 for nothing kept)
        return NO_DIRECTIVE, answer.status

    @staticmethod
    def _flush(channel: FleetChannel, record: Record) -> None:
        """Send the queued reports in order; stop at the first that must wait."""
        while record.outbox:
            if channel.report(record.outbox[0]) == "later":
                return
            record.outbox.pop(0)

    def local_plan(self) -> tuple[Directive | None, Plan | None, Record]:
        """The kept directive, what the agent would do about it now (no network, nothing
        changed), and its record — for ``garrison agent status``."""
        config = self.state.load_config()
        record = self.files.load_record()
        directive = self.files.load_directive()
        updates = self._updates(config)
        if updates is None or directive is None:
            return directive, None, record
        converger = Converger(
            updates,
            record,
            lambda: UpdateClient.for_agent(self.state),
            clock=self.clock,
            save=lambda _record: None,
        )
        return directive, plan(directive, converger.facts(), self.clock()), record

    def wait_seconds(self, poll_seconds: int, jitter_seconds: int) -> float:
        """``poll_seconds`` ± a uniformly random ``jitter_seconds`` (at least 1 s)."""
        spread = self.rng.uniform(-jitter_seconds, jitter_seconds) if jitter_seconds else 0.0
        return max(MIN_WAIT_SECONDS, poll_seconds + spread)

    def run(self, stop: threading.Event) -> None:
        """Run :meth:`cycle` every poll interval (± jitter) until ``stop`` is set; back off
        on failures."""
        attempt = 0
        while not stop.is_set():
            try:
                result = self.cycle()
                attempt = 0
                wait = self.wait_seconds(result.poll_seconds, result.jitter_seconds)
            except GarrisonError as exc:
                attempt += 1
                wait = backoff(attempt).total_seconds()
                log.warning(
                    "agent cycle failed (attempt %d, retry in %.0fs): %s", attempt, wait, exc
                )
            stop.wait(wait)


def _targets(directive: Directive) -> set[str]:
    """Every target ``directive`` names."""
    named = {a.target for a in directive.apps or ()}
    if directive.firmware is not None:
        named.add(directive.firmware.target)
    return named

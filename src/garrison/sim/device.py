"""One simulated device on the wire: its mutual-TLS link and its agent cycle.

A cycle is the real agent's (:mod:`garrison.agent.agent`), on the device API of
docs/fleet.md:

1. ``POST /device/v1/checkin`` with the inventory when it changed, or as a heartbeat every
   :data:`.state.HEARTBEAT_POLLS` cycles;
2. ``GET /device/v1/directive`` with ``If-None-Match`` (skipped when the check-in's answer
   names the ETag already held): an idle cycle is one ``304``;
3. converge with the agent's planner: download, install (a simulated A/B install taking
   :attr:`Behaviour.install_seconds`, whose health check fails for the serials in
   :attr:`Behaviour.failing` and at :attr:`Behaviour.failure_rate`), apps;
4. when the directive names an operator command (``command``), ``GET /device/v1/commands``
   and the command's outcome;
5. send the queued reports (``POST /device/v1/report``), in order; check in again when the
   inventory changed.

Guarantees: the device's link keeps one TLS connection, reopened when the server closes
it (an idempotent request is retried once on a fresh connection); every answer is checked
(a malformed directive is not acted on); a 4xx to a report drops that report, anything
else keeps it for the next cycle, as the agent does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from garrison import __version__
from garrison.agent.converge import (
    ConfigureApp,
    DownloadApp,
    DownloadFirmware,
    Hold,
    InstallApp,
    InstallFirmware,
    RemoveApp,
    plan,
)
from garrison.agent.directive import DirectiveInvalid, parse_directive, parse_poll_header
from garrison.clock import Clock, utc_now
from garrison.errors import GarrisonError
from garrison.sim.http import HttpConnection, HttpProtocolError, HttpResponse, build_request
from garrison.sim.state import HEARTBEAT_POLLS, DeviceState
from garrison.updates import apps as app_files

log = logging.getLogger("garrison.sim")

CHECKIN_PATH = "/device/v1/checkin"
DIRECTIVE_PATH = "/device/v1/directive"
REPORT_PATH = "/device/v1/report"
COMMANDS_PATH = "/device/v1/commands"


class SimDeviceError(GarrisonError):
    """A simulated device could not complete a cycle (unreachable, refused, malformed)."""


@dataclass(frozen=True)
class Behaviour:
    """How the simulated devices behave: the knobs of one simulation."""

    install_seconds: float = 1.0
    download_seconds: float = 0.0
    failure_rate: float = 0.0
    failing: frozenset[str] = frozenset()
    poll_seconds: float | None = None  # None: the interval the control plane chooses
    jitter_seconds: float | None = None
    heartbeat_polls: int = HEARTBEAT_POLLS
    request_timeout: float = 60.0

    def healthy(self, serial: str, rng: random.Random) -> bool:
        """Whether an install on ``serial`` passes its health check this time."""
        if serial in self.failing:
            return False
        return not (self.failure_rate and rng.random() < self.failure_rate)


@dataclass
class Tally:
    """What a fleet of simulated devices did (shared by all of them; one event loop)."""

    requests: Counter[str] = field(default_factory=Counter)  # "GET /path 304"
    errors: Counter[str] = field(default_factory=Counter)
    committed: int = 0
    rolled_back: int = 0
    refused_reports: int = 0
    cycles: int = 0
    failed_cycles: int = 0

    def count(self, method: str, path: str, status: int) -> None:
        self.requests[f"{method} {path} {status}"] += 1


class DeviceLink:
    """One device's mutual-TLS connection to the control plane, reopened on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        context: Callable[[], ssl.SSLContext],
        tally: Tally,
        timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self._context_factory = context
        self._context: ssl.SSLContext | None = None
        self._conn: HttpConnection | None = None
        self._tally = tally
        self.timeout = timeout
        self.connects = 0

    async def _connection(self) -> HttpConnection:
        if self._conn is None or not self._conn.is_open:
            if self._context is None:
                self._context = self._context_factory()
            self._conn = await HttpConnection.open(
                self.host, self.port, self._context, timeout=self.timeout
            )
            self.connects += 1
        return self._conn

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        retry: bool = True,
    ) -> HttpResponse:
        """One request; on a connection the server closed, once more on a fresh one
        (``retry``), which is safe for idempotent requests and for reports, whose repeat
        the campaign state machine ignores."""
        raw = build_request(method, path, self.host, headers, body)
        for attempt in (1, 2):
            try:
                conn = await self._connection()
            except HttpProtocolError as exc:  # refused, reset or timed out: not retried now
                self._tally.errors["connect"] += 1
                raise SimDeviceError(f"{method} {path}: {exc}") from exc
            try:
                response = await conn.send(raw, timeout=self.timeout)
            except HttpProtocolError as exc:
                conn.close()
                self._conn = None
                if attempt == 2 or not retry:
                    self._tally.errors[f"{method} {path}"] += 1
                    raise SimDeviceError(f"{method} {path}: {exc}") from exc
                continue
            self._tally.count(method, path, response.status)
            return response
        raise AssertionError("unreachable")

    async def json(self, method: str, path: str, document: object) -> HttpResponse:
        body = json.dumps(document, separators=(",", ":")).encode()
        return await self.request(method, path, {"Content-Type": "application/json"}, body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SimDevice:
    """A simulated device: its state, its link, and the agent's cycle."""

    def __init__(
        self,
        state: DeviceState,
        link: DeviceLink,
        behaviour: Behaviour,
        tally: Tally,
        *,
        rng: random.Random | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.state = state
        self.link = link
        self.behaviour = behaviour
        self.tally = tally
        self.rng = rng or random.Random()  # noqa: S311 - simulation, not security
        self.clock = clock
        self._started = time.monotonic()
        self.last_error: str | None = None
        self.stopped = False

    @property
    def serial(self) -> str:
        return self.state.serial

    def uptime(self) -> int:
        return int(time.monotonic() - self._started)

    # -- the conversation ----------------------------------------------------------------

    async def check_in(self) -> str | None:
        """Check in with the inventory; returns the directive ETag the answer names."""
        inventory = self.state.inventory(self.uptime())
        response = await self.link.json(
            "POST", CHECKIN_PATH, {"agent_version": __version__, "inventory": inventory}
        )
        if response.status != 200:
            raise SimDeviceError(
                f"{self.serial}: check-in refused ({response.status}): {response.body[:200]!r}"
            )
        try:
            answer = json.loads(response.body)
            poll, jitter = int(answer["poll_seconds"]), int(answer["jitter_seconds"])
            etag = answer.get("directive_etag")
        except (ValueError, KeyError, TypeError) as exc:
            raise SimDeviceError(f"{self.serial}: malformed check-in answer: {exc}") from exc
        self.state.checked_in(inventory, poll, jitter)
        return etag if isinstance(etag, str) and etag else None

    async def poll_directive(self) -> bool:
        """``GET /device/v1/directive``; returns whether a new directive arrived."""
        held = self.state.directive
        headers = {"If-None-Match": f'"{held.etag}"'} if held is not None else None
        response = await self.link.request("GET", DIRECTIVE_PATH, headers)
        if response.status == 304:
            poll = response.header("garrison-poll")
            if poll:
                self.state.poll = parse_poll_header(poll)
            return False
        if response.status != 200:
            raise SimDeviceError(
                f"{self.serial}: directive refused ({response.status}): {response.body[:200]!r}"
            )
        try:
            directive = parse_directive(json.loads(response.body))
        except (ValueError, DirectiveInvalid) as exc:
            self.tally.errors["malformed directive"] += 1
            raise SimDeviceError(f"{self.serial}: malformed directive: {exc}") from exc
        self.state.directive = directive
        self.state.poll = (directive.poll_seconds, directive.jitter_seconds)
        return True

    async def flush_reports(self) -> None:
        """Send the queued reports in order; a 4xx drops one, anything else stops here."""
        while self.state.outbox:
            response = await self.link.json("POST", REPORT_PATH, self.state.outbox[0])
            if 400 <= response.status < 500:
                self.tally.refused_reports += 1
            elif not 200 <= response.status < 300:
                return
            self.state.outbox.pop(0)

    async def run_command(self) -> None:
        """An operator's command, if one waits (today: ``rollback``)."""
        response = await self.link.request("GET", COMMANDS_PATH)
        if response.status != 200:
            return
        command = json.loads(response.body)
        if command.get("action") == "rollback":
            outcome, detail = self.state.operator_rollback(self.clock())
        else:
            outcome, detail = "refused", f"unknown action {str(command.get('action'))[:40]!r}"
        await self.link.json(
            "POST", f"{COMMANDS_PATH}/{int(command['id'])}", {"outcome": outcome, "detail": detail}
        )

    # -- one cycle -----------------------------------------------------------------------

    async def converge(self) -> None:
        directive = self.state.directive
        if directive is None:
            return
        steps = plan(directive, self.state.facts(), self.clock()).steps
        for step in steps:
            match step:
                case DownloadFirmware(firmware):
                    self.state.downloading(firmware)
                    await self.flush_reports()
                    if self.behaviour.download_seconds:
                        await asyncio.sleep(self.behaviour.download_seconds)
                    self.state.downloaded_firmware(firmware)
                case InstallFirmware(firmware):
                    self.state.installing(firmware)
                    await self.flush_reports()
                    if self.behaviour.install_seconds:
                        await asyncio.sleep(self.behaviour.install_seconds)
                    healthy = self.behaviour.healthy(self.serial, self.rng)
                    outcome = self.state.installed_firmware(firmware, healthy, self.clock())
                    if outcome == "committed":
                        self.tally.committed += 1
                    else:
                        self.tally.rolled_back += 1
                case DownloadApp(_name, _version, target):
                    self.state.downloaded.add(target)
                case InstallApp(name, _version, _target):
                    entry = directive.app(name)
                    if entry is not None:
                        self.state.installed_app(entry)
                case ConfigureApp(name, config):
                    self.state.configured_app(name, app_files.config_digest(config))
                case RemoveApp(name, _version):
                    self.state.removed_app(name)
                case Hold(failure):
                    # as the agent: a campaign other than the one the target failed in is
                    # told at once that it will not be tried again here
                    self.state.held(failure, getattr(step, "campaign", None))
                case _:  # WaitForWindow: nothing to do now
                    pass
        self.state.confirm(directive.firmware)

    async def cycle(self) -> None:
        """One round of the agent (see the module docstring)."""
        self.tally.cycles += 1
        etag = None
        if self.state.check_in_due(self.behaviour.heartbeat_polls):
            etag = await self.check_in()
        else:
            self.state.polls_since_checkin += 1
        held = self.state.directive
        if etag is None or held is None or etag != held.etag:
            await self.poll_directive()
        await self.converge()
        if self.state.directive is not None and self.state.directive.command is not None:
            await self.run_command()
        await self.flush_reports()
        if self.state.inventory_changed():
            await self.check_in()

    def wait_seconds(self) -> float:
        """The next poll: the control plane's interval (or the simulation's) ± jitter."""
        poll = self.behaviour.poll_seconds
        jitter = self.behaviour.jitter_seconds
        if poll is None:
            poll = float(self.state.poll[0])
        if jitter is None:
            jitter = float(self.state.poll[1]) if self.behaviour.poll_seconds is None else 0.0
        return max(0.05, poll + self.rng.uniform(-jitter, jitter))

    async def run(self, first_delay: float = 0.0, gate: asyncio.Semaphore | None = None) -> None:
        """Cycle until cancelled or :attr:`stopped`; a failed cycle is counted and tried
        again after the usual wait. Cycles run under ``gate`` until one has succeeded (the
        first contact: TLS handshake, check-in, first directive), so that a fleet coming
        online queues here instead of in the control plane's timeouts."""
        if first_delay > 0:
            await asyncio.sleep(first_delay)
        while not self.stopped:
            try:
                if gate is None:
                    await self.cycle()
                else:
                    async with gate:
                        await self.cycle()
                    gate = None
            except SimDeviceError as exc:
                self.tally.failed_cycles += 1
                self.last_error = str(exc)
            except Exception as exc:  # a simulator bug must not silently stop a device
                self.tally.failed_cycles += 1
                kind = f"unexpected {type(exc).__name__}"
                self.tally.errors[kind] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.tally.errors[kind] == 1:  # the first of a kind, with its traceback
                    log.exception("simulated device %s: cycle failed", self.serial)
            await asyncio.sleep(self.wait_seconds())

    def close(self) -> None:
        self.link.close()

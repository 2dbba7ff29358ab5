"""Carrying a convergence plan out on the device: the only part of convergence that touches
the device, the update client and the agent's record.

* **Firmware** goes through :class:`garrison.updates.client.UpdateClient`: every target is
  verified through TUF (signatures, expiry, hardware, install type, anti-rollback floor)
  before a byte is fetched, and must be signed as what the directive says it is (install
  type, app name, version). The A/B installer boots the new version, runs its health
  checks and commits or rolls back by itself.
* **Apps** install through the same client (:mod:`garrison.updates.apps`: verified,
  atomic switch, health checks, back to the previous version when unhealthy); their
  configuration is written atomically to ``apps/<name>/config.json``; a removal takes the
  app out in one rename (:func:`garrison.updates.apps.remove_app`).
* **Crash safety.** Before an install starts, :class:`.fleet_state.Installing` is saved. At
  the next start :meth:`Converger.recover` finishes a pending trial — a firmware's A/B
  trial, or an app's switch whose health checks had not decided
  (:func:`garrison.updates.client.judge_app_trial`) — and turns that record into the
  install's outcome, so a power cut never leaves an outcome unreported, an unchecked
  version current or a device half-updated.
* **Maintenance window.** The plan was made under a window; right before each change
  (install, configure, remove) the window is asked again with the injected clock: a
  download that ends after it closed stops the plan there ("waiting for maintenance
  window …"), nothing is installed.
* **Outcomes.** Each install ends in the record's ``last_update`` (reported in the
  inventory) and a report for the control plane (queued in the record's outbox and sent by
  the agent). A target that rolled back or was refused for good is recorded as a
  :class:`.converge.Failure`: the plan does not try it again under the same directive.
* **Errors.** Refusals that trying again cannot change (policy, a malformed or mismatching
  declaration, a package that does not verify on disk or cannot be unpacked) fail that
  target and the plan goes on. Any other error of a step — trouble that may pass (the
  repository unreachable, a broken download, refused metadata, an artifact with the wrong
  digest — discarded, fetched afresh next time), a device state that does not allow the
  step, the device's storage failing (``OSError``, as :class:`StorageFailed`) — stops the
  plan; :attr:`Outcome.error` carries it, the agent still answers the operator's
  command, sends its reports and checks in, then backs off.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tuf.api.metadata import TargetFile

from garrison.agent.converge import (
    AppFacts,
    ConfigureApp,
    DownloadApp,
    DownloadFirmware,
    Facts,
    Failure,
    Hold,
    InstallApp,
    InstallFirmware,
    Plan,
    RemoveApp,
    Step,
    WaitForWindow,
    changes,
    describe,
    wait_for_window,
)
from garrison.agent.directive import FirmwareEntry
from garrison.agent.fleet_channel import ChannelError
from garrison.agent.fleet_state import Installing, Record
from garrison.agent.inventory import printable, running_firmware
from garrison.clock import Clock
from garrison.errors import GarrisonError, InvalidRequest, PolicyError
from garrison.updates import apps
from garrison.updates.bootenv import ImageVerificationFailed
from garrison.updates.client import (
    InstallResult,
    UpdateClient,
    app_result,
    judge_app_trial,
    resume_apps,
    resume_device,
)
from garrison.updates.device_state import UpdateState
from garrison.updates.download import ArtifactRefused, DownloadInterrupted
from garrison.updates.eligibility import declaration
from garrison.updates.installer import Checkpoint, no_checkpoint
from garrison.updates.tufclient import MetadataRefused, UpdateUnavailable

log = logging.getLogger("garrison.agent")
_T = TypeVar("_T")

TRANSIENT = (UpdateUnavailable, DownloadInterrupted, MetadataRefused, ArtifactRefused, ChannelError)
"""Errors that may pass: the plan stops, nothing is recorded as failed, the agent retries."""

REPORT_STATE = {
    "committed": "committed",
    "current": "committed",
    "rolled-back": "rolled-back",
    "unhealthy": "failed",
    "failed": "failed",
}


class DirectiveMismatch(PolicyError):
    """The directive names a target that is signed as something else (another install
    type, app or version): the device follows the signature, not the directive."""


class StorageFailed(GarrisonError):
    """The device's storage failed (an ``OSError``: disk full, I/O error, read-only): the
    step did not happen; the agent tries again after backing off."""


def storage_failed(exc: OSError) -> StorageFailed:
    """``exc`` as a :class:`StorageFailed` with a hint."""
    return StorageFailed(
        f"the device's storage failed: {exc}",
        hint="free space or repair the device's storage; the agent tries again",
    )


def _permanent(exc: GarrisonError) -> bool:
    if isinstance(exc, TRANSIENT):
        return False
    return isinstance(
        exc, PolicyError | InvalidRequest | ImageVerificationFailed | apps.PackageUnusable
    )


def detail_of(event: str, health: str) -> str:
    """An install's event for people, with its health checks' reason unless the event
    already says it (a firmware's rejection names it): each fact once."""
    return event if not health or health in event else f"{event} (health: {health})"


@dataclass
class Outcome:
    """What one run of a plan did (lines for people), whether the device changed, and the
    error that stopped it, if any."""

    did: list[str] = field(default_factory=list)
    changed: bool = False
    error: GarrisonError | None = None


class Converger:
    """Carries plans out for one device. ``client`` builds the update client when a step
    first needs one; ``flush`` sends the queued reports (called before an install, so the
    control plane sees ``installing`` while it happens); ``save`` persists the record."""

    def __init__(
        self,
        updates: UpdateState,
        record: Record,
        client: Callable[[], UpdateClient],
        *,
        clock: Clock,
        save: Callable[[Record], None],
        flush: Callable[[], None] = lambda: None,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.updates = updates
        self.record = record
        self._make_client = client
        self._client: UpdateClient | None = None
        self.clock = clock
        self.save = save
        self.flush = flush
        self.checkpoint = checkpoint
        self._targets: dict[str, TargetFile] = {}
        self._failed: set[str] = set()

    # -- facts ---------------------------------------------------------------------------

    def facts(self) -> Facts:
        """What the device runs and holds now (after :meth:`recover`)."""
        device = self.updates.device()
        root = device.root
        installed = {
            name: AppFacts(version, apps.stored_config_digest(root, name))
            for name, version in apps.installed_apps(root).items()
        }
        held = {
            target
            for target, sha256 in self.record.downloads.items()
            if (self.updates.downloads / sha256).is_file()
        }
        return Facts(
            running_firmware(device.load_env()),
            installed,
            frozenset(held),
            tuple(self.record.failures),
        )

    def forget_downloads(self, keep: set[str]) -> None:
        """Delete held artifacts of targets no longer wanted (``keep``: targets the
        directive names)."""
        for target, sha256 in list(self.record.downloads.items()):
            if target in keep and (self.updates.downloads / sha256).is_file():
                continue
            del self.record.downloads[target]
            if sha256 not in self.record.downloads.values():
                (self.updates.downloads / sha256).unlink(missing_ok=True)

    # -- after an interruption -----------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish what an interruption left: a pending trial (health checks decide), and
        the outcome of the install that was under way. Returns lines for people."""
        notes: list[str] = []
        resumed = resume_device(self.updates, self.checkpoint)
        if resumed is not None and resumed.action != "none":
            notes.append(
                f"finished an interrupted trial: {resumed.action}, {resumed.final.version} runs"
            )
        root = self.updates.device().root
        apps.remove_leftovers(root)
        pending = self.record.installing
        if pending is not None and pending.kind == "app":
            # the pending app first: its verdict becomes the install's outcome below
            trial = judge_app_trial(root, pending.name, self.checkpoint)
            if trial is not None and trial.version == pending.version and trial.decided:
                result = app_result(pending.target, trial)
                self._finish(
                    pending, result.outcome, result.version, detail_of(result.event, result.health)
                )
                self._after_app(pending.name, result.outcome)
                notes.append(f"recorded the interrupted install of {pending.target}")
                pending = None
        for name, verdict in resume_apps(self.updates, self.checkpoint).items():
            notes.append(f"finished an interrupted trial of app {name}: {verdict}")
        if pending is None:
            return notes
        device = self.updates.device()
        env = device.load_env()
        if pending.kind == "firmware":
            running = running_firmware(env)
            rejected = any(
                info is not None and info.version == pending.version and info.state == "bad"
                for info in env.slots.values()
            )
            if running == pending.version:
                self._finish(pending, "committed", running, "installed; finished after a restart")
            elif rejected:
                self._finish(pending, "rolled-back", running, env.last_event)
            else:  # the switch never happened: nothing ran, the plan tries again
                self.record.installing = None
        else:
            current = apps.current_version(device.root, pending.name)
            if current == pending.version:  # switched without a trial record (older agent)
                self._finish(pending, "committed", current, "installed; finished after a restart")
            else:  # the switch never happened: nothing ran, the plan tries again
                self.record.installing = None
        self.save(self.record)
        notes.append(f"recorded the interrupted install of {pending.target}")
        return notes

    # -- the plan ------------------------------------------------------------------------

    def run(self, plan: Plan) -> Outcome:
        """Carry ``plan`` out, step by step (see the module docstring for errors and the
        maintenance window)."""
        outcome = Outcome()
        try:
            for index, step in enumerate(plan.steps):
                if changes(step) and plan.window is not None:
                    now = self.clock()
                    if not plan.window.is_open(now):
                        wait = wait_for_window(plan.window, plan.steps[index:], now)
                        outcome.did.append(describe(wait))
                        break
                try:
                    self._step(step, outcome)
                except GarrisonError as exc:
                    outcome.error = exc
                except OSError as exc:
                    outcome.error = storage_failed(exc)
                if outcome.error is not None:
                    outcome.did.append(f"stopped: {outcome.error}")
                    break
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            self.save(self.record)
        return outcome

    @property
    def client(self) -> UpdateClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _step(self, step: Step, outcome: Outcome) -> None:
        match step:
            case DownloadFirmware(firmware):
                key = (firmware.target, firmware.campaign)
                self._report(*key, firmware.version, "downloading")
                held = self._guard(
                    key,
                    firmware.version,
                    lambda: self._download(firmware.target, firmware.version, "image", None),
                )
                if held is not None:
                    self._report(*key, firmware.version, "downloaded")
                    outcome.did.append(f"downloaded firmware {firmware.version}")
            case InstallFirmware(firmware):
                if firmware.target in self._failed:
                    return
                pending = Installing(
                    "firmware", firmware.target, firmware.version, firmware.campaign
                )
                result = self._guard(
                    (firmware.target, firmware.campaign),
                    firmware.version,
                    lambda: self._install(pending, "image", None),
                )
                if result is not None:
                    outcome.changed = True
                    outcome.did.append(
                        f"firmware {firmware.version}: {result.outcome}, {result.version} runs"
                    )
            case DownloadApp(name, version, target):
                held = self._guard(
                    (target, None),
                    version,
                    lambda: self._download(target, version, "app", name),
                    app=name,
                )
                if held is not None:
                    outcome.did.append(f"downloaded app {name} {version}")
            case InstallApp(name, version, target):
                if name in self._failed:
                    return
                pending = Installing("app", target, version, None, name)
                result = self._guard(
                    (target, None), version, lambda: self._install(pending, "app", name), app=name
                )
                if result is not None:
                    outcome.changed = True
                    outcome.did.append(f"app {name} {version}: {result.outcome}")
                    self._after_app(name, result.outcome)
            case ConfigureApp(name, config):
                if name in self._failed:
                    return
                apps.write_config(self.updates.device().root, name, config)
                outcome.changed = True
                outcome.did.append(f"configured app {name}")
            case RemoveApp(name, was):
                if apps.remove_app(self.updates.device().root, name, checkpoint=self.checkpoint):
                    outcome.changed = True
                    outcome.did.append(f"removed app {name}" + (f" {was}" if was else ""))
            case Hold(failure, campaign):
                if campaign is not None and campaign != failure.campaign:
                    self._report(
                        failure.target,
                        campaign,
                        failure.version,
                        "failed",
                        f"{failure.outcome} on this device before ({failure.event}); "
                        "not tried again",
                    )
            case WaitForWindow():
                pass

    def _after_app(self, name: str, outcome: str) -> None:
        """After an app install: old versions go once it committed; after a failure its
        later steps (configuration) are skipped."""
        if outcome in ("committed", "current"):
            apps.prune_app(self.updates.device().root, name)
        else:
            self._failed.add(name)

    # -- the work ------------------------------------------------------------------------

    def _guard(
        self,
        key: tuple[str, int | None],
        version: str,
        work: Callable[[], _T],
        *,
        app: str | None = None,
    ) -> _T | None:
        """``work()``; a permanent refusal fails the target ``key`` (recorded, reported;
        for an app, its later steps are skipped) and returns None; transient trouble
        propagates."""
        try:
            return work()
        except GarrisonError as exc:
            if not _permanent(exc):
                raise
            target, campaign = key
            log.warning("%s refused for good on this device: %s", target, exc)
            self._failed.update({target} if app is None else {target, app})
            running = running_firmware(self.updates.device().load_env())
            kind = "firmware" if app is None else "app"
            self._finish(
                Installing(kind, target, version, campaign, app or ""), "failed", running, str(exc)
            )
            return None

    def _checked(self, path: str, version: str, install: str, name: str | None) -> TargetFile:
        """The TUF-verified target ``path``, signed as the directive says it is."""
        target = self._targets.get(path)
        if target is None:
            target = self.client.check(path)
            decl = declaration(target.custom)
            wanted = (install, version) if name is None else (install, version, name)
            signed = (
                (decl.install, decl.version)
                if name is None
                else (decl.install, decl.version, decl.name)
            )
            if signed != wanted:
                raise DirectiveMismatch(
                    f"{path} is signed as {decl.install} {decl.name} {decl.version}, not as "
                    f"the directive's {install} {name or ''} {version}".replace("  ", " "),
                    hint="the control plane's directive and the signed release disagree",
                )
            self._targets[path] = target
        return target

    def _download(self, path: str, version: str, install: str, name: str | None) -> TargetFile:
        target = self._checked(path, version, install, name)
        self.client.is_current(target)  # an image rejected here is refused before any byte
        self.client.download(target)
        self.record.downloads[path] = target.hashes["sha256"]
        self.save(self.record)
        return target

    def _install(self, pending: Installing, install: str, name: str | None) -> InstallResult:
        target = self._checked(pending.target, pending.version, install, name)
        if self.client.is_current(target):
            result = InstallResult(pending.target, "current", pending.version, "already runs")
            self._finish(pending, result.outcome, result.version, result.event)
            return result
        self.client.download(target)  # re-verified if held; fetched if not
        self.record.installing = pending
        self._report(pending.target, pending.campaign, pending.version, "installing")
        self.save(self.record)
        self.flush()
        result = self.client.install(target)
        self._finish(
            pending, result.outcome, result.version, detail_of(result.event, result.health)
        )
        return result

    # -- outcomes ------------------------------------------------------------------------

    def _finish(self, pending: Installing, outcome: str, running: str, detail: str) -> None:
        """Record how an install of ``pending`` ended and queue its report."""
        now = self.clock()
        detail = printable(detail)
        self.record.last_update = {
            "target": pending.target,
            "outcome": "committed" if outcome == "current" else outcome,
            "version": running,
            "event": detail,
            "at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        state = REPORT_STATE[outcome]
        if state in ("rolled-back", "failed"):
            self.record.add_failure(
                Failure(pending.target, pending.campaign, pending.version, state, detail, now)
            )
        self._report(pending.target, pending.campaign, pending.version, state, detail)
        self.record.installing = None
        self.record.downloads.pop(pending.target, None)
        self.save(self.record)

    def confirm(self, firmware: FirmwareEntry | None) -> None:
        """A campaign's firmware that already runs here is reported ``committed`` (once):
        the campaign learns the device is on its target without an install."""
        if firmware is None or firmware.campaign is None:
            return
        if running_firmware(self.updates.device().load_env()) == firmware.version:
            self._report(
                firmware.target, firmware.campaign, firmware.version, "committed", "already runs"
            )

    def _report(
        self, target: str, campaign: int | None, version: str, state: str, detail: str = ""
    ) -> None:
        """Queue a report for the control plane; only a campaign's target is reported
        (``POST /device/v1/report`` moves the device's place in its campaign). Outcomes of
        updates from desired state alone reach the control plane in the inventory's
        ``last_update``."""
        if campaign is None:
            return
        self.record.queue_report(
            {
                "campaign": campaign,
                "target": target,
                "state": state,
                "version": version,
                "detail": printable(detail),
            }
        )

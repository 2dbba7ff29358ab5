"""The device update client: TUF-verified metadata, a verified download, the A/B installer.

    check(path)     refresh the TUF metadata (every byte verified by python-tuf against the
                    root this device was provisioned with, at the device's clock), find the
                    target, refuse it unless it fits this device: hardware model, install
                    type, anti-rollback floor — before a byte of the artifact is fetched
    download(t)     stream the artifact into STATE/downloads, resumable, verified by length
                    and every hash of its signed target (:mod:`.download`)
    install(t)      hand the verified file to the installer: an A/B image (switch, boot,
                    health checks, then commit or roll back by itself) or an app package
                    (its switch a recorded trial: :func:`judge_app_trial`)
    update(path?)   all three; without a path, the release the control plane offers

Only targets that :meth:`UpdateClient.check` returned can be downloaded or installed, and
only files that verified are installed. The repository is reached through a fetcher
(:mod:`.fetchers`): the control plane over mutual TLS, a mirror, or an offline bundle
(:mod:`.bundle`); nothing a fetcher returns is trusted before it verified.

Exception tree::

    GarrisonError
    ├── ConfigError                       no identity, TUF root or device provisioned
    ├── UpdateError                       (:mod:`.bootenv`)
    │   ├── MetadataRefused               TUF refused the metadata: too few or bad
    │   │                                 signatures, altered, expired (frozen), rolled back,
    │   │                                 mix-and-match, longer than allowed
    │   ├── UpdateUnavailable             repository unreachable, or no such target
    │   ├── DownloadInterrupted           the transfer broke off; the next run resumes
    │   ├── BundleInvalid                 not a bundle, or its metadata far too old
    │   ├── UpdateStateError              e.g. installing a target that was never checked
    │   ├── AppInstallError               an app cannot be installed, switched or configured
    │   │   └── PackageUnusable           a verified app release that can never be
    │   │                                 unpacked here (failed for good, not retried)
    │   └── ImageVerificationFailed
    │       └── ArtifactRefused           longer than declared, or not the signed digest
    ├── InvalidRequest
    │   └── DeclarationInvalid            the target has no usable release declaration
    └── PolicyError
        ├── NotForThisDevice              other hardware, or an unsupported install type
        ├── PreviouslyRejected            this artifact already failed its trial here
        └── DowngradeRefused              below the device's anti-rollback floor
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx
from tuf.api.metadata import TargetFile

from garrison.agent.identity import StateDir
from garrison.clock import Clock, utc_now
from garrison.errors import GarrisonError
from garrison.updates import apps, bootenv
from garrison.updates.bootenv import RollbackUnavailable, SlotInfo, UpdateStateError
from garrison.updates.bundle import (
    METADATA_URL,
    TARGETS_URL,
    Bundle,
    BundleFetcher,
    bundle_reference_time,
)
from garrison.updates.device_state import UpdateState
from garrison.updates.download import Expected, Progress, fetch_artifact, no_progress
from garrison.updates.eligibility import (
    INSTALL_TYPES,
    Declaration,
    check_eligible,
    declaration,
    plan_image,
)
from garrison.updates.fetchers import HttpsFetcher, device_channel
from garrison.updates.installer import (
    Checkpoint,
    CommandCheck,
    FileSlotInstaller,
    ResumeReport,
    UpdateReport,
    apply_rollback,
    apply_update,
    no_checkpoint,
    resume,
    run_health_checks,
)
from garrison.updates.tufclient import Repo, UpdateUnavailable, VerifiedTarget, refresh_target

Offer = Callable[[], str | None]
Outcome = Literal["committed", "rolled-back", "current", "unhealthy"]


@dataclass(frozen=True)
class InstallResult:
    """How an update (or rollback) ended: the version running now, and why.

    ``committed``: the new version runs and is the last good one; ``rolled-back``: it
    failed (health, boot limit, verified boot) and the previous version runs again;
    ``current``: it already ran, nothing was done; ``unhealthy``: an app package failed
    its health checks and there was no earlier version to return to.
    """

    target: str
    outcome: Outcome
    version: str
    event: str
    health: str = ""


class UpdateClient:
    """Updates one device from one repository. Use :meth:`for_agent` or :meth:`for_bundle`
    for the production wiring; the constructor takes every dependency for tests."""

    def __init__(
        self,
        state: UpdateState,
        repo: Repo,
        *,
        hardware: str,
        clock: Clock = utc_now,
        offer: Offer | None = None,
        supported: Collection[str] = INSTALL_TYPES,
        checkpoint: Checkpoint = no_checkpoint,
        closer: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.repo = repo
        self.hardware = hardware
        self.clock = clock
        self.supported = tuple(supported)
        self.checkpoint = checkpoint
        self._offer = offer
        self._closer = closer
        self._verified: dict[str, VerifiedTarget] = {}

    @classmethod
    def for_agent(cls, state: StateDir, *, clock: Clock = utc_now) -> UpdateClient:
        """The client of an enrolled agent: the control plane over mutual TLS."""
        http = device_channel(state, state.load_config())
        client = cls.for_channel(state, http, clock=clock)
        client._closer = http.close
        return client

    @classmethod
    def for_channel(
        cls,
        state: StateDir,
        http: httpx.Client,
        *,
        clock: Clock = utc_now,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> UpdateClient:
        """The client of an enrolled agent over its open device channel ``http`` (the
        agent's own keep-alive connection; closing this client leaves ``http`` open)."""
        config = state.load_config()
        base = config.server_url.rstrip("/")
        repo = Repo(HttpsFetcher(http), f"{base}/tuf/metadata/", f"{base}/tuf/targets/")
        return cls(
            UpdateState.of(state, config),
            repo,
            hardware=config.hardware,
            clock=clock,
            offer=lambda: fetch_offer(http),
            checkpoint=checkpoint,
        )

    @classmethod
    def for_bundle(cls, state: StateDir, path: Path, *, clock: Clock = utc_now) -> UpdateClient:
        """The client installing an offline bundle: no network at all. The bundle's
        metadata is judged at :func:`.bundle.bundle_reference_time`."""
        config = state.load_config()
        bundle = Bundle(path)
        try:
            reference = bundle_reference_time(clock(), bundle.timestamp_expires())
        except BaseException:
            bundle.close()
            raise
        target = bundle.target
        return cls(
            UpdateState.of(state, config),
            Repo(BundleFetcher(bundle), METADATA_URL, TARGETS_URL),
            hardware=config.hardware,
            clock=lambda: reference,
            offer=lambda: target,
            closer=bundle.close,
        )

    # -- the steps -------------------------------------------------------------------

    def offered(self) -> str | None:
        """The target the repository offers this device (None: nothing to install)."""
        return None if self._offer is None else self._offer()

    def check(self, target_path: str) -> TargetFile:
        """The verified target ``target_path``, if it may be installed on this device."""
        verified = refresh_target(
            self.repo,
            self.state.metadata_dir,
            self.state.initial_root(),
            target_path,
            self.clock(),
        )
        target = verified.target
        Expected(target.length, dict(target.hashes))  # refuses targets without a SHA-256
        env = self.state.device().load_env()
        check_eligible(
            declaration(target.custom),
            model=self.hardware,
            floor=env.security_floor,
            supported=self.supported,
        )
        self._verified[target.path] = verified
        return target

    def is_current(self, target: TargetFile) -> bool:
        """Whether the device already runs exactly this release."""
        self._require_checked(target)
        decl = declaration(target.custom)
        device = self.state.device()
        if decl.install == "app":
            return apps.current_version(device.root, decl.name) == decl.version
        return plan_image(device.load_env(), target.hashes["sha256"]) == "current"

    def download(self, target: TargetFile, progress: Progress = no_progress) -> Path:
        """The verified artifact of a checked target (downloaded or resumed as needed)."""
        verified = self._require_checked(target)
        expected = Expected(target.length, dict(target.hashes))
        return fetch_artifact(
            self.repo.fetcher, verified.url, expected, self.state.downloads, progress=progress
        )

    def install(self, target: TargetFile) -> InstallResult:
        """Install a checked, downloaded target; the checks run again right before."""
        self._require_checked(target)
        decl = declaration(target.custom)
        device = self.state.device()
        check_eligible(
            decl,
            model=self.hardware,
            floor=device.load_env().security_floor,
            supported=self.supported,
        )
        sha256 = Expected(target.length, dict(target.hashes)).sha256
        artifact = self.state.downloads / sha256
        if not artifact.is_file():
            raise UpdateStateError(
                f"{target.path} has not been downloaded and verified",
                hint="download it first (UpdateClient.download)",
            )
        if decl.install == "app":
            result = self._install_app(target, decl, artifact)
        else:
            # the declaration of what a slot holds: its health checks run again on a resumed
            # trial or an operator rollback (apps keep none: they switch back in one step)
            self.state.remember(sha256, decl)
            result = self._install_image(target, decl, artifact)
        artifact.unlink(missing_ok=True)
        self.state.forget_unused(device.load_env())
        return result

    def update(
        self, target_path: str | None = None, progress: Progress = no_progress
    ) -> InstallResult | None:
        """Finish what an interruption left pending (:func:`resume_device`), then check,
        download and install ``target_path`` (default: the offered release); None when
        nothing is offered."""
        resume_device(self.state, self.checkpoint)
        resume_apps(self.state, self.checkpoint)
        path = target_path if target_path is not None else self.offered()
        if path is None:
            return None
        target = self.check(path)
        if self.is_current(target):
            version = declaration(target.custom).version
            return InstallResult(path, "current", version, f"{version} already runs")
        self.download(target, progress)
        return self.install(target)

    # -- installers ------------------------------------------------------------------

    def _install_image(
        self, target: TargetFile, decl: Declaration, artifact: Path
    ) -> InstallResult:
        device = self.state.device()
        if plan_image(device.load_env(), target.hashes["sha256"]) == "current":
            return InstallResult(target.path, "current", decl.version, "already runs")
        info = SlotInfo(decl.version, decl.security_version, target.hashes["sha256"], target.length)
        installer = FileSlotInstaller(device, self.checkpoint)
        with artifact.open("rb") as source:
            report = apply_update(
                device,
                installer,
                source,
                info,
                [CommandCheck(check) for check in decl.health_checks],
                checkpoint=self.checkpoint,
            )
        return _result(target.path, report)

    def _install_app(self, target: TargetFile, decl: Declaration, artifact: Path) -> InstallResult:
        root = self.state.device().root
        if apps.current_version(root, decl.name) == decl.version:
            return InstallResult(target.path, "current", decl.version, "already runs")
        info = apps.AppInfo(target.hashes["sha256"], target.length)
        apps.install_app(
            root,
            decl.name,
            decl.version,
            artifact,
            info,
            checkpoint=self.checkpoint,
            health_checks=decl.health_checks,
        )
        trial = judge_app_trial(root, decl.name, self.checkpoint)
        if trial is None or not trial.decided:  # install_app just switched: cannot happen
            raise UpdateStateError(f"app {decl.name} {decl.version} was not switched")
        return app_result(target.path, trial)

    def _require_checked(self, target: TargetFile) -> VerifiedTarget:
        verified = self._verified.get(target.path)
        if verified is None or verified.target != target:
            raise UpdateStateError(
                f"{target.path} was not verified by this client",
                hint="only targets returned by UpdateClient.check can be downloaded or installed",
            )
        return verified

    # -- resources -------------------------------------------------------------------

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> UpdateClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _result(path: str, report: UpdateReport) -> InstallResult:
    health = "" if report.health is None else report.health.reason
    return InstallResult(path, report.outcome, report.booted.version, report.event, health)


def fetch_offer(client: httpx.Client) -> str | None:
    """``GET /device/v1/update`` over the device's channel: the target path, or None."""
    try:
        response = client.get("/device/v1/update")
    except httpx.HTTPError as exc:
        raise UpdateUnavailable(f"cannot reach the control plane: {exc}") from exc
    if response.status_code == 204:
        return None
    if response.status_code != 200:
        raise UpdateUnavailable(
            f"the control plane refused ({response.status_code}): {response.text[:300]}"
        )
    target = response.json().get("target")
    if not isinstance(target, str) or not target:
        raise UpdateUnavailable("the control plane's answer names no target")
    return target


def run_operator_command(
    http: httpx.Client, state: UpdateState, checkpoint: Checkpoint = no_checkpoint
) -> InstallResult | None:
    """Carry out the command an operator left for this device (``GET /device/v1/commands``)
    and report the outcome; None when there is none."""
    try:
        response = http.get("/device/v1/commands")
    except httpx.HTTPError as exc:
        raise UpdateUnavailable(f"cannot reach the control plane: {exc}") from exc
    if response.status_code == 204:
        return None
    if response.status_code != 200:
        raise UpdateUnavailable(f"the control plane refused ({response.status_code})")
    command = _command(response)
    if command.get("action") != "rollback":
        outcome, detail, result = "refused", f"unknown action {command.get('action')!r}", None
    else:
        try:
            result = rollback_device(state, checkpoint)
            outcome, detail = result.outcome, result.event
        except GarrisonError as exc:
            outcome, detail, result = "refused", str(exc), None
    try:
        http.post(
            f"/device/v1/commands/{command['id']}",
            json={
                "outcome": outcome if outcome in ("committed", "rolled-back") else "refused",
                "detail": detail[:300],
            },
        )
    except httpx.HTTPError as exc:
        raise UpdateUnavailable(f"cannot report the rollback: {exc}") from exc
    return result


def _command(response: httpx.Response) -> dict[str, object]:
    """The operator command in a ``200`` answer of ``/device/v1/commands``: a JSON object
    with an integer ``id`` and a string ``action``; anything else is refused (nothing is
    done, nothing can be answered) as :class:`UpdateUnavailable`, so the agent backs off."""
    hint = "the control plane sent a malformed command; the agent asks again next cycle"
    try:
        command = response.json()
    except ValueError as exc:
        raise UpdateUnavailable(f"the operator command is not JSON: {exc}", hint=hint) from exc
    if (
        not isinstance(command, dict)
        or type(command.get("id")) is not int
        or not isinstance(command.get("action"), str)
    ):
        raise UpdateUnavailable(
            "the operator command is not an object with an integer id and a string action: "
            f"{response.text[:200]!r}",
            hint=hint,
        )
    return command


def rollback_device(state: UpdateState, checkpoint: Checkpoint = no_checkpoint) -> InstallResult:
    """Operator fallback without a network: the previous good version goes on trial (with
    its recorded health checks) and commits when healthy. Refused below the security floor
    (:class:`.bootenv.DowngradeRefused`) or without a previous version
    (:class:`.bootenv.RollbackUnavailable`)."""
    resume_device(state, checkpoint)
    device = state.device()
    env = device.load_env()
    info = env.slots[bootenv.rollback_target(env)]
    assert info is not None  # rollback_target returns only a slot with a good version
    report = apply_rollback(
        device,
        FileSlotInstaller(device, checkpoint),
        state.health_checks_of(info.sha256),
        checkpoint=checkpoint,
    )
    return _result("", report)


def judge_app_trial(
    root: Path, name: str, checkpoint: Checkpoint = no_checkpoint
) -> apps.AppTrial | None:
    """Bring the trial of app ``name`` (:class:`.apps.AppTrial`) to a verdict and return it.

    ``switching`` with the version current: run its health checks; healthy → ``committed``;
    unhealthy → ``rolling-back`` is recorded, then :func:`.apps.rollback_app` →
    ``rolled-back`` (or, with no earlier version, ``unhealthy``: it stays current, as an
    uninterrupted install leaves it). ``rolling-back``: the switch back is finished if it
    had not happened. A verdict already recorded is returned as it is; a ``switching``
    trial whose switch never happened is forgotten (None: nothing ran), as is a missing one.
    Every step is recorded before the next starts, so a power cut at any instant is
    finished by calling this again. Checkpoint: ``app-after-health`` (the checks ran, the
    verdict is not recorded).
    """
    trial = apps.read_trial(root, name)
    if trial is None or trial.decided:
        return trial
    current = apps.current_version(root, name)
    if trial.stage == "switching":
        if current != trial.version:
            apps.clear_trial(root, name)
            return None
        health = run_health_checks([CommandCheck(check) for check in trial.health_checks])
        checkpoint("app-after-health")
        if health.healthy:
            event = f"app {name} {trial.version} installed"
            return _decided(root, name, trial.decide("committed", current, event, health.reason))
        trial = trial.decide("rolling-back", None, "", health.reason)
        apps.write_trial(root, name, trial)
    back = current
    if current == trial.version:
        try:
            back = apps.rollback_app(root, name, checkpoint=checkpoint)
        except RollbackUnavailable:
            event = f"app {name} {trial.version} is unhealthy and has no earlier version"
            return _decided(root, name, trial.decide("unhealthy", current, event, trial.health))
    event = f"rolled-back: app {name} {trial.version} unhealthy; {back} runs again"
    return _decided(root, name, trial.decide("rolled-back", back, event, trial.health))


def _decided(root: Path, name: str, trial: apps.AppTrial) -> apps.AppTrial:
    apps.write_trial(root, name, trial)
    return trial


def app_result(path: str, trial: apps.AppTrial) -> InstallResult:
    """The :class:`InstallResult` of a decided app trial."""
    outcome: Outcome = "committed"
    if trial.stage in ("rolled-back", "unhealthy"):
        outcome = "rolled-back" if trial.stage == "rolled-back" else "unhealthy"
    return InstallResult(path, outcome, trial.running or "", trial.event, trial.health)


def resume_apps(state: UpdateState, checkpoint: Checkpoint = no_checkpoint) -> dict[str, str]:
    """After an interruption: bring every open app trial to its verdict
    (:func:`judge_app_trial`). Returns app name → verdict (``forgotten`` for a switch that
    never happened)."""
    root = state.device().root
    verdicts = {}
    for name in apps.open_trials(root):
        trial = judge_app_trial(root, name, checkpoint)
        verdicts[name] = "forgotten" if trial is None else trial.stage
    return verdicts


def resume_device(
    state: UpdateState, checkpoint: Checkpoint = no_checkpoint
) -> ResumeReport | None:
    """After an interruption (a power cut in the middle of an update or rollback): if a
    version is on trial, boot and finish its trial with its recorded health checks — commit
    when healthy, else back to the last good version. None when nothing was pending."""
    device = state.device()
    env = device.load_env()
    if env.trying is None:
        return None
    info = env.slots[env.trying]
    checks = [] if info is None else state.health_checks_of(info.sha256)
    return resume(device, checks, checkpoint=checkpoint)

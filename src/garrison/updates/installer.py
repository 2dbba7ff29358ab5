"""A/B installation: stream a verified image into the inactive slot, switch, check, commit.

The seam is :class:`SlotInstaller`, five steps that any back-end (a file per slot, block
devices, RAUC, SWUpdate) can implement. :class:`FileSlotInstaller` implements it for a
:class:`.simdevice.SimulatedDevice`; its guarantees:

* ``install`` persists "slot being written" *before* the first byte goes to the slot,
  streams the image in chunks while hashing it, never writes more than the declared length
  (endless data is cut off at once), fsyncs, then re-reads the slot and checks length and
  SHA-256 again. Only then is the slot recorded as ``"written"``. On any mismatch it
  raises :class:`.bootenv.ImageVerificationFailed`, empties the slot file and leaves the
  slot not written: nothing unverified is ever switched to or booted.
* ``switch``, ``commit``, ``reject`` and ``rollback`` are each one atomic replacement of the
  boot environment, decided by the pure transitions of :mod:`.bootenv`.
* ``checkpoint(name)`` is called at every step — ``slot-write-begin``, ``slot-write-chunk``
  (after each chunk), ``slot-written``, ``before-switch``, ``after-switch``,
  ``before-commit``, ``after-commit``, ``before-reject``, ``after-reject``,
  ``before-rollback``, ``after-rollback`` — so tests can cut the power at each of them.

The flows on top, for the simulated device (where "reboot" is :meth:`SimulatedDevice.boot`):

* :func:`apply_update` — install, switch, reboot, health checks, then commit, or reject
  and reboot into the last good version. Its own checkpoints: ``after-boot``,
  ``after-health``, ``after-reboot``.
* :func:`apply_rollback` — the operator's way back: the previous good version goes on
  trial like an update (refused below the security floor).
* :func:`resume` — what the agent does at start-up after an unknown interruption.

Health checks (:func:`run_health_checks`): a command (argv, exit status 0 within its
timeout = healthy) or a callable (returns ``True`` or ``None`` without raising = healthy).
The checks of an image trial run in the device's directory (the simulated device's root), so
a check such as ``test -e slots/a.img`` or one that reads a device's own configuration
judges the device being updated.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from garrison.atomicfile import fsync_dir
from garrison.errors import InvalidRequest
from garrison.updates import bootenv
from garrison.updates.bootenv import SLOTS, ImageVerificationFailed, SlotInfo
from garrison.updates.digests import CHUNK
from garrison.updates.simdevice import BootResult, SimulatedDevice

Checkpoint = Callable[[str], None]
ImageSource = Iterable[bytes] | BinaryIO
DEFAULT_BOOT_ATTEMPTS = 3
DEFAULT_CHECK_TIMEOUT = 30.0


def no_checkpoint(name: str) -> None:
    """The default checkpoint: does nothing."""


class SlotInstaller(Protocol):
    """The installer seam: what the update flows need from an A/B back-end."""

    def install(self, source: ImageSource, info: SlotInfo) -> str:
        """Write and verify the image into the inactive slot; return that slot."""
        ...

    def switch(self, slot: str, attempts: int = DEFAULT_BOOT_ATTEMPTS) -> None:
        """Put ``slot`` on trial for at most ``attempts`` boots (one atomic step)."""
        ...

    def commit(self) -> None:
        """The running trial is healthy: make it the active, last good version."""
        ...

    def reject(self, reason: str) -> None:
        """The trial is unhealthy: end it; the next boot returns to the last good version."""
        ...

    def rollback(self, attempts: int = DEFAULT_BOOT_ATTEMPTS) -> str:
        """Put the previous good version on trial (operator fallback); return its slot."""
        ...


class FileSlotInstaller:
    """:class:`SlotInstaller` for a :class:`SimulatedDevice` (one image file per slot).

    ``verify_readback`` re-reads the written slot to check it against the release; turn it
    off only where the storage is known to return what was written (it costs one more
    SHA-256 pass over the image — the bootloader verifies the slot at every boot anyway).
    """

    def __init__(
        self,
        device: SimulatedDevice,
        checkpoint: Checkpoint = no_checkpoint,
        *,
        chunk_size: int = CHUNK,
        verify_readback: bool = True,
    ) -> None:
        if chunk_size < 1:
            raise InvalidRequest(f"chunk size must be positive, not {chunk_size}")
        self.device = device
        self.checkpoint = checkpoint
        self.chunk_size = chunk_size
        self.verify_readback = verify_readback

    def install(self, source: ImageSource, info: SlotInfo) -> str:
        env = self.device.load_env()
        slot = bootenv.inactive(env)
        self.device.save_env(bootenv.begin_write(env, slot, info))
        self.checkpoint("slot-write-begin")
        path = self.device.slot_path(slot)
        try:
            self._write(path, source, info)
            if self.verify_readback and not self.device.slot_verifies(slot, info):
                raise ImageVerificationFailed(
                    f"slot {slot} does not read back as version {info.version}",
                    hint="the storage may be failing; the slot was left unbootable",
                )
        except ImageVerificationFailed as exc:
            with path.open("wb"):  # leave no unverified bytes behind
                pass
            self.device.save_env(bootenv.abort_write(self.device.load_env(), slot, str(exc)))
            raise
        self.device.save_env(bootenv.mark_written(self.device.load_env(), slot, info))
        self.checkpoint("slot-written")
        return slot

    def switch(self, slot: str, attempts: int = DEFAULT_BOOT_ATTEMPTS) -> None:
        self.checkpoint("before-switch")
        self.device.save_env(bootenv.switch_to(self.device.load_env(), slot, attempts))
        self.checkpoint("after-switch")

    def commit(self) -> None:
        self.checkpoint("before-commit")
        self.device.save_env(bootenv.commit(self.device.load_env()))
        self.checkpoint("after-commit")

    def reject(self, reason: str) -> None:
        self.checkpoint("before-reject")
        self.device.save_env(bootenv.reject(self.device.load_env(), reason))
        self.checkpoint("after-reject")

    def rollback(self, attempts: int = DEFAULT_BOOT_ATTEMPTS) -> str:
        self.checkpoint("before-rollback")
        env = bootenv.start_rollback(self.device.load_env(), attempts)
        self.device.save_env(env)
        self.checkpoint("after-rollback")
        assert env.trying is not None
        return env.trying

    def _write(self, path: os.PathLike[str], source: ImageSource, info: SlotInfo) -> None:
        digest = hashlib.sha256()
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            for chunk in _chunks(source, self.chunk_size):
                if written + len(chunk) > info.length:
                    raise ImageVerificationFailed(
                        f"the image of version {info.version} is longer than the declared "
                        f"{info.length} bytes",
                        hint="the artifact or its source is not the release; nothing was "
                        "switched to",
                    )
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(chunk)
                self.checkpoint("slot-write-chunk")
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.device.slots_dir)
        if written != info.length:
            raise ImageVerificationFailed(
                f"the image of version {info.version} has {written} bytes, not the declared "
                f"{info.length}",
                hint="the download was cut short or the artifact is not the release",
            )
        if digest.hexdigest() != info.sha256:
            raise ImageVerificationFailed(
                f"the image of version {info.version} does not have the declared SHA-256",
                hint="the artifact was tampered with or corrupted; nothing was switched to",
            )


def _chunks(source: ImageSource, size: int) -> Iterator[bytes]:
    read = getattr(source, "read", None)
    if callable(read):
        while True:
            chunk = read(size)
            if not isinstance(chunk, bytes):
                raise InvalidRequest("an image source must yield bytes")
            if not chunk:
                return
            yield chunk
    for chunk in source:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidRequest("an image source must yield bytes")
        if chunk:
            yield bytes(chunk)


# --- health checks -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandCheck:
    """A command health check with its own timeout (seconds)."""

    argv: tuple[str, ...]
    timeout: float = DEFAULT_CHECK_TIMEOUT


HealthCheck = CommandCheck | Sequence[str] | Callable[[], bool | None]


@dataclass(frozen=True)
class HealthResult:
    """The verdict of :func:`run_health_checks`: healthy, or the reason of each failure."""

    healthy: bool
    failures: tuple[str, ...]
    checked: int

    @property
    def reason(self) -> str:
        return "; ".join(self.failures) if self.failures else "healthy"


def run_health_checks(checks: Sequence[HealthCheck], cwd: Path | None = None) -> HealthResult:
    """Run every check in order; healthy only if each passes.

    A command passes when it exits 0 within its timeout (:data:`DEFAULT_CHECK_TIMEOUT`
    unless a :class:`CommandCheck` says otherwise); a callable passes when it returns ``True`` or
    ``None`` without raising. No checks at all is healthy: the version booted and the
    agent runs, which is the check every update has.
    """
    failures: list[str] = []
    for check in checks:
        failure = _run_check(check, cwd)
        if failure is not None:
            failures.append(failure)
    return HealthResult(not failures, tuple(failures), len(checks))


def _run_check(check: HealthCheck, cwd: Path | None) -> str | None:
    if isinstance(check, CommandCheck):
        return _run_command(check.argv, check.timeout, cwd)
    if callable(check):
        name = getattr(check, "__name__", repr(check))
        try:
            result = check()
        except Exception as exc:
            return f"{name} raised {type(exc).__name__}: {exc}"
        return None if result is None or result is True else f"{name} reported unhealthy"
    if isinstance(check, str | bytes):
        raise InvalidRequest(
            f"health check {check!r} is a string", hint="give a command as an argv list"
        )
    return _run_command(tuple(check), DEFAULT_CHECK_TIMEOUT, cwd)


def _run_command(argv: Sequence[str], timeout: float, cwd: Path | None) -> str | None:
    name = shlex.join(argv)
    if not argv:
        raise InvalidRequest("a health check command must not be empty")
    try:
        done = subprocess.run(
            list(argv),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{name}: no answer within {timeout:g} s"
    except OSError as exc:
        return f"{name}: cannot run ({exc.strerror})"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    detail = f": {lines[-1][:200]}" if lines else ""
    return f"{name}: exit status {done.returncode}{detail}"


# --- flows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateReport:
    """How an update or rollback ended: the version running now and why."""

    outcome: Literal["committed", "rolled-back"]
    booted: BootResult
    health: HealthResult | None
    event: str


@dataclass(frozen=True)
class ResumeReport:
    """What :func:`resume` found and did."""

    booted: BootResult
    action: Literal["none", "committed", "rejected"]
    health: HealthResult | None
    final: BootResult
    unwritten_slots: tuple[str, ...]
    written_slots: tuple[str, ...]


def apply_update(
    device: SimulatedDevice,
    installer: SlotInstaller,
    source: ImageSource,
    info: SlotInfo,
    health_checks: Sequence[HealthCheck] = (),
    checkpoint: Checkpoint = no_checkpoint,
) -> UpdateReport:
    """Install ``source`` as ``info``, switch to it, reboot, check, then commit or fall back.

    Returns ``committed`` with the new version running, or ``rolled-back`` with the last
    good version running and the reason in ``event``. Refusals before the switch
    (verification, downgrade) raise and leave the running version untouched.
    """
    slot = installer.install(source, info)
    installer.switch(slot)
    return _trial(device, installer, slot, health_checks, checkpoint)


def apply_rollback(
    device: SimulatedDevice,
    installer: SlotInstaller,
    health_checks: Sequence[HealthCheck] = (),
    checkpoint: Checkpoint = no_checkpoint,
) -> UpdateReport:
    """Operator fallback: the previous good version goes on trial and commits when healthy.

    Raises :class:`.bootenv.DowngradeRefused` when that version is below the security
    floor, :class:`.bootenv.RollbackUnavailable` when there is none.
    """
    slot = installer.rollback()
    return _trial(device, installer, slot, health_checks, checkpoint)


def resume(
    device: SimulatedDevice,
    health_checks: Sequence[HealthCheck] = (),
    *,
    booted: BootResult | None = None,
    installer: SlotInstaller | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> ResumeReport:
    """Start-up after an unknown interruption: finish whatever the last run left open.

    Boots (unless ``booted`` says the bootloader already did). If the running slot is on
    trial, runs ``health_checks`` and commits, or rejects and reboots into the last good
    version. A slot left half-written or written-but-not-switched is left alone and
    reported: the next update overwrites it.
    """
    installer = installer if installer is not None else FileSlotInstaller(device, checkpoint)
    first = booted if booted is not None else device.boot()
    env = device.load_env()
    unwritten = tuple(s for s in SLOTS if env.slots[s] is None)
    written = tuple(s for s in SLOTS if (i := env.slots[s]) is not None and i.state == "written")
    if env.trying is None or env.trying != first.slot or env.last_boot != first.slot:
        return ResumeReport(first, "none", None, first, unwritten, written)
    health = run_health_checks(health_checks, cwd=device.root)
    checkpoint("after-health")
    if health.healthy:
        installer.commit()
        return ResumeReport(first, "committed", health, first, unwritten, ())
    installer.reject(health.reason)
    final = device.boot()
    checkpoint("after-reboot")
    return ResumeReport(first, "rejected", health, final, unwritten, ())


def _trial(
    device: SimulatedDevice,
    installer: SlotInstaller,
    slot: str,
    health_checks: Sequence[HealthCheck],
    checkpoint: Checkpoint,
) -> UpdateReport:
    booted = device.boot()  # the simulated reboot into the trial
    checkpoint("after-boot")
    if booted.slot != slot:  # the bootloader refused the trial (failed verification)
        return UpdateReport("rolled-back", booted, None, booted.event)
    health = run_health_checks(health_checks, cwd=device.root)
    checkpoint("after-health")
    if health.healthy:
        installer.commit()
        return UpdateReport("committed", booted, health, device.load_env().last_event)
    installer.reject(health.reason)
    final = device.boot()
    checkpoint("after-reboot")
    return UpdateReport("rolled-back", final, health, final.event)

"""The key proof: cut the power at every step of an update, and the device still boots.

Three kinds of cut:

* a fault-injection checkpoint that raises :class:`PowerCut` at the N-th checkpoint, for
  every N of a full update (each chunk of the slot write, the switch, the first boot, the
  health checks, the commit or the rejection and the reboot);
* a cut inside the boot environment's own atomic write (after the new file is written and
  fsynced, before the rename), at each of its writes, plus torn leftovers on disk;
* a real ``SIGKILL`` of a process that installs update after update, at random moments.

After each cut a fresh :class:`SimulatedDevice` boots and must come up on one complete,
verified version — the old or the new one; then :func:`resume` runs and the next update
attempt either completes or leaves the old version active.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from garrison.atomicfile import tmp_path as staged_name
from garrison.updates import bootenv
from garrison.updates.bootenv import SlotInfo
from garrison.updates.installer import (
    FileSlotInstaller,
    UpdateReport,
    apply_rollback,
    apply_update,
    resume,
)
from garrison.updates.simdevice import BootResult, SimulatedDevice

KIB = 1024
CHUNK = 128 * KIB


class PowerCut(BaseException):
    """The lights go out: nothing after this point runs, no handler catches it."""


def image(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


IMAGES = {
    "1.0": image(1, 1024 * KIB),
    "1.1": image(11, 1280 * KIB),  # same security version as 1.0
    "2.0": image(2, 1536 * KIB),
    "3.0": image(3, 1024 * KIB + 7),  # a last chunk shorter than the others
}
SECURITY = {"1.0": 1, "1.1": 1, "2.0": 2, "3.0": 3}


def info(version: str) -> SlotInfo:
    return SlotInfo.of(IMAGES[version], version, SECURITY[version])


def stream(version: str) -> Iterator[bytes]:
    data = IMAGES[version]
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


def healthy() -> bool:
    return True


def unhealthy() -> bool:
    return False


# --- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A device history, one operation to cut, and where the device must end up."""

    start: tuple[str, ...]  # versions committed before the operation (after factory 1.0)
    operation: str  # "update" to ``target``, or "rollback"
    target: str
    checks: tuple[Callable[[], bool], ...]
    settled: str  # the version every run must end on

    def old(self) -> str:
        return self.start[-1] if self.start else "1.0"

    def run(self, device: SimulatedDevice, checkpoint: Callable[[str], None]) -> UpdateReport:
        installer = FileSlotInstaller(device, checkpoint, chunk_size=CHUNK)
        if self.operation == "rollback":
            return apply_rollback(device, installer, self.checks, checkpoint=checkpoint)
        return apply_update(
            device,
            installer,
            stream(self.target),
            info(self.target),
            self.checks,
            checkpoint=checkpoint,
        )


def _writes(version: str) -> list[str]:
    chunks = -(-len(IMAGES[version]) // CHUNK)
    return ["slot-write-begin", *["slot-write-chunk"] * chunks, "slot-written"]


_SWITCH = ["before-switch", "after-switch", "after-boot", "after-health"]
_COMMIT = ["before-commit", "after-commit"]
_REJECT = ["before-reject", "after-reject", "after-reboot"]
_ROLLBACK = ["before-rollback", "after-rollback", "after-boot", "after-health"]

SCENARIOS = {
    "first update, healthy": (
        Scenario((), "update", "2.0", (healthy,), settled="2.0"),
        _writes("2.0") + _SWITCH + _COMMIT,
    ),
    "first update, unhealthy": (
        Scenario((), "update", "2.0", (unhealthy,), settled="1.0"),
        _writes("2.0") + _SWITCH + _REJECT,
    ),
    "second update over the previous good slot": (
        Scenario(("2.0",), "update", "3.0", (healthy,), settled="3.0"),
        _writes("3.0") + _SWITCH + _COMMIT,
    ),
    "operator rollback": (
        Scenario(("1.1",), "rollback", "1.0", (healthy,), settled="1.0"),
        _ROLLBACK + _COMMIT,
    ),
}

CUTS = [
    pytest.param(scenario, n, name, id=f"{key} / cut {n}: {name}")
    for key, (scenario, sequence) in SCENARIOS.items()
    for n, name in enumerate(sequence, start=1)
]


def make_device(root: Path, scenario: Scenario) -> SimulatedDevice:
    device = SimulatedDevice.create(root, IMAGES["1.0"], "1.0", SECURITY["1.0"])
    for version in scenario.start:
        installer = FileSlotInstaller(device, chunk_size=CHUNK)
        assert apply_update(device, installer, stream(version), info(version)).outcome == (
            "committed"
        )
    return device


def cut_at(n: int, seen: list[str]) -> Callable[[str], None]:
    def checkpoint(name: str) -> None:
        seen.append(name)
        if len(seen) == n:
            raise PowerCut(name)

    return checkpoint


# --- the invariant ----------------------------------------------------------------------


def boots_one_verified_version(root: Path, allowed: set[str]) -> BootResult:
    """Power on a fresh device object: it must run one complete, verified version."""
    device = SimulatedDevice(root)
    booted = device.boot()
    env = device.load_env()
    slot_info = env.slots[booted.slot]
    assert slot_info is not None and slot_info.version == booted.version
    data = device.slot_path(booted.slot).read_bytes()
    assert len(data) == slot_info.length
    assert hashlib.sha256(data).hexdigest() == slot_info.sha256
    assert booted.version in allowed, f"booted {booted.version}, expected one of {allowed}"
    assert data == IMAGES[booted.version]
    for slot, recorded in env.slots.items():  # a written or good slot is never torn
        if recorded is not None and recorded.state != "bad":
            assert device.slot_verifies(slot, recorded), f"slot {slot} is not what env says"
    return booted


def settled_on(root: Path, version: str) -> None:
    """Exactly one good version runs, no trial is open, and the environment verifies."""
    booted = boots_one_verified_version(root, {version})
    env = SimulatedDevice(root).load_env()
    bootenv.check(env)
    assert env.trying is None
    assert env.active == env.last_good == booted.slot
    slot_info = env.slots[booted.slot]
    assert slot_info is not None and slot_info.state == "good"
    assert env.security_floor == SECURITY[version]  # committed versions only ever rise


# --- checkpoint cuts --------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "sequence"), SCENARIOS.values(), ids=list(SCENARIOS))
def test_checkpoint_sequence_is_complete(
    tmp_path: Path, scenario: Scenario, sequence: list[str]
) -> None:
    """The cut points below are every checkpoint of the operation, in order."""
    device = make_device(tmp_path / "dev", scenario)
    seen: list[str] = []
    report = scenario.run(device, seen.append)
    assert seen == sequence
    assert report.booted.version == scenario.settled
    settled_on(device.root, scenario.settled)


@pytest.mark.parametrize(("scenario", "n", "name"), CUTS)
def test_power_cut_at_every_checkpoint(
    tmp_path: Path, scenario: Scenario, n: int, name: str
) -> None:
    device = make_device(tmp_path / "dev", scenario)
    seen: list[str] = []
    with pytest.raises(PowerCut):
        scenario.run(device, cut_at(n, seen))
    assert seen[-1] == name

    # Power on: one complete, verified version — the old or the new one.
    booted = boots_one_verified_version(device.root, {scenario.old(), scenario.target})

    # The agent starts and finishes what was left open.
    report = resume(SimulatedDevice(device.root), scenario.checks, booted=booted)
    assert report.final.version in {scenario.old(), scenario.target}
    if report.action == "committed":
        assert report.final.version == scenario.target

    # Unless resume finished it, the next attempt completes — or, if the new version is
    # unhealthy, leaves the old one active.
    if report.final.version != scenario.target:
        retry = scenario.run(SimulatedDevice(device.root), lambda name: None)
        assert retry.booted.version == scenario.settled
    settled_on(device.root, scenario.settled)


def test_number_of_cut_points() -> None:
    """Each chunk of each write is a cut point: at least 60 cuts in all."""
    assert len(CUTS) >= 60


# --- cuts inside the boot environment's own write, and torn leftovers -----------------


def test_power_cut_between_bootenv_write_and_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At each bootenv save: the new file is written and fsynced, then the lights go out."""
    renames = 0

    def count(self: Path, target: Path) -> Path:
        nonlocal renames
        renames += self.name == "bootenv.json.tmp"
        return real_replace(self, target)

    real_replace = Path.replace
    counting = make_device(tmp_path / "count", Scenario((), "update", "2.0", (), "2.0"))
    monkeypatch.setattr(Path, "replace", count)
    apply_update(
        counting, FileSlotInstaller(counting, chunk_size=CHUNK), stream("2.0"), info("2.0")
    )
    monkeypatch.undo()
    assert renames >= 5

    for k in range(1, renames + 1):
        root = tmp_path / f"cut{k}"
        device = make_device(root, Scenario((), "update", "2.0", (), "2.0"))
        calls = 0

        def cut(self: Path, target: Path, k: int = k) -> Path:
            nonlocal calls
            if self.name == "bootenv.json.tmp":
                calls += 1
                if calls == k:
                    raise PowerCut("before rename")
            return real_replace(self, target)

        monkeypatch.setattr(Path, "replace", cut)
        with pytest.raises(PowerCut):
            apply_update(
                device, FileSlotInstaller(device, chunk_size=CHUNK), stream("2.0"), info("2.0")
            )
        monkeypatch.undo()
        assert staged_name(device.env_path).exists()  # the complete new env, never renamed
        booted = boots_one_verified_version(root, {"1.0", "2.0"})
        report = resume(SimulatedDevice(root), booted=booted)
        if report.final.version != "2.0":
            installer = FileSlotInstaller(device, chunk_size=CHUNK)
            apply_update(device, installer, stream("2.0"), info("2.0"))
        settled_on(root, "2.0")


@pytest.mark.parametrize(
    "leftover",
    [b"", b'{"active": "b", "tryi', b"\0" * 4096, None],
    ids=["empty", "truncated", "zeros", "complete-but-unrenamed"],
)
def test_torn_leftovers_are_ignored(tmp_path: Path, leftover: bytes | None) -> None:
    device = make_device(tmp_path / "dev", Scenario((), "update", "2.0", (), "2.0"))
    # A slot half written by an interrupted install (its env entry says "being written").
    env = device.load_env()
    device.save_env(bootenv.begin_write(env, "b", info("2.0")))
    device.slot_path("b").write_bytes(IMAGES["2.0"][: 300 * KIB] + b"\xff" * 5)
    # A bootenv.json.tmp leftover: torn, or a complete env that was never renamed.
    tmp = staged_name(device.env_path)
    if leftover is None:
        trial = bootenv.switch_to(bootenv.mark_written(env, "b", info("2.0")), "b", 3)
        tmp.write_bytes(bootenv.to_json(trial))
    else:
        tmp.write_bytes(leftover)

    booted = boots_one_verified_version(device.root, {"1.0"})
    assert booted.slot == "a"
    report = resume(SimulatedDevice(device.root), booted=booted)
    assert report.action == "none" and report.unwritten_slots == ("b",)
    apply_update(device, FileSlotInstaller(device, chunk_size=CHUNK), stream("2.0"), info("2.0"))
    settled_on(device.root, "2.0")
    assert not tmp.exists()


def test_lost_slot_writes_after_the_switch_are_caught_by_verified_boot(tmp_path: Path) -> None:
    """Storage that lied about fsync: the trial slot is torn although the env says written."""
    device = make_device(tmp_path / "dev", Scenario((), "update", "2.0", (), "2.0"))
    installer = FileSlotInstaller(device, chunk_size=CHUNK)
    installer.switch(installer.install(stream("2.0"), info("2.0")))
    with device.slot_path("b").open("r+b") as f:
        f.truncate(700 * KIB)
    booted = boots_one_verified_version(device.root, {"1.0"})
    assert booted.event == "rolled-back: failed verification"
    settled_on(device.root, "1.0")


# --- a real SIGKILL ---------------------------------------------------------------------

CHILD = """
import itertools, sys
from pathlib import Path
from garrison.updates.bootenv import SlotInfo
from garrison.updates.installer import FileSlotInstaller, apply_update, resume
from garrison.updates.simdevice import SimulatedDevice

root, paths = Path(sys.argv[1]), sys.argv[2:]
images = [Path(p).read_bytes() for p in paths]
device = SimulatedDevice(root)
installer = FileSlotInstaller(device, chunk_size=64 * 1024)
resume(device)
print("ready", flush=True)
for k in itertools.count():
    data = images[k % len(images)]
    info = SlotInfo.of(data, Path(paths[k % len(paths)]).stem, 1)
    chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
    checks = [lambda: k % 3 != 2]  # every third update fails its health check
    apply_update(device, installer, chunks, info, checks)
"""


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    versions = {"1.0", "1.1"}
    paths = []
    for version in ("1.1", "1.0"):  # the child alternates these, all security version 1
        path = tmp_path / f"{version}.img"
        path.write_bytes(IMAGES[version])
        paths.append(str(path))
    root = tmp_path / "dev"
    device = SimulatedDevice.create(root, IMAGES["1.0"], "1.0", 1)
    src = Path(__file__).resolve().parents[2] / "src"
    unfinished = 0
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), *paths],
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL

        env = device.load_env()
        unfinished += env.trying is not None or any(
            (i is None and device.slot_path(s).exists()) or (i is not None and i.state == "written")
            for s, i in env.slots.items()
        )
        booted = boots_one_verified_version(root, versions)
        resume(SimulatedDevice(root), booted=booted)
        boots_one_verified_version(root, versions)
    assert unfinished > 0  # the kills did land in the middle of updates

    installer = FileSlotInstaller(device, chunk_size=CHUNK)
    target = "1.0" if device.boot().version == "1.1" else "1.1"
    report = apply_update(device, installer, stream(target), SlotInfo.of(IMAGES[target], target, 1))
    assert report.outcome == "committed"
    settled_on(root, target)

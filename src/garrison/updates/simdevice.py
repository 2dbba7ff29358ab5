"""A simulated A/B device: a directory that behaves like flash plus a bootloader.

Layout::

    ROOT/slots/a.img    slot a's image (exactly the image's bytes)
    ROOT/slots/b.img    slot b's image
    ROOT/bootenv.json   the boot environment (:mod:`.bootenv`), with a checksum
    ROOT/apps/          application packages (:mod:`.apps`)

Guarantees:

* ``bootenv.json`` is only ever replaced atomically (write ``bootenv.json.tmp``, fsync,
  rename, fsync the directory): after a power cut it is the old or the new one, whole.
  A ``bootenv.json.tmp`` leftover is never read.
* :meth:`SimulatedDevice.boot` is the bootloader: it applies :func:`.bootenv.boot`,
  persists the result *before* the slot "runs" (so a crash during a trial boot uses up an
  attempt), then verifies the booted slot — its length and SHA-256 must equal those
  recorded in the environment ("verified boot" lite). A slot that does not verify is
  marked bad and the bootloader falls back (:func:`.bootenv.boot_failed`). It returns only
  for a slot whose bytes verified; otherwise it raises :class:`.bootenv.NoBootableSlot`.

The boot environment itself is trusted storage here, as a bootloader's environment is;
its checksum detects corruption, not tampering.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from garrison.atomicfile import atomic_write, fsync_dir
from garrison.updates import bootenv
from garrison.updates.bootenv import BootEnv, BootEnvCorrupt, SlotInfo, UpdateStateError
from garrison.updates.digests import hash_file


@dataclass(frozen=True)
class BootResult:
    """The slot the bootloader booted, its version, and the environment's last event."""

    slot: str
    version: str
    event: str


class SimulatedDevice:
    """A device directory. Holds no state in memory: every call reads the disk afresh."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def create(
        cls, root: Path, factory_image: bytes, version: str, security_version: int
    ) -> SimulatedDevice:
        """Flash ``factory_image`` into slot a and write the factory boot environment."""
        device = cls(root)
        if device.env_path.exists():
            raise UpdateStateError(
                f"{device.root} already holds a device",
                hint="use SimulatedDevice(root) to open it, or choose an empty directory",
            )
        device.slots_dir.mkdir(parents=True, exist_ok=True)
        device.apps_dir.mkdir(exist_ok=True)
        atomic_write(device.slot_path("a"), factory_image)
        info = SlotInfo.of(factory_image, version, security_version)
        device.save_env(bootenv.factory_env(version, security_version, info.sha256, info.length))
        fsync_dir(device.root)
        return device

    @property
    def env_path(self) -> Path:
        return self.root / "bootenv.json"

    @property
    def slots_dir(self) -> Path:
        return self.root / "slots"

    @property
    def apps_dir(self) -> Path:
        return self.root / "apps"

    def slot_path(self, slot: str) -> Path:
        """The image file of ``slot`` (``slots/a.img`` or ``slots/b.img``)."""
        bootenv.other(slot)  # validates the name
        return self.slots_dir / f"{slot}.img"

    def load_env(self) -> BootEnv:
        """The stored boot environment; :class:`BootEnvCorrupt` if missing or damaged."""
        try:
            data = self.env_path.read_bytes()
        except OSError as exc:
            raise BootEnvCorrupt(
                f"cannot read {self.env_path}: {exc.strerror}",
                hint="is this a device directory? create one with SimulatedDevice.create",
            ) from exc
        return bootenv.from_json(data)

    def save_env(self, env: BootEnv) -> None:
        """Replace the stored environment atomically (the old one or this one survives)."""
        bootenv.check(env)
        atomic_write(self.env_path, bootenv.to_json(env))

    def slot_verifies(self, slot: str, info: SlotInfo) -> bool:
        """Whether ``slot``'s bytes have exactly ``info``'s length and SHA-256."""
        path = self.slot_path(slot)
        digest = hashlib.sha256()
        try:
            if path.stat().st_size != info.length:
                return False
            hash_file(path, [digest])
        except OSError:
            return False
        return digest.hexdigest() == info.sha256

    def boot(self) -> BootResult:
        """Power on: pick a slot as the bootloader does, verify it, return what runs."""
        env = self.load_env()
        while True:
            booted, slot = bootenv.boot(env)
            if booted != env:
                self.save_env(booted)
            info = booted.slots[slot]
            assert info is not None  # bootenv.boot only picks slots that hold a version
            if self.slot_verifies(slot, info):
                return BootResult(slot, info.version, booted.last_event)
            env = bootenv.boot_failed(booted, slot, "failed verification")
            self.save_env(env)

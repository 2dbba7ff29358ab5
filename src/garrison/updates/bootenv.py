"""The A/B boot environment as a pure state machine: a :class:`BootEnv` in, a new one out.

Nothing here touches disk or a clock. The file-backed device (:mod:`.simdevice`) and the
installer (:mod:`.installer`) persist each result atomically; this module alone decides
what is allowed. Every refusal raises a specific error, never returns a flag.

The model (two slots, ``"a"`` and ``"b"``)::

    active          the committed slot, booted when there is no trial
    last_good       the slot the bootloader falls back to (every transition here keeps
                    it equal to ``active``; real bootloader environments store both)
    trying          a slot on trial after a switch, or None
    attempts_left   boots the trial may still use before the bootloader gives up on it
    security_floor  anti-rollback floor: no slot below it is ever switched to or booted
    slots[s]        SlotInfo, or None while the slot is being written (or never was)
    last_boot       the slot the bootloader booted last
    last_event      a human-readable line on the last decision (a rollback keeps its
                    reason across the reboot that follows it)

A slot's life: ``None`` (being written) → ``"written"`` (verified on disk) → on trial →
``"good"`` (committed) or ``"bad"`` (rejected, boot limit, failed verification).

Guarantees that hold after every transition (and are checked by :func:`from_json`):

* the active slot holds a ``"good"`` version; the trial slot, if any, is the other slot
  and holds a ``"written"`` or ``"good"`` version whose security version is ≥ the floor;
* a slot being written is never active, never on trial and never booted;
* the floor only rises, and only when a version is committed.

Exception tree::

    GarrisonError
    ├── UpdateError                  an update step cannot be carried out
    │   ├── UpdateStateError         the step does not fit the current state (e.g. commit
    │   │                            without a trial, writing into the active slot)
    │   ├── SlotNotBootable          the target slot is being written, or is bad
    │   ├── RollbackUnavailable      no previous good version to fall back to
    │   ├── ImageVerificationFailed  an image's length or SHA-256 differs from its release
    │   ├── NoBootableSlot           the bootloader has no verified slot left to boot
    │   └── BootEnvCorrupt           the stored boot environment cannot be read
    └── PolicyError
        └── DowngradeRefused         a security version below the anti-rollback floor
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from garrison.errors import GarrisonError, PolicyError
from garrison.updates.digests import SHA256_HEX

SLOTS: tuple[str, str] = ("a", "b")
SlotState = Literal["written", "good", "bad"]
SLOT_STATES: tuple[SlotState, ...] = ("written", "good", "bad")
FORMAT = 1


class UpdateError(GarrisonError):
    """An update step cannot be carried out."""


class UpdateStateError(UpdateError):
    """The step does not fit the boot environment's current state."""


class SlotNotBootable(UpdateError):
    """The slot is being written or was marked bad: it cannot be switched to."""


class RollbackUnavailable(UpdateError):
    """The other slot holds no good version to return to."""


class ImageVerificationFailed(UpdateError):
    """An image's length or SHA-256 is not the one its release declares."""


class NoBootableSlot(UpdateError):
    """Neither slot holds a version the bootloader may boot: the device needs recovery."""


class BootEnvCorrupt(UpdateError):
    """The stored boot environment is unreadable or inconsistent."""


class DowngradeRefused(PolicyError):
    """A version whose security version is below the device's anti-rollback floor."""


@dataclass(frozen=True)
class SlotInfo:
    """What a slot holds: the version, its anti-rollback number and the image's digest."""

    version: str
    security_version: int
    sha256: str
    length: int
    state: SlotState = "written"

    @classmethod
    def of(cls, image: bytes, version: str, security_version: int) -> SlotInfo:
        """The info of an in-memory ``image`` (its SHA-256 and length), state ``"written"``."""
        return cls(version, security_version, hashlib.sha256(image).hexdigest(), len(image))


@dataclass(frozen=True)
class BootEnv:
    """The boot environment. Treat it as a value: transitions return a new one."""

    active: str
    trying: str | None
    attempts_left: int
    last_good: str
    security_floor: int
    slots: dict[str, SlotInfo | None]
    last_boot: str | None
    last_event: str


def other(slot: str) -> str:
    """The other slot of the pair."""
    _check_slot(slot)
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def factory_env(version: str, security_version: int, sha256: str, length: int) -> BootEnv:
    """A device as it leaves the factory: slot ``a`` good and active, slot ``b`` empty."""
    info = SlotInfo(version, security_version, sha256, length, "good")
    _check_info(info)
    return BootEnv(
        active="a",
        trying=None,
        attempts_left=0,
        last_good="a",
        security_floor=security_version,
        slots={"a": info, "b": None},
        last_boot=None,
        last_event=f"factory: version {version} in slot a",
    )


def inactive(env: BootEnv) -> str:
    """The slot an update is written to: the one that is not active."""
    return other(env.active)


def begin_write(env: BootEnv, slot: str, info: SlotInfo) -> BootEnv:
    """Mark ``slot`` as being written (its info becomes None) before a byte of it changes.

    Refused (:class:`DowngradeRefused`) before anything is written when ``info`` is below
    the floor; refused (:class:`UpdateStateError`) for the active slot or while a trial is
    pending — the trial slot is what the bootloader boots next.
    """
    _check_slot(slot)
    _check_info(info)
    _check_floor(env, info)
    if slot == env.active or slot == env.last_good:
        raise UpdateStateError(
            f"slot {slot} is the active slot and cannot be written",
            hint=f"updates go into the inactive slot ({inactive(env)})",
        )
    if env.trying is not None:
        raise UpdateStateError(
            f"slot {env.trying} is on trial; no new update can be written now",
            hint="let the trial finish (commit or reject) first",
        )
    return _with_slot(env, slot, None, f"writing: slot {slot} version {info.version}")


def abort_write(env: BootEnv, slot: str, reason: str) -> BootEnv:
    """Record that writing ``slot`` was given up; the slot stays empty (never bootable)."""
    _check_slot(slot)
    if env.slots[slot] is not None:
        raise UpdateStateError(f"slot {slot} is not being written")
    return replace(env, last_event=f"install refused: {reason}")


def mark_written(env: BootEnv, slot: str, info: SlotInfo) -> BootEnv:
    """Record that ``slot`` now holds ``info``'s image, verified on disk (state ``"written"``).

    Only a slot that :func:`begin_write` emptied can be marked.
    """
    _check_slot(slot)
    _check_info(info)
    _check_floor(env, info)
    if env.slots[slot] is not None or slot in (env.active, env.last_good, env.trying):
        raise UpdateStateError(
            f"slot {slot} is not being written",
            hint="call begin_write for the inactive slot first",
        )
    written = replace(info, state="written")
    return _with_slot(env, slot, written, f"written: slot {slot} version {info.version}")


def switch_to(env: BootEnv, slot: str, attempts: int) -> BootEnv:
    """Put ``slot`` on trial: the bootloader boots it at most ``attempts`` times.

    The one atomic step of an update. Refused for the active slot, while another trial is
    pending, for a slot being written or bad (:class:`SlotNotBootable`), and for a version
    below the floor (:class:`DowngradeRefused`).
    """
    _check_slot(slot)
    if attempts < 1:
        raise UpdateStateError(f"boot attempts must be at least 1, not {attempts}")
    if slot == env.active:
        raise UpdateStateError(f"slot {slot} is already the active slot")
    if env.trying is not None:
        raise UpdateStateError(
            f"slot {env.trying} is already on trial",
            hint="let the trial finish (commit or reject) first",
        )
    info = env.slots[slot]
    if info is None:
        raise SlotNotBootable(
            f"slot {slot} holds no complete, verified image",
            hint="install an image into it first; nothing unverified is switched to",
        )
    if info.state == "bad":
        raise SlotNotBootable(
            f"slot {slot} (version {info.version}) was marked bad",
            hint="install a fixed release into it",
        )
    _check_floor(env, info)
    return replace(
        env,
        trying=slot,
        attempts_left=attempts,
        last_event=f"switched: slot {slot} version {info.version} on trial ({attempts} boots)",
    )


def boot(env: BootEnv) -> tuple[BootEnv, str]:
    """The bootloader's choice: the new environment and the slot it boots.

    * A trial with attempts left: one attempt is used up and the trial slot boots.
    * A trial with none left: the trial slot is marked bad, the trial ends and
      ``last_good`` boots (``last_event`` = ``"rolled-back: boot limit"``).
    * Otherwise the active slot boots; ``last_event`` is kept, so the reason of a rollback
      survives the reboot that follows it.
    """
    if env.trying is not None:
        slot = env.trying
        if env.attempts_left > 0:
            left = env.attempts_left - 1
            event = f"trial boot: slot {slot} ({left} attempts left)"
            return replace(env, attempts_left=left, last_boot=slot, last_event=event), slot
        env = _end_trial(env, "rolled-back: boot limit")
        return replace(env, last_boot=env.last_good), env.last_good
    info = env.slots[env.active]
    if info is None or info.state != "good":
        raise NoBootableSlot(
            f"the active slot {env.active} holds no good version",
            hint="recover the device (reflash a release)",
        )
    return replace(env, last_boot=env.active), env.active


def boot_failed(env: BootEnv, slot: str, reason: str) -> BootEnv:
    """The booted ``slot`` failed verification: mark it bad and fall back.

    A failing trial ends (next boot: ``last_good``). A failing active slot hands over to
    the other slot if that holds a good version at or above the floor; otherwise
    :class:`NoBootableSlot` — the bootloader never boots below the floor.
    """
    _check_slot(slot)
    if slot == env.trying:
        return _end_trial(env, f"rolled-back: {reason}")
    if slot != env.active:
        raise UpdateStateError(f"slot {slot} is neither on trial nor active; it was not booted")
    fallback = other(slot)
    info = env.slots[fallback]
    env = _with_slot(env, slot, _marked_bad(env, slot), env.last_event)
    if info is None or info.state != "good" or info.security_version < env.security_floor:
        raise NoBootableSlot(
            f"slot {slot} failed ({reason}) and slot {fallback} holds no bootable version",
            hint="recover the device (reflash a release)",
        )
    return replace(
        env,
        active=fallback,
        last_good=fallback,
        trying=None,
        attempts_left=0,
        last_event=f"fell back: slot {slot} {reason}; now on slot {fallback}",
    )


def commit(env: BootEnv) -> BootEnv:
    """The trial slot booted and is healthy: it becomes active, good and last good.

    Raises the floor to the committed security version. Refused unless the device is
    running the trial slot right now.
    """
    slot = _running_trial(env, "commit")
    info = env.slots[slot]
    assert info is not None  # guaranteed by switch_to
    env = _with_slot(env, slot, replace(info, state="good"), env.last_event)
    floor = max(env.security_floor, info.security_version)
    return replace(
        env,
        active=slot,
        last_good=slot,
        trying=None,
        attempts_left=0,
        security_floor=floor,
        last_event=f"committed: slot {slot} version {info.version} (security floor {floor})",
    )


def reject(env: BootEnv, reason: str) -> BootEnv:
    """The trial failed its health checks: it ends, its slot is marked bad.

    The device then reboots into ``last_good``; ``last_event`` keeps ``reason``.
    """
    if env.trying is None:
        raise UpdateStateError("there is no trial to reject")
    return _end_trial(env, f"rejected: {reason}")


def rollback_target(env: BootEnv) -> str:
    """The slot an operator rollback returns to: the other slot, if it may run.

    It must hold a ``"good"`` (once committed) version — else :class:`RollbackUnavailable`
    — whose security version is ≥ the floor — else :class:`DowngradeRefused`: the
    release after it fixed a vulnerability, so the way back is to roll forward.
    """
    if env.trying is not None:
        raise UpdateStateError(
            f"slot {env.trying} is on trial",
            hint="let the trial finish (commit or reject) first",
        )
    slot = inactive(env)
    info = env.slots[slot]
    if info is None or info.state != "good":
        raise RollbackUnavailable(
            f"slot {slot} holds no previous good version to return to",
            hint="install the wanted release as an update instead",
        )
    if info.security_version < env.security_floor:
        raise DowngradeRefused(
            f"version {info.version} (security version {info.security_version}) is below "
            f"the device's security floor {env.security_floor}",
            hint="roll forward: publish a fixed release with security version "
            f"{env.security_floor} or higher",
        )
    return slot


def start_rollback(env: BootEnv, attempts: int = 3) -> BootEnv:
    """Put :func:`rollback_target` on trial, like an update: it commits only when healthy."""
    slot = rollback_target(env)
    env = switch_to(env, slot, attempts)
    info = env.slots[slot]
    assert info is not None
    return replace(env, last_event=f"operator rollback: slot {slot} version {info.version}")


# --- serialization -----------------------------------------------------------------------


def to_json(env: BootEnv) -> bytes:
    """The canonical stored form, with a checksum over its content."""
    body = _body(env)
    return json.dumps({**body, "checksum": _checksum(body)}, indent=2).encode() + b"\n"


def from_json(data: bytes) -> BootEnv:
    """Parse and check a stored environment; :class:`BootEnvCorrupt` if anything is off."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise TypeError("not an object")
        checksum = doc.pop("checksum")
        if checksum != _checksum(doc):
            raise ValueError("checksum mismatch")
        if doc.pop("format") != FORMAT:
            raise ValueError("unknown format")
        if not isinstance(doc["slots"], dict) or set(doc["slots"]) != set(SLOTS):
            raise ValueError(f"slots must be exactly {SLOTS}")
        slots = {s: _info_from(doc["slots"][s]) for s in SLOTS}
        env = BootEnv(
            active=_str(doc["active"]),
            trying=None if doc["trying"] is None else _str(doc["trying"]),
            attempts_left=_int(doc["attempts_left"]),
            last_good=_str(doc["last_good"]),
            security_floor=_int(doc["security_floor"]),
            slots=slots,
            last_boot=None if doc["last_boot"] is None else _str(doc["last_boot"]),
            last_event=_str(doc["last_event"]),
        )
        check(env)
    except (ValueError, TypeError, KeyError, AttributeError, UpdateError, PolicyError) as exc:
        raise BootEnvCorrupt(
            f"the boot environment is corrupt: {exc}",
            hint="recover the device (reflash a release)",
        ) from exc
    return env


def check(env: BootEnv) -> None:
    """Raise :class:`UpdateStateError` unless ``env`` satisfies the module's guarantees."""
    for slot in (env.active, env.last_good, env.trying, env.last_boot):
        if slot is not None:
            _check_slot(slot)
    if set(env.slots) != set(SLOTS):
        raise UpdateStateError(f"slots must be exactly {SLOTS}")
    for name, slot in (("active", env.active), ("last good", env.last_good)):
        info = env.slots[slot]
        if info is None or info.state != "good":
            raise UpdateStateError(f"the {name} slot {slot} holds no good version")
    if env.attempts_left < 0 or env.security_floor < 0:
        raise UpdateStateError("negative attempts or floor")
    if env.trying is not None:
        trial = env.slots[env.trying]
        if env.trying == env.active or trial is None or trial.state == "bad":
            raise UpdateStateError(f"slot {env.trying} cannot be on trial")
        _check_floor(env, trial)
    for info in env.slots.values():
        if info is not None:
            _check_info(info)


# --- helpers -----------------------------------------------------------------------------


def _check_slot(slot: str) -> None:
    if slot not in SLOTS:
        raise UpdateStateError(f"unknown slot {slot!r}", hint=f"slots are {', '.join(SLOTS)}")


def _check_info(info: SlotInfo) -> None:
    if not SHA256_HEX.fullmatch(info.sha256):
        raise UpdateStateError(f"sha256 {info.sha256!r} is not 64 lower-case hex digits")
    if info.length < 0 or info.security_version < 0:
        raise UpdateStateError("length and security version must not be negative")
    if info.state not in SLOT_STATES:
        raise UpdateStateError(f"unknown slot state {info.state!r}")


def _check_floor(env: BootEnv, info: SlotInfo) -> None:
    if info.security_version < env.security_floor:
        raise DowngradeRefused(
            f"version {info.version} has security version {info.security_version}, below "
            f"the device's floor {env.security_floor}",
            hint="a correctly signed old release is still a downgrade; install a release "
            f"with security version {env.security_floor} or higher",
        )


def _with_slot(env: BootEnv, slot: str, info: SlotInfo | None, event: str) -> BootEnv:
    return replace(env, slots={**env.slots, slot: info}, last_event=event)


def _marked_bad(env: BootEnv, slot: str) -> SlotInfo | None:
    info = env.slots[slot]
    return None if info is None else replace(info, state="bad")


def _end_trial(env: BootEnv, event: str) -> BootEnv:
    slot = env.trying
    assert slot is not None
    env = _with_slot(env, slot, _marked_bad(env, slot), event)
    return replace(env, trying=None, attempts_left=0)


def _running_trial(env: BootEnv, step: str) -> str:
    if env.trying is None:
        raise UpdateStateError(f"there is no trial to {step}")
    if env.last_boot != env.trying:
        raise UpdateStateError(
            f"cannot {step}: the device is not running the trial slot {env.trying}",
            hint="reboot into the trial slot first",
        )
    return env.trying


def _body(env: BootEnv) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "active": env.active,
        "trying": env.trying,
        "attempts_left": env.attempts_left,
        "last_good": env.last_good,
        "security_floor": env.security_floor,
        "slots": {s: None if i is None else _info_to(i) for s, i in sorted(env.slots.items())},
        "last_boot": env.last_boot,
        "last_event": env.last_event,
    }


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def _info_to(info: SlotInfo) -> dict[str, Any]:
    return {
        "version": info.version,
        "security_version": info.security_version,
        "sha256": info.sha256,
        "length": info.length,
        "state": info.state,
    }


def _info_from(doc: Any) -> SlotInfo | None:
    if doc is None:
        return None
    state = _str(doc["state"])
    if state not in SLOT_STATES:
        raise ValueError(f"unknown slot state {state!r}")
    return SlotInfo(
        version=_str(doc["version"]),
        security_version=_int(doc["security_version"]),
        sha256=_str(doc["sha256"]),
        length=_int(doc["length"]),
        state=state,
    )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value

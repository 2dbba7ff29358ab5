"""Whether a signed release fits a device (which release a device is offered is its
directive's business: :mod:`garrison.fleet.directives`).

Pure functions over data: a release's declaration (the ``custom.garrison`` of its signed
TUF target), the device's hardware model, its anti-rollback floor and its boot
environment. A check returns nothing or raises a specific error; nothing here touches
disk, network or the clock.

Exception tree::

    GarrisonError
    ├── InvalidRequest
    │   └── DeclarationInvalid   the signed target carries no usable garrison declaration
    └── PolicyError
        ├── NotForThisDevice     other hardware, no hardware model configured, or an
        │                        install type this device cannot take
        ├── PreviouslyRejected   this very artifact already failed its trial here
        └── DowngradeRefused     (:mod:`.bootenv`) a security version below the floor
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from garrison.errors import InvalidRequest, PolicyError
from garrison.updates.bootenv import BootEnv, DowngradeRefused

INSTALL_TYPES = ("image", "app")
# One rule for release names (also app names and hardware models) and one for versions,
# checked by the control plane before a release is signed and by a device before it
# installs: a release the control plane accepts is never refused for its name.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}")
RESERVED = frozenset({"current", "previous"})  # the links in an app's directory (:mod:`.apps`)


def valid_name(value: str) -> bool:
    """Whether ``value`` may name a release (and the app it installs as)."""
    return NAME.fullmatch(value) is not None and value not in RESERVED


def valid_version(value: str) -> bool:
    """Whether ``value`` may be a release's version (and an app's version directory)."""
    return VERSION.fullmatch(value) is not None and value not in RESERVED


class DeclarationInvalid(InvalidRequest):
    """A target's ``custom.garrison`` declaration is missing or malformed."""


class NotForThisDevice(PolicyError):
    """The release is for other hardware, or in a form this device cannot install."""


class PreviouslyRejected(PolicyError):
    """The same artifact was rejected on this device (unhealthy or failed to boot)."""


@dataclass(frozen=True)
class Declaration:
    """What the release managers signed about a release, besides its length and hashes."""

    name: str
    version: str
    hardware: tuple[str, ...]
    security_version: int
    install: str
    health_checks: tuple[tuple[str, ...], ...]


def declaration(custom: Mapping[str, Any] | None) -> Declaration:
    """The declaration in a target's ``custom`` field; :class:`DeclarationInvalid` if absent
    or of the wrong shape (it is signed, but still read defensively)."""
    doc = (custom or {}).get("garrison")
    if not isinstance(doc, dict):
        raise DeclarationInvalid("the target carries no garrison release declaration")
    name, version, hardware = doc.get("name"), doc.get("version"), doc.get("hardware")
    security, install, checks = (
        doc.get("security_version"),
        doc.get("install"),
        doc.get("health_checks", []),
    )
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        raise DeclarationInvalid("the release declaration lacks a name or version")
    if not _strings(hardware) or not hardware:
        raise DeclarationInvalid(f"{name} {version}: hardware must be a list of models")
    if not isinstance(security, int) or isinstance(security, bool) or security < 0:
        raise DeclarationInvalid(f"{name} {version}: security_version must be an integer ≥ 0")
    if not isinstance(install, str):
        raise DeclarationInvalid(f"{name} {version}: install type missing")
    if not isinstance(checks, list) or not all(_strings(c) and c for c in checks):
        raise DeclarationInvalid(f"{name} {version}: health checks must be argv lists")
    return Declaration(
        name,
        version,
        tuple(hardware),
        security,
        install,
        tuple(tuple(check) for check in checks),
    )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_hardware(decl: Declaration, model: str) -> None:
    """Refuse a release whose hardware list does not name ``model``."""
    if not model:
        raise NotForThisDevice(
            "this device has no hardware model configured, so no release can be matched",
            hint="provision it with 'garrison agent enroll --hardware MODEL'",
        )
    if model not in decl.hardware:
        raise NotForThisDevice(
            f"{decl.name} {decl.version} is for hardware {', '.join(decl.hardware)}, "
            f"not this device's {model}",
            hint="choose a release built for this hardware model",
        )


def check_floor(decl: Declaration, floor: int) -> None:
    """Refuse a release below the device's anti-rollback floor, however well signed."""
    if decl.security_version < floor:
        raise DowngradeRefused(
            f"{decl.name} {decl.version} has security version {decl.security_version}, "
            f"below this device's anti-rollback floor {floor}",
            hint=f"install a release with security version {floor} or higher",
        )


def check_install_type(decl: Declaration, supported: Collection[str]) -> None:
    """Refuse an install type this device's installer does not handle."""
    if decl.install not in supported:
        raise NotForThisDevice(
            f"{decl.name} {decl.version} installs as {decl.install!r}, which this device "
            f"does not support (it takes: {', '.join(sorted(supported)) or 'nothing'})"
        )


def check_eligible(
    decl: Declaration, *, model: str, floor: int, supported: Collection[str] = INSTALL_TYPES
) -> None:
    """Every check a release must pass before a byte of it is downloaded."""
    check_install_type(decl, supported)
    check_hardware(decl, model)
    check_floor(decl, floor)


def plan_image(env: BootEnv, sha256: str) -> Literal["install", "current"]:
    """``current`` if the device already runs exactly this image, else ``install``;
    :class:`PreviouslyRejected` if a slot holds it marked bad."""
    active = env.slots[env.active]
    if env.trying is None and active is not None and active.sha256 == sha256:
        return "current"
    for slot, info in env.slots.items():
        if info is not None and info.sha256 == sha256 and info.state == "bad":
            raise PreviouslyRejected(
                f"version {info.version} was rejected on this device before (slot {slot} "
                "is marked bad)",
                hint="publish a fixed release; the device does not retry a rejected image",
            )
    return "install"

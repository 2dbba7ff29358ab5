"""A device's inventory report (pure; no I/O): strict parsing, a canonical digest, and the
differences between two reports for the device's history.

The wire form (``POST /device/v1/checkin``, docs/fleet.md)::

    {"serial": "DM-1000", "hardware": "edge-gw-2", "firmware": "2.0.0",
     "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
     "apps": {"modbus-bridge": "1.2.0"}, "uptime_seconds": 86400,
     "last_update": {"target": "...", "outcome": "rolled-back", "version": "2.0.0",
                     "event": "health check failed: ...", "at": "2026-11-21T10:00:00Z"}}

Guarantees:

* :func:`parse_inventory` accepts exactly this shape: ``serial`` and ``hardware`` are
  required, every other field may be missing or null; unknown fields, wrong types, names
  and versions outside the release rules, control characters and oversize values are refused
  with an :class:`InvalidRequest` naming the field.
* :meth:`Inventory.digest` is the SHA-256 of the canonical JSON without ``uptime_seconds``
  (which changes on every report): equal digests mean nothing worth recording changed.
* :func:`changes` lists every difference between two reports, one entry per field (one per
  app), in a fixed order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from garrison.errors import InvalidRequest
from garrison.updates.eligibility import valid_name, valid_version

MAX_APPS = 64
MAX_UPTIME = 10**10  # about 317 years
MAX_TEXT = 300
FIELDS = {"serial", "hardware", "firmware", "boot", "apps", "uptime_seconds", "last_update"}
BOOT_FIELDS = {"slot", "state", "last_event"}
UPDATE_FIELDS = {"target", "outcome", "version", "event", "at"}

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # serials, as the PKI allows
_SLOT = re.compile(r"[a-z0-9]{1,8}")
_STATE = re.compile(r"[a-z][a-z0-9-]{0,15}")
_TARGET = re.compile(r"[A-Za-z0-9._+~/-]{1,256}")


@dataclass(frozen=True)
class Boot:
    slot: str | None = None
    state: str | None = None
    last_event: str | None = None


@dataclass(frozen=True)
class LastUpdate:
    target: str | None = None
    outcome: str | None = None
    version: str | None = None
    event: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class Inventory:
    """One validated report."""

    serial: str
    hardware: str
    firmware: str | None = None
    boot: Boot = field(default_factory=Boot)
    apps: Mapping[str, str] = field(default_factory=dict)
    uptime_seconds: int | None = None
    agent_version: str | None = None
    last_update: LastUpdate | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical wire form (plus ``agent_version``); parses back to ``self``."""
        return {
            "serial": self.serial,
            "hardware": self.hardware,
            "firmware": self.firmware,
            "boot": {
                "slot": self.boot.slot,
                "state": self.boot.state,
                "last_event": self.boot.last_event,
            },
            "apps": dict(sorted(self.apps.items())),
            "uptime_seconds": self.uptime_seconds,
            "agent_version": self.agent_version,
            "last_update": None
            if self.last_update is None
            else {
                "target": self.last_update.target,
                "outcome": self.last_update.outcome,
                "version": self.last_update.version,
                "event": self.last_update.event,
                "at": self.last_update.at,
            },
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON without the uptime."""
        doc = self.to_json()
        del doc["uptime_seconds"]
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()


def _object(data: object, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field(s) {', '.join(u[:40] for u in unknown[:5])}",
            hint=f"{where} takes: {', '.join(sorted(allowed))}",
        )
    return data


def _text(data: Mapping[str, Any], key: str, where: str, limit: int = MAX_TEXT) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{key} must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{where}.{key} is longer than {limit} characters")
    if not value.isprintable():
        raise InvalidRequest(f"{where}.{key} contains control characters")
    return value


def _matching(
    data: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str], rule: str
) -> str | None:
    value = _text(data, key, where, 256)
    if value is not None and not pattern.fullmatch(value):
        raise InvalidRequest(f"{where}.{key} {value[:80]!r} is not valid ({rule})")
    return value


def _version(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = _text(data, key, where, 64)
    if value is not None and not valid_version(value):
        raise InvalidRequest(
            f"{where}.{key} {value[:80]!r} is not a valid version (A-Z a-z 0-9 . + ~ -)"
        )
    return value


def parse_inventory(data: object, agent_version: str | None = None) -> Inventory:
    """The validated inventory in ``data`` (the check-in's ``inventory``), with the
    check-in's ``agent_version``; :class:`InvalidRequest` naming the first bad field."""
    doc = _object(data, "inventory", FIELDS)
    serial = _matching(doc, "serial", "inventory", _IDENT, "the device's serial")
    hardware = _text(doc, "hardware", "inventory", 64)
    if serial is None or hardware is None:
        raise InvalidRequest("inventory.serial and inventory.hardware are required")
    if not valid_name(hardware):
        raise InvalidRequest(f"inventory.hardware {hardware[:80]!r} is not a valid model name")
    boot = Boot()
    if doc.get("boot") is not None:
        raw = _object(doc["boot"], "inventory.boot", BOOT_FIELDS)
        boot = Boot(
            _matching(raw, "slot", "inventory.boot", _SLOT, "a-z 0-9, at most 8"),
            _matching(raw, "state", "inventory.boot", _STATE, "a-z 0-9 -, at most 16"),
            _text(raw, "last_event", "inventory.boot"),
        )
    apps: dict[str, str] = {}
    if doc.get("apps") is not None:
        raw_apps = doc["apps"]
        if not isinstance(raw_apps, dict):
            raise InvalidRequest("inventory.apps must be an object of app name to version")
        if len(raw_apps) > MAX_APPS:
            raise InvalidRequest(f"inventory.apps: at most {MAX_APPS} apps")
        for name, version in raw_apps.items():
            if not valid_name(name):
                raise InvalidRequest(f"inventory.apps: {str(name)[:80]!r} is not a valid app name")
            checked = _version(raw_apps, name, "inventory.apps")
            if checked is None:
                raise InvalidRequest(f"inventory.apps.{name} must be a version string")
            apps[name] = version
    uptime = doc.get("uptime_seconds")
    if uptime is not None and (type(uptime) is not int or not 0 <= uptime <= MAX_UPTIME):
        raise InvalidRequest(f"inventory.uptime_seconds must be a whole number 0 to {MAX_UPTIME}")
    last = None
    if doc.get("last_update") is not None:
        raw = _object(doc["last_update"], "inventory.last_update", UPDATE_FIELDS)
        where = "inventory.last_update"
        at = _text(raw, "at", where, 40)
        if at is not None:
            try:
                dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidRequest(f"{where}.at must be an ISO 8601 time") from None
        last = LastUpdate(
            _matching(raw, "target", where, _TARGET, "a target path"),
            _matching(raw, "outcome", where, _STATE, "a-z 0-9 -, at most 16"),
            _version(raw, "version", where),
            _text(raw, "event", where),
            at,
        )
    if agent_version and (len(agent_version) > 32 or not valid_version(agent_version)):
        raise InvalidRequest(
            f"agent_version {agent_version[:80]!r} is not a valid version (at most 32)"
        )
    return Inventory(
        serial,
        hardware,
        _version(doc, "firmware", "inventory"),
        boot,
        dict(sorted(apps.items())),
        uptime,
        agent_version or None,
        last,
    )


@dataclass(frozen=True)
class Change:
    """One difference: a history kind, a one-line summary, structured details."""

    kind: str
    summary: str
    details: dict[str, object]


def _show(value: object) -> str:
    return "none" if value is None else str(value)


def _boot(boot: Boot) -> str:
    if boot.slot is None and boot.state is None:
        return "unknown"
    return f"slot {_show(boot.slot)} ({_show(boot.state)})"


def changes(old: Inventory | None, new: Inventory) -> list[Change]:
    """What changed from ``old`` to ``new`` (the first report: one summary entry)."""
    if old is None:
        apps = ", ".join(f"{n} {v}" for n, v in new.apps.items()) or "no apps"
        return [
            Change(
                "inventory",
                f"first inventory: firmware {_show(new.firmware)}, {_boot(new.boot)}, {apps}",
                {"inventory": new.to_json()},
            )
        ]
    found: list[Change] = []
    if old.firmware != new.firmware:
        found.append(
            Change(
                "inventory",
                f"firmware {_show(old.firmware)} → {_show(new.firmware)}",
                {"field": "firmware", "from": old.firmware, "to": new.firmware},
            )
        )
    if old.boot != new.boot:
        found.append(
            Change(
                "inventory",
                f"boot {_boot(old.boot)} → {_boot(new.boot)}"
                + (f": {new.boot.last_event}" if new.boot.last_event else ""),
                {
                    "field": "boot",
                    "from": old.to_json()["boot"],
                    "to": new.to_json()["boot"],
                },
            )
        )
    for name in sorted(set(old.apps) | set(new.apps)):
        before, after = old.apps.get(name), new.apps.get(name)
        if before == after:
            continue
        if before is None:
            summary = f"app {name} {after} installed"
        elif after is None:
            summary = f"app {name} removed (was {before})"
        else:
            summary = f"app {name} {before} → {after}"
        found.append(
            Change("inventory", summary, {"field": f"apps.{name}", "from": before, "to": after})
        )
    if old.agent_version != new.agent_version:
        found.append(
            Change(
                "inventory",
                f"agent {_show(old.agent_version)} → {_show(new.agent_version)}",
                {"field": "agent_version", "from": old.agent_version, "to": new.agent_version},
            )
        )
    if old.last_update != new.last_update and new.last_update is not None:
        last = new.last_update
        found.append(
            Change(
                "update",
                f"update {_show(last.outcome)}: {_show(last.version)}"
                + (f" ({last.event})" if last.event else ""),
                {"last_update": new.to_json()["last_update"]},
            )
        )
    return found


def from_stored(data: str) -> Inventory:
    """An inventory stored by :meth:`Inventory.to_json` (``device_inventory.data``)."""
    doc = json.loads(data)
    agent = doc.pop("agent_version", None)
    return parse_inventory(doc, agent)

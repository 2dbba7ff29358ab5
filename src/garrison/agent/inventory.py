"""The device's inventory, as it reports it on check-in (docs/fleet.md)::

    {"serial": "DM-1000", "hardware": "edge-gw-2", "firmware": "2.0.0",
     "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
     "apps": {"modbus-bridge": "1.2.0"},
     "uptime_seconds": 86400,
     "last_update": {"target": "...", "outcome": "rolled-back", "version": "2.0.0",
                     "event": "health check failed: ...", "at": "2026-11-21T10:00:00Z"}}

* ``firmware`` is the version of the active (committed) slot; ``boot.slot`` the slot the
  bootloader booted last (the active one if it never booted); ``boot.state`` is
  ``committed``, or ``trial`` while a version is on trial (the agent finishes a trial
  before it reports, so ``trial`` is seen only if it could not). ``last_event`` is the boot
  environment's last decision.
* ``apps`` maps every installed app to its running version (apps without a running
  version are not listed).
* ``uptime_seconds`` is the host's uptime (``/proc/uptime``: on a real device, the time
  since the device booted), or the agent process's uptime where the host does not say.
* ``last_update`` is the outcome of the agent's last install or rollback, kept by the agent.

:func:`inventory_digest` is the SHA-256 of the canonical JSON of everything *but*
``uptime_seconds`` (which changes every second): equal digests mean nothing worth reporting
changed, and the agent does not check in again (except for its heartbeat).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from garrison.updates import apps
from garrison.updates.bootenv import BootEnv

_STARTED = time.monotonic()
VOLATILE = ("uptime_seconds",)


def host_uptime(proc_uptime: Path = Path("/proc/uptime")) -> int:
    """Seconds since the host booted; the agent process's uptime where unknown."""
    try:
        return int(float(proc_uptime.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return int(time.monotonic() - _STARTED)


def printable(text: str, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` printable characters (what the control
    plane accepts in a report)."""
    return "".join(c if c.isprintable() else " " for c in text)[:limit]


def boot_report(env: BootEnv) -> dict[str, str]:
    """``boot`` of the inventory from a boot environment (pure)."""
    return {
        "slot": env.last_boot or env.active,
        "state": "trial" if env.trying is not None else "committed",
        "last_event": printable(env.last_event),
    }


def running_firmware(env: BootEnv) -> str:
    """The version of the active slot: what the device runs when no trial is pending."""
    info = env.slots[env.active]
    assert info is not None  # the active slot always holds a good version (bootenv)
    return info.version


def build_inventory(
    serial: str,
    hardware: str,
    env: BootEnv | None,
    installed: dict[str, str | None],
    uptime_seconds: int,
    last_update: dict[str, Any] | None,
) -> dict[str, Any]:
    """The inventory document (pure). ``env`` None: the agent has no device to report on."""
    return {
        "serial": serial,
        "hardware": hardware,
        "firmware": None if env is None else running_firmware(env),
        "boot": None if env is None else boot_report(env),
        "apps": {name: version for name, version in sorted(installed.items()) if version},
        "uptime_seconds": max(0, uptime_seconds),
        "last_update": last_update,
    }


def collect_inventory(
    serial: str,
    hardware: str,
    device_root: Path | None,
    env: BootEnv | None,
    last_update: dict[str, Any] | None,
    uptime_seconds: int,
) -> dict[str, Any]:
    """The inventory of the device at ``device_root`` (None: no device)."""
    installed = {} if device_root is None else apps.installed_apps(device_root)
    return build_inventory(serial, hardware, env, installed, uptime_seconds, last_update)


def inventory_digest(inventory: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``inventory`` without its volatile fields."""
    stable = {k: v for k, v in inventory.items() if k not in VOLATILE}
    data = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()

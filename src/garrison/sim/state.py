"""What a simulated device runs and remembers (pure; no I/O, no clock of its own).

A simulated device has no slots or files: it is this record. It follows the real agent's
rules by calling the agent's own pure cores — :func:`garrison.agent.converge.plan` decides
what to do about a directive, :func:`garrison.agent.inventory.inventory_digest` decides when
the inventory changed — and reports in the agent's wire forms and states:

* firmware from a campaign: ``downloading`` → ``downloaded`` → ``installing`` →
  ``committed`` or ``rolled-back`` (the health check failed; the previous version runs
  again, as after an A/B trial boot), each (campaign, target, state) queued once;
* a campaign's firmware that already runs is reported ``committed`` once;
* a target that rolled back here is held as the agent's planner decides (not tried again;
  a campaign other than the one it failed in gets a ``failed`` report);
* an operator's ``rollback`` command puts the previous version back (``committed``), or is
  ``refused`` when there is none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from garrison.agent.converge import AppFacts, Facts, Failure
from garrison.agent.directive import AppEntry, Directive, FirmwareEntry
from garrison.agent.inventory import inventory_digest

HEARTBEAT_POLLS = 12  # as the agent: a check-in at least every 12 polls
MAX_REPORTED = 64


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeviceState:
    """One simulated device's software and the agent-side record it keeps."""

    serial: str
    hardware: str
    firmware: str
    previous: str | None = None  # the other slot's good version: what a rollback boots
    slot: str = "a"
    boot_state: str = "committed"
    last_event: str = "factory image"
    apps: dict[str, str] = field(default_factory=dict)
    app_configs: dict[str, str | None] = field(default_factory=dict)
    downloaded: set[str] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    last_update: dict[str, Any] | None = None
    directive: Directive | None = None
    poll: tuple[int, int] = (1800, 180)
    inventory_digest: str | None = None
    polls_since_checkin: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)
    reported: list[tuple[int | None, str, str]] = field(default_factory=list)
    installs: int = 0
    rollbacks: int = 0

    # -- what the device tells the control plane ----------------------------------------

    def inventory(self, uptime_seconds: int) -> dict[str, Any]:
        """The check-in inventory, in the agent's shape (docs/fleet.md)."""
        return {
            "serial": self.serial,
            "hardware": self.hardware,
            "firmware": self.firmware,
            "boot": {"slot": self.slot, "state": self.boot_state, "last_event": self.last_event},
            "apps": dict(sorted(self.apps.items())),
            "uptime_seconds": max(0, uptime_seconds),
            "last_update": self.last_update,
        }

    def inventory_changed(self) -> bool:
        """Whether the inventory differs from the one last checked in."""
        return inventory_digest(self.inventory(0)) != self.inventory_digest

    def check_in_due(self, heartbeat_polls: int = HEARTBEAT_POLLS) -> bool:
        """Whether this cycle checks in: the inventory changed, or the heartbeat is due."""
        return self.inventory_changed() or self.polls_since_checkin + 1 >= heartbeat_polls

    def checked_in(self, inventory: dict[str, Any], poll: int, jitter: int) -> None:
        self.inventory_digest = inventory_digest(inventory)
        self.polls_since_checkin = 0
        self.poll = (poll, jitter)

    def facts(self) -> Facts:
        """What the agent's planner needs to know about this device."""
        return Facts(
            firmware=self.firmware,
            apps={n: AppFacts(v, self.app_configs.get(n)) for n, v in self.apps.items()},
            downloaded=frozenset(self.downloaded),
            failures=tuple(self.failures),
        )

    def report(
        self, target: str, campaign: int | None, version: str, state: str, detail: str = ""
    ) -> None:
        """Queue a progress report, as the agent does: only a campaign's target, each
        (campaign, target, state) once."""
        if campaign is None:
            return
        key = (campaign, target, state)
        if key in self.reported:
            return
        self.reported = [*self.reported[-(MAX_REPORTED - 1) :], key]
        self.outbox.append(
            {
                "campaign": campaign,
                "target": target,
                "state": state,
                "version": version,
                "detail": detail[:300],
            }
        )

    # -- what the device does ------------------------------------------------------------

    def downloading(self, firmware: FirmwareEntry) -> None:
        self.report(firmware.target, firmware.campaign, firmware.version, "downloading")

    def downloaded_firmware(self, firmware: FirmwareEntry) -> None:
        self.downloaded.add(firmware.target)
        self.report(firmware.target, firmware.campaign, firmware.version, "downloaded")

    def installing(self, firmware: FirmwareEntry) -> None:
        self.report(firmware.target, firmware.campaign, firmware.version, "installing")

    def installed_firmware(self, firmware: FirmwareEntry, healthy: bool, now: dt.datetime) -> str:
        """The end of an A/B install of ``firmware``: committed when ``healthy``, else
        rolled back to the version that ran. Returns the outcome."""
        other = "b" if self.slot == "a" else "a"
        self.installs += 1
        if healthy:
            outcome = "committed"
            event = f"booted {other}: {firmware.version} committed"
            self.previous, self.firmware, self.slot = self.firmware, firmware.version, other
        else:
            outcome = "rolled-back"
            event = f"health check failed on {other}: back to {self.firmware} on {self.slot}"
            self.rollbacks += 1
            self.failures = [
                *[f for f in self.failures if f.target != firmware.target],
                Failure(firmware.target, firmware.campaign, firmware.version, outcome, event, now),
            ]
        self.last_event = event
        self.boot_state = "committed"
        self.downloaded.discard(firmware.target)
        self.last_update = {
            "target": firmware.target,
            "outcome": outcome,
            "version": self.firmware,
            "event": event,
            "at": _stamp(now),
        }
        self.report(firmware.target, firmware.campaign, firmware.version, outcome, event)
        return outcome

    def confirm(self, firmware: FirmwareEntry | None) -> None:
        """A campaign's firmware that already runs here is reported ``committed`` once."""
        if firmware is None or firmware.campaign is None or firmware.version != self.firmware:
            return
        self.report(
            firmware.target, firmware.campaign, firmware.version, "committed", "already runs"
        )

    def held(self, failure: Failure, campaign: int | None) -> None:
        """A target that failed here before, named again by ``campaign``: reported
        ``failed`` to a campaign other than the one it failed in, never tried again."""
        if campaign is not None and campaign != failure.campaign:
            self.report(
                failure.target,
                campaign,
                failure.version,
                "failed",
                f"{failure.outcome} on this device before ({failure.event}); not tried again",
            )

    def installed_app(self, entry: AppEntry) -> None:
        self.apps[entry.name] = entry.version
        self.downloaded.discard(entry.target)

    def configured_app(self, name: str, digest: str | None) -> None:
        self.app_configs[name] = digest

    def removed_app(self, name: str) -> None:
        self.apps.pop(name, None)
        self.app_configs.pop(name, None)

    def operator_rollback(self, now: dt.datetime) -> tuple[str, str]:
        """An operator's rollback command: ``(outcome, detail)`` for
        ``POST /device/v1/commands/{id}``."""
        if self.previous is None:
            return "refused", "no previous version to go back to"
        other = "b" if self.slot == "a" else "a"
        back, self.previous = self.previous, self.firmware
        self.firmware, self.slot = back, other
        event = f"operator rollback: booted {other}: {back} committed"
        self.last_event = event
        self.last_update = {
            "target": None,
            "outcome": "committed",
            "version": back,
            "event": event,
            "at": _stamp(now),
        }
        return "committed", event

"""Convergence as a pure decision: a directive, the device's facts and ``now`` in, an ordered
plan out. No I/O and no clock: the agent (:mod:`.executor`) gathers the facts, calls
:func:`plan` and carries the steps out.

The rules, in the order the steps come:

1. **Firmware.** When the directive names a firmware whose version is not the one running:
   a target that already failed here (rolled back after its trial, or refused for good) is
   never retried, whichever campaign or desired state names it again: the plan holds it
   (:class:`Hold`), and a campaign other than the one it failed in is told ``failed``
   instead (the device would refuse the image anyway: its slot is marked bad). Only a
   changed directive — another target, e.g. a fixed release — is tried. Otherwise the
   artifact is downloaded (unless a verified copy is already held) and, only while the
   maintenance window is open, installed (an A/B install: switch, boot, health checks,
   commit or roll back).
2. **Apps**, only when the directive manages them (``apps`` is a list): every installed
   app the directive does not name is removed — except the apps it *keeps*
   (``kept_apps``: the control plane cannot offer their release here), which are left
   exactly as they are; every named app that does not run in its
   version is downloaded and (window open) installed, unless that target already failed
   here; an app whose stored configuration differs from the directive's gets it written
   (after the install, if there is one; the configuration lives beside the versions and
   is kept across them).
3. **Maintenance window.** Downloads happen at any time; every change to what runs
   (install, configure, remove) waits for the window. When something waits, the plan ends
   with one :class:`WaitForWindow` saying when the window opens next. The plan carries the
   window (:attr:`Plan.window`): the executor asks it again right before each change
   (:func:`changes`), since a long download may end after the window closed.

An empty plan means the device already is what the directive says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from garrison.agent.directive import Directive, FirmwareEntry
from garrison.fleet.windows import Window

# -- the facts --------------------------------------------------------------------------


@dataclass(frozen=True)
class AppFacts:
    """An app directory on the device: the version that runs (None: none) and the SHA-256
    of its stored configuration (None: no configuration)."""

    version: str | None
    config_digest: str | None = None


@dataclass(frozen=True)
class Failure:
    """A target that failed on this device: ``rolled-back`` (its trial failed and the
    previous version runs again) or ``failed`` (refused before anything ran)."""

    target: str
    campaign: int | None
    version: str
    outcome: str
    event: str
    at: dt.datetime

    def matches(self, target: str) -> bool:
        return self.target == target


@dataclass(frozen=True)
class Facts:
    """What the device runs and holds, as the agent read it just before planning."""

    firmware: str
    apps: Mapping[str, AppFacts] = field(default_factory=dict)
    downloaded: frozenset[str] = frozenset()
    failures: tuple[Failure, ...] = ()

    def failure(self, target: str) -> Failure | None:
        return next((f for f in self.failures if f.matches(target)), None)


# -- the steps --------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadFirmware:
    firmware: FirmwareEntry


@dataclass(frozen=True)
class InstallFirmware:
    firmware: FirmwareEntry


@dataclass(frozen=True)
class DownloadApp:
    name: str
    version: str
    target: str


@dataclass(frozen=True)
class InstallApp:
    name: str
    version: str
    target: str


@dataclass(frozen=True)
class ConfigureApp:
    name: str
    config: Mapping[str, object] | None


@dataclass(frozen=True)
class RemoveApp:
    name: str
    version: str | None


@dataclass(frozen=True)
class Hold:
    """A target this device does not try again: it failed here. ``campaign`` is the
    directive's campaign naming it now (told ``failed`` if it is not the one it failed in)."""

    failure: Failure
    campaign: int | None = None


@dataclass(frozen=True)
class WaitForWindow:
    """Changes that wait for the maintenance window, which opens at ``opens`` (UTC)."""

    opens: dt.datetime
    timezone: str
    waiting: tuple[str, ...]

    def local_opening(self) -> str:
        """When the window opens, in its own time zone: ``Sun 02:00 Europe/Berlin``."""
        from zoneinfo import ZoneInfo

        local = self.opens.astimezone(ZoneInfo(self.timezone))
        return f"{local:%a %Y-%m-%d %H:%M} {self.timezone}"


Step = (
    DownloadFirmware
    | InstallFirmware
    | DownloadApp
    | InstallApp
    | ConfigureApp
    | RemoveApp
    | Hold
    | WaitForWindow
)


@dataclass(frozen=True)
class Plan:
    """The steps, in order, and the maintenance window they were planned under (None:
    always open)."""

    steps: tuple[Step, ...]
    window: Window | None = None

    @property
    def idle(self) -> bool:
        """Nothing to do now or later (held failures aside)."""
        return all(isinstance(s, Hold) for s in self.steps)

    def describe(self) -> list[str]:
        """One line per step, for people (``garrison agent status``)."""
        return [describe(step) for step in self.steps] or ["up to date: nothing to do"]


# -- the decision -----------------------------------------------------------------------


def plan(directive: Directive, facts: Facts, now: dt.datetime) -> Plan:
    """The steps that bring a device with ``facts`` to ``directive`` at ``now`` (see the
    module docstring). Pure and deterministic: the same inputs give the same plan."""
    if now.tzinfo is None:
        raise ValueError("plan needs an aware datetime")
    window = directive.window
    window_open = window is None or window.is_open(now)
    steps: list[Step] = []
    waiting: list[str] = []

    firmware = directive.firmware
    if firmware is not None and firmware.version != facts.firmware:
        failure = facts.failure(firmware.target)
        if failure is not None:
            steps.append(Hold(failure, firmware.campaign))
        else:
            if firmware.target not in facts.downloaded:
                steps.append(DownloadFirmware(firmware))
            if window_open:
                steps.append(InstallFirmware(firmware))
            else:
                waiting.append(waiting_for(InstallFirmware(firmware)))

    if directive.apps is not None:
        wanted = {a.name for a in directive.apps} | directive.kept
        for name, app in sorted(facts.apps.items()):
            if name not in wanted:
                if window_open:
                    steps.append(RemoveApp(name, app.version))
                else:
                    waiting.append(waiting_for(RemoveApp(name, app.version)))
        for entry in directive.apps:
            have = facts.apps.get(entry.name, AppFacts(None))
            runs = have.version == entry.version
            if not runs:
                failure = facts.failure(entry.target)
                if failure is not None:
                    steps.append(Hold(failure))
                    continue
                if entry.target not in facts.downloaded:
                    steps.append(DownloadApp(entry.name, entry.version, entry.target))
                if window_open:
                    steps.append(InstallApp(entry.name, entry.version, entry.target))
                else:
                    waiting.append(waiting_for(InstallApp(entry.name, entry.version, entry.target)))
            if have.config_digest != entry.config_digest:
                if window_open:
                    steps.append(ConfigureApp(entry.name, entry.config))
                elif runs:
                    waiting.append(waiting_for(ConfigureApp(entry.name, entry.config)))

    if waiting:
        assert window is not None  # only a closed window makes anything wait
        steps.append(WaitForWindow(window.next_open(now), window.timezone, tuple(waiting)))
    return Plan(tuple(steps), window)


def changes(step: Step) -> bool:
    """Whether ``step`` changes what runs (install, configure, remove): only inside the
    maintenance window."""
    return isinstance(step, InstallFirmware | InstallApp | ConfigureApp | RemoveApp)


def waiting_for(step: Step) -> str:
    """How a change that waits for the window is named in :class:`WaitForWindow`."""
    match step:
        case InstallFirmware(firmware):
            return f"firmware {firmware.version}"
        case InstallApp(name, version, _target):
            return f"app {name} {version}"
        case ConfigureApp(name, _config):
            return f"configuring app {name}"
        case RemoveApp(name, _version):
            return f"removing app {name}"
    raise AssertionError(f"{step!r} does not wait for the window")


def wait_for_window(window: Window, steps: tuple[Step, ...], now: dt.datetime) -> WaitForWindow:
    """The :class:`WaitForWindow` of ``steps`` (their changes) left undone at ``now``, with
    the window closed."""
    waiting = tuple(waiting_for(step) for step in steps if changes(step))
    return WaitForWindow(window.next_open(now), window.timezone, waiting)


def describe(step: Step) -> str:
    """A line for people about one step."""
    match step:
        case DownloadFirmware(firmware):
            return f"download firmware {firmware.version} ({firmware.target})"
        case InstallFirmware(firmware):
            via = f" for campaign {firmware.campaign}" if firmware.campaign else ""
            return f"install firmware {firmware.version}{via} (A/B: boot, health checks, commit)"
        case DownloadApp(name, version, target):
            return f"download app {name} {version} ({target})"
        case InstallApp(name, version, _target):
            return f"install app {name} {version}"
        case ConfigureApp(name, config):
            return f"configure app {name}" if config is not None else f"clear app {name} config"
        case RemoveApp(name, version):
            return f"remove app {name}" + (f" {version}" if version else "")
        case Hold(failure, _campaign):
            return (
                f"not retrying {failure.target}: {failure.outcome} here at "
                f"{failure.at:%Y-%m-%d %H:%M} UTC ({failure.event}); waits for another target"
            )
        case WaitForWindow():
            return f"waiting for maintenance window (opens {step.local_opening()}): " + ", ".join(
                step.waiting
            )
    raise AssertionError(f"unknown step {step!r}")

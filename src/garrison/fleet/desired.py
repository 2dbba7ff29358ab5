"""The conflict rule of docs/fleet.md as a pure function (no I/O).

For one device the entries that apply are its own device entry, then the entries of every
group it is a member of, ordered by priority descending, then group name ascending (byte
order). :func:`resolve` turns them into the one desired state of the device:

* firmware: the first entry in that order that names a firmware release;
* apps: managed if any entry names an app list (an empty list means "no apps"); for each
  app name, the first entry that mentions it decides: present (release and configuration)
  or absent;
* maintenance window: the window of the first group in the same order that has one;
* pinned: the device entry names a firmware release (group campaigns skip the device).

The result depends only on the set of entries, never on the order they are given in: the
same inputs give the same output on every replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEVICE = "device"


@dataclass(frozen=True)
class AppWant:
    """One app in an entry: ``release`` (a release id) with ``config``, or absent
    (``release`` None: remove it)."""

    release: int | None
    config: Mapping[str, Any] | None = None

    @property
    def absent(self) -> bool:
        return self.release is None


@dataclass(frozen=True)
class Entry:
    """One desired-state entry: a firmware release id (or None: says nothing about firmware)
    and an app list (or None: says nothing about apps; ``{}``: no apps)."""

    firmware: int | None = None
    apps: Mapping[str, AppWant] | None = None


@dataclass(frozen=True)
class GroupEntry:
    """A group the device is a member of: its name, priority, entry and window (any
    value; None is "no window")."""

    name: str
    priority: int
    entry: Entry | None = None
    window: Any = None


@dataclass(frozen=True)
class Resolved:
    """The desired state of one device and where each part came from (``"device"`` or a
    group name)."""

    firmware: int | None = None
    firmware_from: str | None = None
    pinned: bool = False
    apps: dict[str, AppWant] | None = None  # includes absent apps (release None)
    apps_from: dict[str, str] = field(default_factory=dict)
    window: Any = None
    window_from: str | None = None

    def present_apps(self) -> dict[str, AppWant]:
        """The apps that must run (absent ones left out), by name."""
        return {n: a for n, a in (self.apps or {}).items() if not a.absent}


def group_order(groups: Iterable[GroupEntry]) -> list[GroupEntry]:
    """Groups in rule order: priority descending, then name ascending (byte order)."""
    return sorted(groups, key=lambda g: (-g.priority, g.name.encode("utf-8")))


def resolve(device: Entry | None, groups: Iterable[GroupEntry]) -> Resolved:
    """The desired state of a device with entry ``device`` in ``groups`` (docs/fleet.md)."""
    ordered = group_order(groups)
    entries: list[tuple[str, Entry]] = [(DEVICE, device)] if device is not None else []
    entries += [(g.name, g.entry) for g in ordered if g.entry is not None]

    firmware, firmware_from = None, None
    for source, entry in entries:
        if entry.firmware is not None:
            firmware, firmware_from = entry.firmware, source
            break

    apps: dict[str, AppWant] | None = None
    apps_from: dict[str, str] = {}
    for source, entry in entries:
        if entry.apps is None:
            continue
        if apps is None:
            apps = {}
        for name in sorted(entry.apps):
            if name not in apps:
                apps[name] = entry.apps[name]
                apps_from[name] = source

    window, window_from = None, None
    for group in ordered:
        if group.window is not None:
            window, window_from = group.window, group.name
            break

    return Resolved(
        firmware=firmware,
        firmware_from=firmware_from,
        pinned=device is not None and device.firmware is not None,
        apps=None if apps is None else dict(sorted(apps.items())),
        apps_from=dict(sorted(apps_from.items())),
        window=window,
        window_from=window_from,
    )

"""Desired state per group and per device (``desired_state``): the firmware release and the
app packages (versions and configuration) that must run there.

Guarantees:

* Firmware names a *published* ``image`` release, apps name published ``app`` releases, by
  name and version; a configuration is a JSON object of at most 16 KiB. Anything else is
  refused with :class:`InvalidRequest` before anything is written.
* Every change recomputes the directives of the devices it reaches (the group's members, or
  the device) in the same transaction, and is audited there by :func:`set_desired` /
  :func:`clear_desired` (:func:`set_group_firmware` leaves the audit to its caller).
* A group's entry is changed only with the group's row locked ``FOR UPDATE`` (taken before
  its members are read): a device being added to the group by a concurrent transaction is
  recomputed by whichever of the two commits second, so its directive has both changes
  (:mod:`garrison.fleet.group_locks`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, select

from garrison.errors import InvalidRequest
from garrison.fleet.directives import entry_of, load_releases, recompute
from garrison.fleet.group_locks import lock_group, lock_groups
from garrison.fleet.upsert import upsert
from garrison.store.audit_log import append_audit
from garrison.store.tables import desired_state, device_groups, devices, group_members, releases
from garrison.updates.eligibility import valid_name

Scope = Literal["group", "device"]
MAX_APPS = 64
MAX_CONFIG_BYTES = 16 * 1024


@dataclass(frozen=True)
class ReleaseRef:
    """A release by name and version."""

    name: str
    version: str


@dataclass(frozen=True)
class AppSpec:
    """An app in a desired state: ``version`` (with ``config``) or ``absent``."""

    name: str
    version: str | None = None
    config: Mapping[str, Any] | None = None
    absent: bool = False


@dataclass(frozen=True)
class DesiredSpec:
    """What an operator asks for: firmware (None: says nothing) and apps (None: says
    nothing; empty: no apps)."""

    firmware: ReleaseRef | None = None
    apps: list[AppSpec] | None = None


@dataclass(frozen=True)
class AppView:
    name: str
    version: str | None
    target: str | None
    config: dict[str, Any] | None
    absent: bool


@dataclass(frozen=True)
class FirmwareView:
    name: str
    version: str
    target: str


@dataclass(frozen=True)
class DesiredView:
    """A stored entry as the API shows it."""

    scope: str
    name: str
    firmware: FirmwareView | None
    apps: list[AppView] | None
    updated_by: str
    updated_at: dt.datetime


def scope_id(conn: Connection, scope: Scope, name: str, *, lock: bool = False) -> int:
    """The id of group ``name`` or device ``name`` (a serial); :class:`LookupError` if none.
    With ``lock``, a group's row is locked ``FOR UPDATE`` (a device's row is left to
    ``recompute``)."""
    if scope == "group" and lock:
        return lock_group(conn, name, shared=False)
    if scope == "group":
        found = conn.execute(
            select(device_groups.c.id).where(device_groups.c.name == name)
        ).scalar()
        if found is None:
            raise LookupError(f"no group named {name!r}")
    else:
        found = conn.execute(select(devices.c.id).where(devices.c.serial == name)).scalar()
        if found is None:
            raise LookupError(f"no device with serial {name!r}")
    return int(found)


def _release(conn: Connection, ref: ReleaseRef, install: str, what: str) -> int:
    row = conn.execute(
        select(releases.c.id, releases.c.state, releases.c.custom).where(
            releases.c.name == ref.name, releases.c.version == ref.version
        )
    ).first()
    if row is None:
        raise InvalidRequest(
            f"{what}: no release {ref.name} {ref.version}",
            hint="name a published release by name and version (garrison release list)",
        )
    if row.state != "published":
        raise InvalidRequest(
            f"{what}: release {ref.name} {ref.version} is {row.state}, not published",
            hint="a release is published once enough release managers have signed it",
        )
    kind = json.loads(row.custom).get("garrison", {}).get("install")
    if kind != install:
        raise InvalidRequest(
            f"{what}: release {ref.name} {ref.version} installs as {kind!r}, not {install!r}",
            hint="firmware must be an 'image' release, apps must be 'app' releases",
        )
    return int(row.id)


def _config(name: str, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise InvalidRequest(f"apps.{name}.config must be a JSON object")
    try:
        size = len(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"apps.{name}.config is not JSON: {exc}") from None
    if size > MAX_CONFIG_BYTES:
        raise InvalidRequest(
            f"apps.{name}.config is {size} bytes; at most {MAX_CONFIG_BYTES} bytes"
        )
    return dict(config)


def validate(conn: Connection, spec: DesiredSpec) -> tuple[int | None, str | None]:
    """The row values of ``spec`` (firmware release id, apps JSON), every release checked;
    :class:`InvalidRequest` naming the first problem."""
    if spec.firmware is None and spec.apps is None:
        raise InvalidRequest(
            "a desired state must name firmware, apps or both",
            hint="to remove a desired state, delete it",
        )
    firmware = None if spec.firmware is None else _release(conn, spec.firmware, "image", "firmware")
    if spec.apps is None:
        return firmware, None
    if len(spec.apps) > MAX_APPS:
        raise InvalidRequest(f"at most {MAX_APPS} apps in one desired state")
    stored: dict[str, dict[str, Any] | None] = {}
    for app in spec.apps:
        if not valid_name(app.name):
            raise InvalidRequest(
                f"app name {app.name[:80]!r} is not valid (a-z 0-9 . _ -, at most 64)"
            )
        if app.name in stored:
            raise InvalidRequest(f"app {app.name!r} is named twice")
        if app.absent:
            if app.version is not None or app.config is not None:
                raise InvalidRequest(f"apps.{app.name}: an absent app has no version or config")
            stored[app.name] = None
            continue
        if app.version is None:
            raise InvalidRequest(f"apps.{app.name}: name a version, or mark it absent")
        release = _release(conn, ReleaseRef(app.name, app.version), "app", f"apps.{app.name}")
        stored[app.name] = {"release": release, "config": _config(app.name, app.config)}
    return firmware, json.dumps(stored, sort_keys=True, separators=(",", ":"))


def affected_devices(conn: Connection, scope: Scope, ident: int) -> list[int]:
    """The devices an entry of ``scope``/``ident`` reaches."""
    if scope == "device":
        return [ident]
    return list(
        conn.execute(
            select(group_members.c.device_id).where(group_members.c.group_id == ident)
        ).scalars()
    )


def _store(
    conn: Connection,
    scope: Scope,
    ident: int,
    firmware: int | None,
    apps: str | None,
    actor: str,
    now: dt.datetime,
) -> None:
    upsert(
        conn,
        desired_state,
        [
            {
                "scope": scope,
                "scope_id": ident,
                "firmware_release_id": firmware,
                "apps": apps,
                "updated_by": actor,
                "updated_at": now,
            }
        ],
        ["scope", "scope_id"],
        ["firmware_release_id", "apps", "updated_by", "updated_at"],
    )
    recompute(conn, affected_devices(conn, scope, ident), now)


def set_desired(
    conn: Connection, scope: Scope, name: str, spec: DesiredSpec, actor: str, now: dt.datetime
) -> DesiredView:
    """Replace the desired state of group or device ``name`` with ``spec`` (audited)."""
    ident = scope_id(conn, scope, name, lock=True)
    firmware, apps = validate(conn, spec)
    _store(conn, scope, ident, firmware, apps, actor, now)
    view = get_desired(conn, scope, name)
    assert view is not None
    append_audit(
        conn,
        actor=actor,
        action="desired.set",
        target=f"{scope}:{name}",
        outcome="ok",
        now=now,
        details=_summary(view),
    )
    return view


def clear_desired(conn: Connection, scope: Scope, name: str, actor: str, now: dt.datetime) -> None:
    """Remove the desired state of group or device ``name`` (audited); :class:`LookupError`
    if it has none."""
    ident = scope_id(conn, scope, name, lock=True)
    gone = conn.execute(
        delete(desired_state).where(
            and_(desired_state.c.scope == scope, desired_state.c.scope_id == ident)
        )
    ).rowcount
    if gone != 1:
        raise LookupError(f"{scope} {name!r} has no desired state")
    recompute(conn, affected_devices(conn, scope, ident), now)
    append_audit(
        conn, actor=actor, action="desired.clear", target=f"{scope}:{name}", outcome="ok", now=now
    )


def set_group_firmware(
    conn: Connection, group_id: int, release_id: int, actor: str, now: dt.datetime
) -> None:
    """Make ``release_id`` the firmware of group ``group_id``'s desired state, keeping its
    apps (a campaign that completed makes its release the group's firmware). Recomputes the
    members' directives; the caller audits. :class:`LookupError` for an unknown group,
    :class:`InvalidRequest` for a release that is not a published image. Locks the group's
    row ``FOR UPDATE`` first: the caller must not hold a device row lock yet (see
    :mod:`garrison.fleet.group_locks`)."""
    if not lock_groups(conn, [group_id], shared=False):
        raise LookupError(f"no group with id {group_id}")
    info = load_releases(conn, [release_id]).get(release_id)
    if info is None or not info.published or info.install != "image":
        raise InvalidRequest(f"release {release_id} is not a published image release")
    current = conn.execute(
        select(desired_state.c.apps).where(
            desired_state.c.scope == "group", desired_state.c.scope_id == group_id
        )
    ).first()
    apps = None if current is None else current.apps
    _store(conn, "group", group_id, release_id, apps, actor, now)


def get_desired(conn: Connection, scope: Scope, name: str) -> DesiredView | None:
    """The desired state of group or device ``name`` (None if it has none);
    :class:`LookupError` if there is no such group or device."""
    ident = scope_id(conn, scope, name)
    row = conn.execute(
        select(desired_state).where(
            desired_state.c.scope == scope, desired_state.c.scope_id == ident
        )
    ).first()
    if row is None:
        return None
    entry = entry_of(row.firmware_release_id, row.apps)
    wanted = [a.release for a in (entry.apps or {}).values() if a.release is not None]
    known = load_releases(conn, [*wanted, *([entry.firmware] if entry.firmware else [])])
    firmware = None
    if entry.firmware is not None and entry.firmware in known:
        fw = known[entry.firmware]
        firmware = FirmwareView(fw.name, fw.version, fw.target_path)
    apps = None
    if entry.apps is not None:
        apps = []
        for app_name, want in sorted(entry.apps.items()):
            release = None if want.release is None else known.get(want.release)
            apps.append(
                AppView(
                    app_name,
                    None if release is None else release.version,
                    None if release is None else release.target_path,
                    None if want.config is None else dict(want.config),
                    want.absent,
                )
            )
    return DesiredView(scope, name, firmware, apps, row.updated_by, row.updated_at)


def _summary(view: DesiredView) -> dict[str, object]:
    return {
        "firmware": None
        if view.firmware is None
        else f"{view.firmware.name} {view.firmware.version}",
        "apps": None
        if view.apps is None
        else {a.name: "absent" if a.absent else a.version for a in view.apps},
    }

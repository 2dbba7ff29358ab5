"""The directive of each device: what it must run, computed from its desired state, its
campaign assignment, its update hold, its groups' maintenance windows and its open operator
command (docs/fleet.md), stored in ``device_directives`` with an ETag so that an idle poll is
one primary-key read.

Guarantees:

* A directive is a pure function of the database state it reads (no clock, no randomness):
  every replica computes the same bytes, and the ETag (the first 32 hex digits of the SHA-256
  of the canonical body without its ``etag``) changes exactly when the body does.
* :func:`recompute` locks the devices' rows (``SELECT … FOR NO KEY UPDATE`` on PostgreSQL,
  in id order; SQLite has one writer) before it reads anything, so two transactions that
  change different inputs *of one device* cannot store a directive that misses either
  change. That alone does not cover a change that reaches devices through a group (the
  group's members are read as committed): group changes and member changes also lock the
  group's row first (:mod:`garrison.fleet.group_locks`, which gives the lock order).
  ``NO KEY UPDATE`` does not wait for the key-share locks of inserts that reference a
  device, so a transaction that wrote such a row and then waits for a group lock cannot
  deadlock with one that holds the group and recomputes the device.
* A firmware or app release is put in a directive only if it is published, of the right
  install type and built for the device's hardware model; a device on update hold, or
  reverting in a campaign, gets no firmware.
* Fail safe for apps: an app whose desired release cannot be offered to the device is never
  left out silently (the agent would remove it): it is listed in ``kept_apps`` with the
  reason, and the agent neither installs, configures nor removes it.
* The device's oldest open operator command is named in ``command``, so queueing or
  completing one changes the ETag: an idle device learns of it from its one ``304``-or-not
  poll and asks ``GET /device/v1/commands`` only then.
* Every service that changes an input calls :func:`recompute` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from garrison.fleet.desired import AppWant, Entry, GroupEntry, Resolved, resolve
from garrison.fleet.upsert import upsert
from garrison.store.tables import (
    campaign_devices,
    campaigns,
    desired_state,
    device_commands,
    device_directives,
    device_groups,
    devices,
    group_members,
    releases,
)

POLL_SECONDS = 1800
JITTER_SECONDS = 180  # 10 % of POLL_SECONDS
CAMPAIGN_POLL_SECONDS = 30
CAMPAIGN_JITTER_SECONDS = 5

ACTIVE_CAMPAIGN_STATES = ("running", "paused", "halted")
OVERLAY_DEVICE_STATES = ("assigned", "downloading", "downloaded", "installing", "succeeded")
REVERTING = "reverting"
CHUNK = 500  # ids per IN (...) list: well under every backend's bound-parameter limit


@dataclass(frozen=True)
class Directive:
    """A stored directive: its ETag, the exact 200 body, and its poll interval."""

    etag: str
    body: bytes
    poll_seconds: int
    jitter_seconds: int

    @classmethod
    def from_stored(cls, etag: str, body: str) -> Directive:
        doc = json.loads(body)
        return cls(etag, body.encode(), int(doc["poll_seconds"]), int(doc["jitter_seconds"]))

    @property
    def document(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def firmware_target(self) -> str | None:
        firmware = self.document.get("firmware")
        return None if firmware is None else str(firmware["target"])


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    name: str
    version: str
    target_path: str
    install: str
    hardware: tuple[str, ...]
    published: bool

    def fits(self, model: str, install: str) -> bool:
        return self.unfit(model, install) is None

    def unfit(self, model: str, install: str, name: str | None = None) -> str | None:
        """Why this release cannot be offered to a device of ``model`` as ``install`` (of
        app ``name``), or None when it can."""
        what = f"{self.name} {self.version}"
        if not self.published:
            return f"release {what} is not published"
        if self.install != install:
            return f"release {what} is not an {'app' if install == 'app' else 'image'} release"
        if name is not None and self.name != name:
            return f"release {what} is not a release of app {name}"
        if model not in self.hardware:
            return f"release {what} is not built for model {model}"
        return None


@dataclass(frozen=True)
class Overlay:
    """The device's place in its newest campaign that still decides its firmware: an
    active one, or an aborted one (without rollback) that updated it — see
    :func:`load_inputs`."""

    campaign: int
    release: int
    state: str
    active: bool = True  # False: an aborted campaign; its release stays, no reports to it


@dataclass(frozen=True)
class PendingCommand:
    """The device's oldest open operator command (``device_commands``)."""

    id: int
    action: str


@dataclass
class DeviceInputs:
    """Everything one device's directive is computed from."""

    device_id: int
    model: str
    hold: bool
    groups: list[int] = field(default_factory=list)
    resolved: Resolved = field(default_factory=Resolved)
    overlay: Overlay | None = None
    campaign_poll: bool = False
    command: PendingCommand | None = None
    desired_changed_at: dt.datetime | None = None  # newest change of an entry that applies


def canonical(doc: object) -> bytes:
    """Sorted-key compact JSON (the bytes the ETag hashes and the device receives)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_of(firmware_release_id: int | None, apps_text: str | None) -> Entry:
    """A stored ``desired_state`` row as an :class:`Entry`."""
    apps = None
    if apps_text is not None:
        stored = json.loads(apps_text)
        apps = {
            name: AppWant(None)
            if want is None
            else AppWant(int(want["release"]), want.get("config"))
            for name, want in stored.items()
        }
    return Entry(firmware_release_id, apps)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


def _hardware(custom: str) -> tuple[str, ...]:
    models = json.loads(custom).get("garrison", {}).get("hardware", [])
    return tuple(m for m in models if isinstance(m, str))


def load_releases(conn: Connection, ids: Iterable[int]) -> dict[int, ReleaseInfo]:
    """The releases ``ids`` (missing ids are left out)."""
    found: dict[int, ReleaseInfo] = {}
    for chunk in _chunks(sorted(set(ids))):
        rows = conn.execute(
            select(
                releases.c.id,
                releases.c.name,
                releases.c.version,
                releases.c.target_path,
                releases.c.custom,
                releases.c.state,
            ).where(releases.c.id.in_(chunk))
        )
        for row in rows:
            decl = json.loads(row.custom).get("garrison", {})
            found[row.id] = ReleaseInfo(
                row.id,
                row.name,
                row.version,
                row.target_path,
                str(decl.get("install", "")),
                _hardware(row.custom),
                row.state == "published",
            )
    return found


def load_inputs(conn: Connection, ids: Sequence[int], *, lock: bool) -> dict[int, DeviceInputs]:
    """The inputs of the directives of ``ids`` (at most :data:`CHUNK` of them), in a
    constant number of queries. With ``lock`` the devices' rows are locked first."""
    query = select(devices.c.id, devices.c.model, devices.c.update_hold).where(
        devices.c.id.in_(ids)
    )
    if lock:
        query = query.order_by(devices.c.id).with_for_update(key_share=True)
    inputs = {
        row.id: DeviceInputs(row.id, row.model, bool(row.update_hold))
        for row in conn.execute(query)
    }
    if not inputs:
        return inputs
    present = list(inputs)
    for row in conn.execute(
        select(group_members.c.group_id, group_members.c.device_id).where(
            group_members.c.device_id.in_(present)
        )
    ):
        inputs[row.device_id].groups.append(row.group_id)
    group_ids = sorted({g for i in inputs.values() for g in i.groups})

    groups: dict[int, Any] = {}
    running: set[int] = set()
    for chunk in _chunks(group_ids):
        groups.update(
            (row.id, row)
            for row in conn.execute(
                select(
                    device_groups.c.id,
                    device_groups.c.name,
                    device_groups.c.priority,
                    device_groups.c.window,
                ).where(device_groups.c.id.in_(chunk))
            )
        )
        running.update(
            conn.execute(
                select(campaigns.c.group_id).where(
                    campaigns.c.state == "running", campaigns.c.group_id.in_(chunk)
                )
            ).scalars()
        )

    device_entries: dict[int, Entry] = {}
    group_entries: dict[int, Entry] = {}
    conditions = [and_(desired_state.c.scope == "device", desired_state.c.scope_id.in_(present))]
    conditions += [
        and_(desired_state.c.scope == "group", desired_state.c.scope_id.in_(chunk))
        for chunk in _chunks(group_ids)
    ]
    changed: dict[tuple[str, int], dt.datetime] = {}
    for stored in conn.execute(
        select(
            desired_state.c.scope,
            desired_state.c.scope_id,
            desired_state.c.firmware_release_id,
            desired_state.c.apps,
            desired_state.c.updated_at,
        ).where(or_(*conditions))
    ):
        target = device_entries if stored.scope == "device" else group_entries
        target[stored.scope_id] = entry_of(stored.firmware_release_id, stored.apps)
        changed[(stored.scope, stored.scope_id)] = stored.updated_at

    overlays = conn.execute(
        select(
            campaign_devices.c.device_id,
            campaign_devices.c.state,
            campaigns.c.id,
            campaigns.c.release_id,
            campaigns.c.state.label("campaign_state"),
            campaigns.c.updated_at,
        )
        .join(campaigns, campaigns.c.id == campaign_devices.c.campaign_id)
        .where(
            campaign_devices.c.device_id.in_(present),
            or_(
                and_(
                    campaigns.c.state.in_(ACTIVE_CAMPAIGN_STATES),
                    campaign_devices.c.state.in_(OVERLAY_DEVICE_STATES),
                ),
                campaign_devices.c.state == REVERTING,
                and_(campaigns.c.state == "aborted", campaign_devices.c.state == "succeeded"),
            ),
        )
        .order_by(campaigns.c.id)
    )
    for device_id, item in inputs.items():
        stamps = [changed.get(("device", device_id))]
        stamps += [changed.get(("group", g)) for g in item.groups]
        item.desired_changed_at = max((t for t in stamps if t is not None), default=None)
    for place in overlays:  # ascending campaign id: the newest campaign's row stays
        item = inputs[place.device_id]
        if place.campaign_state == "aborted" and (
            item.desired_changed_at is not None and item.desired_changed_at > place.updated_at
        ):
            # aborted without rollback, the devices it updated stay on its release — until
            # the desired state that applies to them changes after the abort
            continue
        item.overlay = Overlay(
            place.id, place.release_id, place.state, place.campaign_state != "aborted"
        )

    open_commands = conn.execute(
        select(device_commands.c.device_id, device_commands.c.id, device_commands.c.action)
        .where(device_commands.c.device_id.in_(present), device_commands.c.done_at.is_(None))
        .order_by(device_commands.c.id.desc())
    )
    for command in open_commands:  # descending id: the oldest open command stays
        inputs[command.device_id].command = PendingCommand(command.id, command.action)

    for device_id, item in inputs.items():
        member_of = [
            GroupEntry(
                groups[g].name,
                groups[g].priority,
                group_entries.get(g),
                None if groups[g].window is None else json.loads(groups[g].window),
            )
            for g in item.groups
            if g in groups
        ]
        item.resolved = resolve(device_entries.get(device_id), member_of)
        item.campaign_poll = any(g in running for g in item.groups)
    return inputs


def _release_ids(inputs: Iterable[DeviceInputs]) -> set[int]:
    wanted: set[int] = set()
    for item in inputs:
        if item.resolved.firmware is not None:
            wanted.add(item.resolved.firmware)
        wanted.update(a.release for a in (item.resolved.apps or {}).values() if a.release)
        if item.overlay is not None:
            wanted.add(item.overlay.release)
    return wanted


def build_document(item: DeviceInputs, known: dict[int, ReleaseInfo]) -> dict[str, Any]:
    """The directive document of one device (without its ``etag``)."""
    firmware: dict[str, Any] | None = None
    release_id, campaign = item.resolved.firmware, None
    if item.overlay is not None:
        release_id = None if item.overlay.state == REVERTING else item.overlay.release
        reports = item.overlay.active and item.overlay.state != REVERTING
        campaign = item.overlay.campaign if reports else None
    if item.hold:
        release_id = None
    release = None if release_id is None else known.get(release_id)
    if release is not None and release.fits(item.model, "image"):
        firmware = {"target": release.target_path, "version": release.version}
        firmware["campaign"] = campaign

    apps: list[dict[str, Any]] | None = None
    kept: list[dict[str, str]] = []
    if item.resolved.apps is not None:
        apps = []
        for name, want in item.resolved.present_apps().items():
            app = known.get(want.release) if want.release is not None else None
            # fail safe: an app whose release cannot be offered is kept as it is, not removed
            why = (
                "its desired release is unknown"
                if app is None
                else app.unfit(item.model, "app", name)
            )
            if app is None or why is not None:
                kept.append({"name": name, "reason": str(why)[:200]})
                continue
            apps.append(
                {
                    "name": name,
                    "version": app.version,
                    "target": app.target_path,
                    "config": dict(want.config) if want.config is not None else None,
                }
            )
    poll, jitter = (
        (CAMPAIGN_POLL_SECONDS, CAMPAIGN_JITTER_SECONDS)
        if item.campaign_poll
        else (POLL_SECONDS, JITTER_SECONDS)
    )
    command = None
    if item.command is not None:
        command = {"id": item.command.id, "action": item.command.action}
    return {
        "firmware": firmware,
        "apps": apps,
        "kept_apps": kept,
        "command": command,
        "window": item.resolved.window,
        "poll_seconds": poll,
        "jitter_seconds": jitter,
    }


def seal(doc: dict[str, Any]) -> Directive:
    """The directive of ``doc``: its ETag over the canonical body, then the body with it."""
    etag = hashlib.sha256(canonical(doc)).hexdigest()[:32]
    body = canonical({**doc, "etag": etag})
    return Directive(etag, body, int(doc["poll_seconds"]), int(doc["jitter_seconds"]))


def compute(
    conn: Connection, device_ids: Iterable[int], *, lock: bool = False
) -> dict[int, Directive]:
    """The current directives of ``device_ids`` (unknown ids are left out), not stored."""
    ids = sorted(set(device_ids))
    result: dict[int, Directive] = {}
    for chunk in _chunks(ids):
        inputs = load_inputs(conn, chunk, lock=lock)
        known = load_releases(conn, _release_ids(inputs.values()))
        for device_id, item in inputs.items():
            result[device_id] = seal(build_document(item, known))
    return result


def recompute(conn: Connection, device_ids: Iterable[int], now: dt.datetime) -> None:
    """Recompute and store the directive of each device in ``device_ids`` (unknown ids are
    ignored). Rows whose ETag is unchanged are not rewritten. A constant number of queries
    per 500 devices."""
    ids = sorted(set(device_ids))
    for chunk in _chunks(ids):
        fresh = compute(conn, chunk, lock=True)
        stored = {
            row.device_id: row.etag
            for row in conn.execute(
                select(device_directives.c.device_id, device_directives.c.etag).where(
                    device_directives.c.device_id.in_(chunk)
                )
            )
        }
        rows = [
            {
                "device_id": device_id,
                "etag": directive.etag,
                "body": directive.body.decode(),
                "computed_at": now,
            }
            for device_id, directive in fresh.items()
            if stored.get(device_id) != directive.etag
        ]
        upsert(conn, device_directives, rows, ["device_id"], ["etag", "body", "computed_at"])


def stored_directive(conn: Connection, device_id: int) -> Directive | None:
    """The stored directive of ``device_id``, or None (one primary-key read; no write)."""
    row = conn.execute(
        select(device_directives.c.etag, device_directives.c.body).where(
            device_directives.c.device_id == device_id
        )
    ).first()
    return None if row is None else Directive.from_stored(row.etag, row.body)


def load_directive(conn: Connection, device_id: int, now: dt.datetime) -> Directive:
    """The directive of ``device_id``, computed and stored first if there is none yet
    (``conn`` must then be a write transaction). :class:`LookupError` for an unknown id."""
    found = stored_directive(conn, device_id)
    if found is not None:
        return found
    recompute(conn, [device_id], now)
    found = stored_directive(conn, device_id)
    if found is None:
        raise LookupError(f"no device with id {device_id}")
    return found

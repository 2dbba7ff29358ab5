"""Read-only views of devices for operators: the fleet list with inventory summaries and the
device page (identity, certificates, inventory, tags, groups, resolved desired state,
current directive, history). Nothing here writes."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from garrison.fleet.directives import load_inputs, load_releases, stored_directive
from garrison.fleet.groups import device_tags_of, groups_of
from garrison.fleet.history import HistoryEntry, read_history
from garrison.store.tables import (
    certificates,
    device_groups,
    device_inventory,
    device_tags,
    devices,
    group_members,
)

MAX_QUERY = 64


@dataclass(frozen=True)
class DeviceSummary:
    serial: str
    model: str
    status: str
    enrolled_at: dt.datetime
    last_seen_at: dt.datetime | None
    update_hold: bool
    firmware: str | None
    boot_slot: str | None
    slot_state: str | None
    agent_version: str | None
    apps: dict[str, str]
    uptime_seconds: int | None
    reported_at: dt.datetime | None
    tags: list[str]
    groups: list[str]


@dataclass(frozen=True)
class DevicePage:
    total: int
    devices: list[DeviceSummary]


def list_fleet_devices(
    conn: Connection,
    *,
    group: str | None = None,
    tag: str | None = None,
    model: str | None = None,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> DevicePage:
    """Devices by serial, filtered by group name, tag, hardware model and a substring of the
    serial (case-insensitive); :class:`LookupError` for an unknown group."""
    query = (
        select(
            devices.c.id,
            devices.c.serial,
            devices.c.model,
            devices.c.status,
            devices.c.enrolled_at,
            devices.c.last_seen_at,
            devices.c.update_hold,
            device_inventory.c.firmware,
            device_inventory.c.boot_slot,
            device_inventory.c.slot_state,
            device_inventory.c.agent_version,
            device_inventory.c.apps,
            device_inventory.c.uptime_seconds,
            device_inventory.c.reported_at,
        )
        .select_from(devices)
        .outerjoin(device_inventory, device_inventory.c.device_id == devices.c.id)
    )
    if group is not None:
        group_id = conn.execute(
            select(device_groups.c.id).where(device_groups.c.name == group)
        ).scalar()
        if group_id is None:
            raise LookupError(f"no group named {group!r}")
        query = query.where(
            devices.c.id.in_(
                select(group_members.c.device_id).where(group_members.c.group_id == group_id)
            )
        )
    if tag is not None:
        query = query.where(
            devices.c.id.in_(select(device_tags.c.device_id).where(device_tags.c.tag == tag))
        )
    if model is not None:
        query = query.where(devices.c.model == model)
    if q:
        query = query.where(
            func.lower(devices.c.serial).contains(q[:MAX_QUERY].lower(), autoescape=True)
        )
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(query.order_by(devices.c.serial).limit(limit).offset(offset)).all()
    ids = [r.id for r in rows]
    tags: defaultdict[int, list[str]] = defaultdict(list)
    groups: defaultdict[int, list[str]] = defaultdict(list)
    if ids:
        for t in conn.execute(
            select(device_tags.c.device_id, device_tags.c.tag)
            .where(device_tags.c.device_id.in_(ids))
            .order_by(device_tags.c.tag)
        ):
            tags[t.device_id].append(t.tag)
        for g in conn.execute(
            select(group_members.c.device_id, device_groups.c.name)
            .join(device_groups, device_groups.c.id == group_members.c.group_id)
            .where(group_members.c.device_id.in_(ids))
            .order_by(device_groups.c.name)
        ):
            groups[g.device_id].append(g.name)
    return DevicePage(
        int(total),
        [
            DeviceSummary(
                serial=r.serial,
                model=r.model,
                status=r.status,
                enrolled_at=r.enrolled_at,
                last_seen_at=r.last_seen_at,
                update_hold=bool(r.update_hold),
                firmware=r.firmware,
                boot_slot=r.boot_slot,
                slot_state=r.slot_state,
                agent_version=r.agent_version,
                apps=json.loads(r.apps) if r.apps else {},
                uptime_seconds=r.uptime_seconds,
                reported_at=r.reported_at,
                tags=tags[r.id],
                groups=groups[r.id],
            )
            for r in rows
        ],
    )


def device_id_of(conn: Connection, serial: str) -> int:
    found = conn.execute(select(devices.c.id).where(devices.c.serial == serial)).scalar()
    if found is None:
        raise LookupError(f"no device with serial {serial!r}")
    return int(found)


def resolved_state(conn: Connection, device_id: int) -> dict[str, Any]:
    """The device's resolved desired state with where each part comes from (the conflict
    rule of docs/fleet.md), releases by name and version."""
    item = load_inputs(conn, [device_id], lock=False)[device_id]
    resolved = item.resolved
    wanted = [a.release for a in (resolved.apps or {}).values() if a.release is not None]
    if resolved.firmware is not None:
        wanted.append(resolved.firmware)
    if item.overlay is not None:
        wanted.append(item.overlay.release)
    known = load_releases(conn, wanted)

    def release(release_id: int | None) -> dict[str, Any] | None:
        info = None if release_id is None else known.get(release_id)
        if info is None:
            return None
        return {
            "name": info.name,
            "version": info.version,
            "target": info.target_path,
            "fits": info.fits(item.model, info.install),
        }

    firmware = release(resolved.firmware)
    if firmware is not None:
        firmware["from"] = resolved.firmware_from
    apps = None
    if resolved.apps is not None:
        apps = [
            {
                "name": name,
                "absent": want.absent,
                "release": release(want.release),
                "config": None if want.config is None else dict(want.config),
                "from": resolved.apps_from.get(name),
            }
            for name, want in resolved.apps.items()
        ]
    campaign = None
    if item.overlay is not None:
        campaign = {
            "id": item.overlay.campaign,
            "state": item.overlay.state,
            "release": release(item.overlay.release),
        }
    return {
        "firmware": firmware,
        "pinned": resolved.pinned,
        "apps": apps,
        "window": resolved.window,
        "window_from": resolved.window_from,
        "campaign": campaign,
        "update_hold": item.hold,
    }


def device_detail(conn: Connection, serial: str, history: int = 200) -> dict[str, Any]:
    """Everything the device page shows; :class:`LookupError` for an unknown serial."""
    device_id = device_id_of(conn, serial)
    row = conn.execute(select(devices).where(devices.c.id == device_id)).one()
    certs = [
        {
            "serial": c.serial_hex,
            "fingerprint": c.fingerprint,
            "not_before": c.not_before,
            "not_after": c.not_after,
            "issued_at": c.issued_at,
            "status": c.status,
            "revoked_at": c.revoked_at,
            "revocation_reason": c.revocation_reason,
            "current": c.serial_hex == row.current_cert,
        }
        for c in conn.execute(
            select(certificates)
            .where(certificates.c.device_id == device_id)
            .order_by(certificates.c.issued_at.desc())
        )
    ]
    inventory = conn.execute(
        select(device_inventory).where(device_inventory.c.device_id == device_id)
    ).first()
    directive = stored_directive(conn, device_id)
    return {
        "identity": {
            "serial": row.serial,
            "model": row.model,
            "status": row.status,
            "enrolled_at": row.enrolled_at,
            "last_seen_at": row.last_seen_at,
            "batch": row.batch_id,
            "update_hold": bool(row.update_hold),
            "current_cert": row.current_cert,
            "certificates": certs,
        },
        "inventory": None
        if inventory is None
        else {
            **json.loads(inventory.data),
            "reported_at": inventory.reported_at,
            "uptime_seconds": inventory.uptime_seconds,
            "digest": inventory.digest,
        },
        "tags": device_tags_of(conn, device_id),
        "groups": [{"name": n, "kind": k, "priority": p} for n, k, p in groups_of(conn, device_id)],
        "desired": resolved_state(conn, device_id),
        "directive": None if directive is None else directive.document,
        "history": [_history(i, e) for i, e in read_history(conn, device_id, limit=history)],
    }


def _history(entry_id: int, entry: HistoryEntry) -> dict[str, Any]:
    return {
        "id": entry_id,
        "at": entry.at,
        "kind": entry.kind,
        "summary": entry.summary,
        "details": entry.details,
    }

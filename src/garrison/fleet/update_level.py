"""The fleet update level read from the database: for every group, its target and each
member's facts, classified by the pure :mod:`.level` (which proves the result)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select

from garrison.fleet.campaign import ACTIVE
from garrison.fleet.level import GroupLevel, MemberFacts, group_level
from garrison.store.tables import (
    campaign_devices,
    campaigns,
    desired_state,
    device_groups,
    device_inventory,
    devices,
    group_members,
    releases,
)

cd = campaign_devices


def fleet_level(conn: Connection) -> list[GroupLevel]:
    """The update level of every group (by name), each with its proof (see
    :mod:`.level`). A group's target is the release of its active campaign, else its
    desired firmware; device states come from the newest campaign of the group for that
    release. Only active devices count (revoked ones are not in the fleet any more)."""
    groups = conn.execute(
        select(device_groups.c.id, device_groups.c.name).order_by(device_groups.c.name)
    ).all()
    active = {
        r.group_id: (r.id, r.release_id)
        for r in conn.execute(
            select(campaigns.c.id, campaigns.c.group_id, campaigns.c.release_id).where(
                campaigns.c.state.in_(ACTIVE)
            )
        )
    }
    desired = {
        r.scope_id: r.firmware_release_id
        for r in conn.execute(
            select(desired_state.c.scope_id, desired_state.c.firmware_release_id).where(
                desired_state.c.scope == "group", desired_state.c.firmware_release_id.is_not(None)
            )
        )
    }
    newest: dict[tuple[int, int], int] = {}
    for r in conn.execute(select(campaigns.c.id, campaigns.c.group_id, campaigns.c.release_id)):
        key = (r.group_id, r.release_id)
        newest[key] = max(newest.get(key, 0), r.id)
    targets: dict[int, tuple[int | None, int | None]] = {}
    for g in groups:
        if g.id in active:
            targets[g.id] = (active[g.id][1], active[g.id][0])
        elif g.id in desired:
            targets[g.id] = (desired[g.id], newest.get((g.id, desired[g.id])))
        else:
            targets[g.id] = (None, None)
    versions = {
        r.id: r.version
        for r in conn.execute(
            select(releases.c.id, releases.c.version).where(
                releases.c.id.in_([t for t, _ in targets.values() if t is not None])
            )
        )
    }
    chosen = [c for _, c in targets.values() if c is not None]
    places: dict[tuple[int, int], tuple[str, dt.datetime]] = {}
    if chosen:
        for p in conn.execute(
            select(cd.c.campaign_id, cd.c.device_id, cd.c.state, cd.c.updated_at).where(
                cd.c.campaign_id.in_(chosen)
            )
        ):
            places[(p.campaign_id, p.device_id)] = (p.state, p.updated_at)
    by_group: dict[int, list[Any]] = {g.id: [] for g in groups}
    for member in conn.execute(
        select(
            group_members.c.group_id,
            devices.c.id,
            devices.c.serial,
            device_inventory.c.firmware,
            device_inventory.c.slot_state,
            device_inventory.c.reported_at,
        )
        .select_from(
            group_members.join(devices, devices.c.id == group_members.c.device_id).outerjoin(
                device_inventory, device_inventory.c.device_id == devices.c.id
            )
        )
        .where(devices.c.status == "active")
    ):
        listed = by_group.get(member.group_id)
        if listed is not None:  # a group created after the groups were read is not listed
            listed.append(member)
    levels = []
    for g in groups:
        release_id, campaign_id = targets[g.id]
        facts = []
        for r in by_group[g.id]:
            place = places.get((campaign_id, r.id)) if campaign_id is not None else None
            facts.append(
                MemberFacts(
                    r.serial,
                    r.firmware,
                    r.slot_state,
                    r.reported_at,
                    place[0] if place else None,
                    place[1] if place else None,
                )
            )
        target = versions.get(release_id) if release_id is not None else None
        levels.append(group_level(g.name, target, campaign_id, facts))
    return levels

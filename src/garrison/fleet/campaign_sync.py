"""Who takes part in a campaign: its device list kept in step with its group.

:func:`plan_sync` reads what changed (new members, pending and excluded rows to re-evaluate,
members that left) and :func:`apply_sync` writes it, each change only where the row is
still in the state it was read in — so the scheduler can plan outside its write
transaction (docs/fleet.md, "Who takes part").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update

from garrison.fleet.campaign import ACTIVE, EXCLUDED, PENDING, SUCCEEDED, Member
from garrison.fleet.directives import ReleaseInfo
from garrison.fleet.history import add_history
from garrison.store.tables import (
    campaign_devices,
    campaigns,
    desired_state,
    device_inventory,
    devices,
    group_members,
)

cd = campaign_devices


def _exclusion(model: str, status: str, release: ReleaseInfo, pinned: bool) -> str | None:
    if status != "active":
        return f"device is {status}"
    if model not in release.hardware:
        return f"hardware {model} is not in the release's list ({', '.join(release.hardware)})"
    if pinned:
        return "pinned by a device entry"
    return None


@dataclass(frozen=True)
class SyncPlan:
    """What :func:`plan_sync` found: rows to insert, rows to change (each only if still in
    the state it was read in), and the pending devices that wait for another campaign."""

    inserts: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    waiting: frozenset[int]

    def apply_to(self, members: Sequence[Member]) -> list[Member]:
        """``members`` as they will be once the plan is applied (for the decision)."""
        if not (self.inserts or self.changes or self.waiting):
            return list(members)
        changed = {c["d"]: c["new"] for c in self.changes}
        out = [
            Member(
                m.device_id,
                changed.get(m.device_id, m.state),
                m.phase,
                m.assigned_at,
                m.updated_at,
                m.device_id in self.waiting,
            )
            for m in members
        ]
        out += [
            Member(
                r["device_id"],
                r["state"],
                None,
                None,
                r["updated_at"],
                r["device_id"] in self.waiting,
            )
            for r in self.inserts
        ]
        return out


def plan_sync(
    conn: Connection, campaign_id: int, group_id: int, release: ReleaseInfo, now: dt.datetime
) -> SyncPlan:
    """How to bring the campaign's device list up to date with its group (reads only):
    new members join (``pending``; ``excluded`` with the reason when of another hardware
    model, revoked or pinned by a device entry; ``succeeded`` without a phase when already
    running the release); pending and excluded rows are re-evaluated; devices that left the
    group before being assigned are excluded. Rows that started are never touched, and only
    those (new, pending, excluded) are read: the cost follows the devices still waiting.

    A device in two groups with active campaigns belongs to the campaign where it started,
    else to the older campaign: in the other it is ``pending``, *waiting* (detail "waiting
    for campaign N") until that campaign ends."""
    in_group = group_members.c.group_id == group_id
    candidates = conn.execute(
        select(
            devices.c.id,
            devices.c.model,
            devices.c.status,
            device_inventory.c.firmware,
            cd.c.state,
            cd.c.detail,
        )
        .select_from(
            group_members.join(devices, devices.c.id == group_members.c.device_id)
            .outerjoin(device_inventory, device_inventory.c.device_id == devices.c.id)
            .outerjoin(cd, and_(cd.c.device_id == devices.c.id, cd.c.campaign_id == campaign_id))
        )
        .where(in_group, or_(cd.c.state.is_(None), cd.c.state.in_((PENDING, EXCLUDED))))
    ).all()
    left = conn.execute(
        select(cd.c.device_id, cd.c.state, cd.c.detail).where(
            cd.c.campaign_id == campaign_id,
            cd.c.state.in_((PENDING, EXCLUDED)),
            ~exists().where(in_group, group_members.c.device_id == cd.c.device_id),
        )
    ).all()
    if not candidates and not left:
        return SyncPlan([], [], frozenset())
    pinned = set(
        conn.execute(
            select(desired_state.c.scope_id)
            .join(group_members, group_members.c.device_id == desired_state.c.scope_id)
            .where(
                in_group,
                desired_state.c.scope == "device",
                desired_state.c.firmware_release_id.is_not(None),
            )
        ).scalars()
    )
    other = cd.alias("other")
    elsewhere: dict[int, int] = {}
    for row in conn.execute(
        select(other.c.device_id, other.c.campaign_id)
        .join(campaigns, campaigns.c.id == other.c.campaign_id)
        .join(group_members, group_members.c.device_id == other.c.device_id)
        .where(
            in_group,
            campaigns.c.state.in_(ACTIVE),
            other.c.campaign_id != campaign_id,
            or_(
                other.c.state.not_in((PENDING, EXCLUDED)),
                and_(other.c.state == PENDING, other.c.campaign_id < campaign_id),
            ),
        )
        .order_by(other.c.campaign_id)
    ):
        elsewhere.setdefault(row.device_id, row.campaign_id)
    inserts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    waiting = set()
    for m in candidates:
        why = _exclusion(m.model, m.status, release, m.id in pinned)
        if why:
            state, detail = EXCLUDED, why
        elif m.firmware == release.version:
            state, detail = SUCCEEDED, f"already running {release.version}"
        elif m.id in elsewhere:
            state, detail = PENDING, f"waiting for campaign {elsewhere[m.id]}"
            waiting.add(m.id)
        else:
            state, detail = PENDING, None
        if m.state is None:
            inserts.append(
                {
                    "campaign_id": campaign_id,
                    "device_id": m.id,
                    "phase": None,
                    "state": state,
                    "from_version": m.firmware,
                    "assigned_at": None,
                    "updated_at": now,
                    "detail": detail,
                }
            )
        elif (m.state, m.detail) != (state, detail):
            changes.append({"d": m.id, "old": m.state, "new": state, "why": detail})
    for device_id, state, detail in left:
        if (state, detail) != (EXCLUDED, "left the group"):
            changes.append({"d": device_id, "old": state, "new": EXCLUDED, "why": "left the group"})
    return SyncPlan(inserts, changes, frozenset(waiting))


def apply_sync(conn: Connection, campaign_id: int, plan: SyncPlan, now: dt.datetime) -> list[int]:
    """Write what :func:`plan_sync` found (a change only where the row is still in the state
    it was read in); history for devices excluded or found already up to date. Returns the
    ids of the devices whose row was inserted or changed."""
    if plan.inserts:
        conn.execute(cd.insert(), plan.inserts)
    done = []
    for change in plan.changes:
        changed = conn.execute(
            update(cd)
            .where(
                cd.c.campaign_id == campaign_id,
                cd.c.device_id == change["d"],
                cd.c.state == change["old"],
            )
            .values(state=change["new"], detail=change["why"], updated_at=now)
        ).rowcount
        if changed != 1:
            continue
        done.append(change["d"])
        if change["new"] != PENDING:
            add_history(
                conn,
                change["d"],
                "campaign",
                f"campaign {campaign_id}: {change['new']} ({change['why']})",
                {"campaign": campaign_id, "state": change["new"], "detail": change["why"]},
                now,
            )
    return [r["device_id"] for r in plan.inserts] + done

"""Device groups and tags: static groups (explicit members) and dynamic groups (a filter over
inventory and tags), with membership materialized in ``group_members``.

Guarantees:

* A dynamic group's members are exactly the *active* devices its filter matches: re-evaluated
  for a device whenever its inventory or tags change (:func:`refresh_device`) and for every
  device when the filter changes (:func:`refresh_group`). Revoked devices leave it.
* Every membership, priority or window change recomputes the directives of the devices it
  reaches, in the same transaction.
* Concurrent changes meet on the group's row before anything is read or written
  (:mod:`garrison.fleet.group_locks`): a member change takes it ``FOR SHARE``, a change of
  the group itself ``FOR UPDATE``; filter evaluations are ordered by the membership lock. So
  a device joining a group while the group's desired state, priority, window or filter
  changes ends with a directive and memberships that include both changes.
* Every operator change is audited in its transaction; a refused change raises before it
  writes anything (:class:`InvalidRequest` 400, :class:`LookupError` 404,
  :class:`Conflict` 409).
* A group that campaigns refer to cannot be deleted (its campaigns' history needs it).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, delete, func, select, update

from garrison.errors import Conflict, InvalidRequest
from garrison.fleet.directives import CHUNK, recompute
from garrison.fleet.filters import Facts, Filter, parse_filter
from garrison.fleet.group_locks import (
    lock_device_evaluation,
    lock_group,
    lock_groups,
    lock_membership,
)
from garrison.fleet.upsert import insert_missing
from garrison.fleet.windows import parse_window
from garrison.store.audit_log import append_audit
from garrison.store.tables import (
    campaigns,
    desired_state,
    device_groups,
    device_inventory,
    device_tags,
    devices,
    group_members,
)
from garrison.updates.eligibility import valid_name

KINDS = ("static", "dynamic")
MIN_PRIORITY, MAX_PRIORITY = -1_000_000, 1_000_000
MAX_TAGS = 32
MAX_MEMBER_CHANGES = 10_000
ACTIVE_CAMPAIGNS = ("running", "paused", "halted")
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass(frozen=True)
class GroupView:
    id: int
    name: str
    kind: str
    filter: str | None
    priority: int
    window: dict[str, object] | None
    members: int
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True)
class GroupSpec:
    """A new group."""

    name: str
    kind: str = "static"
    filter: str | None = None
    priority: int = 0
    window: object = None


@dataclass(frozen=True)
class GroupUpdate:
    """Changes to a group: only the fields named in ``given`` change (``window`` None
    removes the window)."""

    given: frozenset[str]
    filter: str | None = None
    priority: int | None = None
    window: object = None


@functools.lru_cache(maxsize=512)
def _compiled(text: str) -> Filter:
    return parse_filter(text)


def _check_priority(priority: int | None) -> int:
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequest(
            f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return priority


def _window_text(window: object) -> str | None:
    parsed = parse_window(window)
    return None if parsed is None else json.dumps(parsed.to_json(), sort_keys=True)


def _view(row: Row[Any]) -> GroupView:
    """A ``device_groups`` row with its ``members`` count as a view."""
    return GroupView(
        row.id,
        row.name,
        row.kind,
        row.filter,
        row.priority,
        None if row.window is None else json.loads(row.window),
        int(row.members),
        row.created_by,
        row.created_at,
    )


def _groups_query() -> Select[Any]:
    counts = (
        select(group_members.c.group_id, func.count().label("members"))
        .group_by(group_members.c.group_id)
        .subquery()
    )
    return select(device_groups, func.coalesce(counts.c.members, 0).label("members")).outerjoin(
        counts, counts.c.group_id == device_groups.c.id
    )


def list_groups(conn: Connection) -> list[GroupView]:
    """Every group with its member count, by name."""
    rows = conn.execute(_groups_query().order_by(device_groups.c.name))
    return [_view(row) for row in rows]


def get_group(conn: Connection, name: str) -> GroupView:
    """Group ``name``; :class:`LookupError` if there is none."""
    row = conn.execute(_groups_query().where(device_groups.c.name == name)).first()
    if row is None:
        raise LookupError(f"no group named {name!r}")
    return _view(row)


def group_member_serials(conn: Connection, group_id: int, limit: int = 10_000) -> list[str]:
    return list(
        conn.execute(
            select(devices.c.serial)
            .join(group_members, group_members.c.device_id == devices.c.id)
            .where(group_members.c.group_id == group_id)
            .order_by(devices.c.serial)
            .limit(limit)
        ).scalars()
    )


def create_group(conn: Connection, spec: GroupSpec, actor: str, now: dt.datetime) -> GroupView:
    """Create a group (audited); a dynamic group gets its members at once."""
    if not valid_name(spec.name):
        raise InvalidRequest(
            f"group name {spec.name[:80]!r} is not valid (a-z 0-9 . _ -, at most 64, "
            "starting with a letter or digit)"
        )
    if spec.kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}")
    if spec.kind == "dynamic":
        _compiled(spec.filter if spec.filter is not None else "")
    elif spec.filter is not None:
        raise InvalidRequest("a static group has no filter; its members are named")
    priority = _check_priority(spec.priority)
    window = _window_text(spec.window)
    if spec.kind == "dynamic":
        lock_membership(conn, exclusive=True)  # no evaluation of one device runs meanwhile
    exists = conn.execute(select(device_groups.c.id).where(device_groups.c.name == spec.name))
    if exists.first() is not None:
        raise Conflict(f"a group named {spec.name!r} exists already")
    group_id = conn.execute(
        device_groups.insert()
        .values(
            name=spec.name,
            kind=spec.kind,
            filter=spec.filter,
            priority=priority,
            window=window,
            created_by=actor,
            created_at=now,
        )
        .returning(device_groups.c.id)
    ).scalar_one()
    if spec.kind == "dynamic":
        refresh_group(conn, group_id, now)
    view = get_group(conn, spec.name)
    append_audit(
        conn,
        actor=actor,
        action="group.create",
        target=spec.name,
        outcome="ok",
        now=now,
        details={
            "kind": spec.kind,
            "filter": spec.filter,
            "priority": priority,
            "window": view.window,
            "members": view.members,
        },
    )
    return view


def update_group(
    conn: Connection, name: str, change: GroupUpdate, actor: str, now: dt.datetime
) -> GroupView:
    """Change a group's filter, priority or window (audited). Locks the group's row
    (after the membership lock when the filter changes) before reading it."""
    if "filter" in change.given:
        lock_membership(conn, exclusive=True)
    lock_group(conn, name, shared=False)
    group = get_group(conn, name)
    unknown = change.given - {"filter", "priority", "window"}
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))} of a group")
    if not change.given:
        raise InvalidRequest("name at least one of filter, priority, window to change")
    values: dict[str, object] = {}
    if "filter" in change.given:
        if group.kind != "dynamic":
            raise InvalidRequest(f"group {name!r} is static; only dynamic groups have a filter")
        _compiled(change.filter if change.filter is not None else "")
        values["filter"] = change.filter
    if "priority" in change.given:
        values["priority"] = _check_priority(change.priority)
    if "window" in change.given:
        values["window"] = _window_text(change.window)
    conn.execute(update(device_groups).where(device_groups.c.id == group.id).values(**values))
    if "filter" in change.given:
        refresh_group(conn, group.id, now)  # recomputes whoever joined or left
    if change.given & {"priority", "window"}:  # both are inputs of every member's directive
        recompute(conn, _member_ids(conn, group.id), now)
    view = get_group(conn, name)
    append_audit(
        conn,
        actor=actor,
        action="group.update",
        target=name,
        outcome="ok",
        now=now,
        details={
            "changed": sorted(change.given),
            "filter": view.filter,
            "priority": view.priority,
            "window": view.window,
            "members": view.members,
        },
    )
    return view


def delete_group(conn: Connection, name: str, actor: str, now: dt.datetime) -> None:
    """Delete a group, its desired state and memberships (audited); :class:`Conflict` if
    a campaign refers to it."""
    lock_group(conn, name, shared=False)  # nobody adds members or sets its state meanwhile
    group = get_group(conn, name)
    used = conn.execute(
        select(campaigns.c.id, campaigns.c.state)
        .where(campaigns.c.group_id == group.id)
        .order_by(campaigns.c.id.desc())
    ).all()
    active = [c for c in used if c.state in ACTIVE_CAMPAIGNS]
    if active:
        raise Conflict(
            f"group {name!r} has a {active[0].state} campaign ({active[0].id})",
            hint="abort the campaign first",
        )
    if used:
        raise Conflict(
            f"group {name!r} is the target of {len(used)} campaign(s); their history keeps it",
            hint="create a new group instead of reusing this one",
        )
    members = _member_ids(conn, group.id)
    conn.execute(delete(group_members).where(group_members.c.group_id == group.id))
    conn.execute(
        delete(desired_state).where(
            and_(desired_state.c.scope == "group", desired_state.c.scope_id == group.id)
        )
    )
    conn.execute(delete(device_groups).where(device_groups.c.id == group.id))
    recompute(conn, members, now)
    append_audit(
        conn,
        actor=actor,
        action="group.delete",
        target=name,
        outcome="ok",
        now=now,
        details={"members": len(members)},
    )


def _member_ids(conn: Connection, group_id: int) -> list[int]:
    return list(
        conn.execute(
            select(group_members.c.device_id).where(group_members.c.group_id == group_id)
        ).scalars()
    )


def _device_ids(conn: Connection, serials: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(serials), CHUNK):
        chunk = serials[start : start + CHUNK]
        found.update(
            (row.serial, row.id)
            for row in conn.execute(
                select(devices.c.serial, devices.c.id).where(devices.c.serial.in_(chunk))
            )
        )
    missing = [s for s in serials if s not in found]
    if missing:
        raise LookupError(f"no device with serial {missing[0][:64]!r}")
    return found


def change_members(
    conn: Connection,
    name: str,
    add: list[str],
    remove: list[str],
    actor: str,
    now: dt.datetime,
) -> GroupView:
    """Add and remove members of static group ``name`` by serial (audited). Adding a member
    twice or removing a non-member changes nothing; an unknown serial refuses the whole
    request. Locks the group's row ``FOR SHARE`` first: a concurrent change of the group
    (its desired state, priority, window) waits for this one, or this one for it."""
    lock_group(conn, name, shared=True)
    group = get_group(conn, name)
    if group.kind != "static":
        raise Conflict(
            f"group {name!r} is dynamic: its members follow its filter",
            hint="change the filter, or tag the devices and filter on the tag",
        )
    if not add and not remove:
        raise InvalidRequest("name serials to add or remove")
    if len(add) + len(remove) > MAX_MEMBER_CHANGES:
        raise InvalidRequest(f"at most {MAX_MEMBER_CHANGES} member changes in one request")
    both = set(add) & set(remove)
    if both:
        raise InvalidRequest(f"serial {sorted(both)[0][:64]!r} is both added and removed")
    ids = _device_ids(conn, sorted(set(add) | set(remove)))
    before = set(_member_ids(conn, group.id))
    adding = sorted({ids[s] for s in add} - before)
    removing = sorted({ids[s] for s in remove} & before)
    insert_missing(conn, group_members, [{"group_id": group.id, "device_id": d} for d in adding])
    for start in range(0, len(removing), CHUNK):
        conn.execute(
            delete(group_members).where(
                group_members.c.group_id == group.id,
                group_members.c.device_id.in_(removing[start : start + CHUNK]),
            )
        )
    recompute(conn, [*adding, *removing], now)
    append_audit(
        conn,
        actor=actor,
        action="group.members",
        target=name,
        outcome="ok",
        now=now,
        details={
            "added": len(adding),
            "removed": len(removing),
            "serials_added": sorted(add)[:50],
            "serials_removed": sorted(remove)[:50],
        },
    )
    return get_group(conn, name)


# -- tags ---------------------------------------------------------------------------------


def device_tags_of(conn: Connection, device_id: int) -> list[str]:
    return list(
        conn.execute(
            select(device_tags.c.tag)
            .where(device_tags.c.device_id == device_id)
            .order_by(device_tags.c.tag)
        ).scalars()
    )


def set_tags(
    conn: Connection, serial: str, tags: list[str], actor: str, now: dt.datetime
) -> list[str]:
    """Replace the tags of device ``serial`` (audited); its dynamic groups follow."""
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags per device")
    for tag in tags:
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise InvalidRequest(
                f"tag {str(tag)[:80]!r} is not valid (A-Z a-z 0-9 . _ : -, at most 64, "
                "starting with a letter or digit)"
            )
    device_id = _device_ids(conn, [serial])[serial]
    before = device_tags_of(conn, device_id)
    wanted = sorted(set(tags))
    conn.execute(delete(device_tags).where(device_tags.c.device_id == device_id))
    if wanted:
        conn.execute(device_tags.insert(), [{"device_id": device_id, "tag": t} for t in wanted])
    refresh_device(conn, device_id, now)
    append_audit(
        conn,
        actor=actor,
        action="device.tags",
        target=serial,
        outcome="ok",
        now=now,
        details={"from": before, "to": wanted},
    )
    return wanted


# -- dynamic membership ------------------------------------------------------------------


def load_facts(conn: Connection, device_ids: Iterable[int] | None = None) -> dict[int, Facts]:
    """What filters see of the *active* devices ``device_ids`` (None: all of them)."""
    query = (
        select(
            devices.c.id,
            devices.c.serial,
            devices.c.model,
            device_inventory.c.firmware,
            device_inventory.c.agent_version,
            device_inventory.c.boot_slot,
            device_inventory.c.slot_state,
            device_inventory.c.apps,
        )
        .select_from(devices)
        .outerjoin(device_inventory, device_inventory.c.device_id == devices.c.id)
        .where(devices.c.status == "active")
    )
    tag_query = select(device_tags.c.device_id, device_tags.c.tag)
    batches: list[list[int] | None] = [None]
    if device_ids is not None:
        ids = sorted(set(device_ids))
        batches = [ids[s : s + CHUNK] for s in range(0, len(ids), CHUNK)]
    rows: list[Any] = []
    tags: defaultdict[int, set[str]] = defaultdict(set)
    for batch in batches:
        q, t = query, tag_query
        if batch is not None:
            q = q.where(devices.c.id.in_(batch))
            t = t.where(device_tags.c.device_id.in_(batch))
        rows.extend(conn.execute(q).all())
        for tag_row in conn.execute(t):
            tags[tag_row.device_id].add(tag_row.tag)
    return {
        row.id: Facts(
            model=row.model,
            serial=row.serial,
            firmware=row.firmware,
            agent=row.agent_version,
            slot=row.boot_slot,
            slot_state=row.slot_state,
            tags=frozenset(tags.get(row.id, ())),
            apps=json.loads(row.apps) if row.apps else {},
        )
        for row in rows
    }


def _dynamic_groups(conn: Connection) -> list[tuple[int, Filter]]:
    rows = conn.execute(
        select(device_groups.c.id, device_groups.c.filter).where(device_groups.c.kind == "dynamic")
    )
    return [(row.id, _compiled(row.filter)) for row in rows if row.filter]


def refresh_device(conn: Connection, device_id: int, now: dt.datetime) -> bool:
    """Re-evaluate every dynamic group for one device; recompute its directive if its
    membership changed. Returns whether it did.

    Takes the membership lock shared and the device's evaluation lock before it reads a
    filter, and the rows of the groups it joins or leaves ``FOR SHARE`` before it writes;
    an unchanged membership locks no row. The caller must not hold the device's row (see
    :mod:`garrison.fleet.group_locks`)."""
    lock_device_evaluation(conn, device_id)
    groups = _dynamic_groups(conn)
    if not groups:
        return False
    facts = load_facts(conn, [device_id]).get(device_id)
    wanted = {gid for gid, flt in groups if facts is not None and flt.matches(facts)}
    dynamic = {gid for gid, _ in groups}
    current = {
        gid
        for gid in conn.execute(
            select(group_members.c.group_id).where(group_members.c.device_id == device_id)
        ).scalars()
        if gid in dynamic
    }
    if wanted == current:
        return False
    present = lock_groups(conn, wanted ^ current, shared=True)  # a deleted one is skipped
    insert_missing(
        conn,
        group_members,
        [{"group_id": g, "device_id": device_id} for g in sorted((wanted - current) & present)],
    )
    leaving = sorted((current - wanted) & present)
    if leaving:
        conn.execute(
            delete(group_members).where(
                group_members.c.device_id == device_id, group_members.c.group_id.in_(leaving)
            )
        )
    recompute(conn, [device_id], now)
    return True


def refresh_group(conn: Connection, group_id: int, now: dt.datetime) -> tuple[int, int]:
    """Re-evaluate dynamic group ``group_id`` over every active device; recompute the
    directives of those who joined or left. Returns (joined, left). Takes the membership
    lock exclusively, then the group's row ``FOR UPDATE`` (a caller holding the row must
    have taken the membership lock before it)."""
    lock_membership(conn, exclusive=True)
    lock_groups(conn, [group_id], shared=False)
    row = conn.execute(
        select(device_groups.c.kind, device_groups.c.filter).where(device_groups.c.id == group_id)
    ).first()
    if row is None or row.kind != "dynamic" or not row.filter:
        return 0, 0
    flt = _compiled(row.filter)
    wanted = {d for d, facts in load_facts(conn).items() if flt.matches(facts)}
    current = set(_member_ids(conn, group_id))
    joining, leaving = sorted(wanted - current), sorted(current - wanted)
    insert_missing(conn, group_members, [{"group_id": group_id, "device_id": d} for d in joining])
    for start in range(0, len(leaving), CHUNK):
        conn.execute(
            delete(group_members).where(
                group_members.c.group_id == group_id,
                group_members.c.device_id.in_(leaving[start : start + CHUNK]),
            )
        )
    recompute(conn, [*joining, *leaving], now)
    return len(joining), len(leaving)


def groups_of(conn: Connection, device_id: int) -> list[tuple[str, str, int]]:
    """The groups device ``device_id`` is a member of: (name, kind, priority), in rule order."""
    rows = conn.execute(
        select(device_groups.c.name, device_groups.c.kind, device_groups.c.priority)
        .join(group_members, group_members.c.group_id == device_groups.c.id)
        .where(group_members.c.device_id == device_id)
    ).all()
    ordered = sorted(rows, key=lambda r: (-r.priority, r.name.encode()))
    return [(r.name, r.kind, r.priority) for r in ordered]

"""Rollout campaigns on the database: create, list, progress, pause / resume / abort.

Around it: who in a group takes part (:mod:`.campaign_sync`), the devices' progress reports
(:mod:`.campaign_reports`), the scheduler that assigns devices and moves phases
(:mod:`.scheduler`), the update level (:mod:`.update_level`); the decisions themselves are
the pure :mod:`.campaign`.

Guarantees:

* Every operator action locks the campaign row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite
  has one writer), checks the state machine (:class:`~garrison.errors.Conflict`, nothing
  changed, otherwise), writes the campaign with a compare-and-set on ``revision``, recomputes
  the directives of the devices it touches and is audited — all in one transaction.
* A group has at most one active (running, paused or halted) campaign.
* Pausing, halting or aborting sends ``assigned`` devices (not yet started) back to
  ``pending``; devices that started finish and still report (an A/B install is never cut).
* Abort with rollback sends devices this campaign updated (``succeeded``) back with the
  operator rollback command of issue 3 (``reverting``; ``reverted`` once the device did it);
  a device that commits after such an abort is sent back as well — by its report, or by the
  scheduler when the report raced the abort (:func:`.scheduler.due_campaigns`). The
  decision is recorded in the stored plan's ``rollback_on_abort``.
* Within one transaction, locks are taken in the order campaign row → campaign device rows
  → device rows (directives) → audit head (appended last), here, in the scheduler and in
  device reports.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, and_, case, func, null, select, update

from garrison.errors import Conflict, InvalidRequest
from garrison.fleet.campaign import (
    ABORTED,
    ACTIVE,
    ASSIGNED,
    CAMPAIGN_STATES,
    DEVICE_STATES,
    HALTED,
    PAUSED,
    PENDING,
    REVERTING,
    RUNNING,
    SUCCEEDED,
    Member,
    PhaseProgress,
    Plan,
    eligible,
    phase_name,
    progress,
)
from garrison.fleet.campaign_sync import apply_sync, plan_sync
from garrison.fleet.directives import ReleaseInfo, load_releases, recompute
from garrison.fleet.history import add_history
from garrison.store.audit_log import append_audit
from garrison.store.tables import (
    campaign_devices,
    campaigns,
    device_groups,
    devices,
    group_members,
    releases,
)
from garrison.updates.commands import request_rollback

SYSTEM_ACTOR = "system:scheduler"  # who moves campaigns by themselves (phases, halts, ...)
MAX_NAME = 64
MAX_DEVICES_PAGE = 10_000
CAMPAIGNS_PAGE = 100  # GET /api/v1/campaigns: the default page
MAX_CAMPAIGNS_PAGE = 1_000
ACTIVE_FILTER = "active"  # list filter: running, paused or halted

cd = campaign_devices


class CampaignChanged(Conflict):
    """The campaign row changed between read and write (compare-and-set on ``revision``)."""


class CampaignDataMissing(RuntimeError):
    """A row a campaign refers to (its release, its group) is missing: a bug or a damaged
    database, never the caller's mistake. Deliberately not a :class:`LookupError`, which
    the HTTP error boundary would answer as an audited 404: this is a 500."""


# -- views ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    version: str


@dataclass(frozen=True)
class CampaignSpec:
    """What an operator asks for (the plan already validated)."""

    name: str
    group: str
    release: ReleaseRef
    plan: Plan


@dataclass(frozen=True)
class CampaignView:
    id: int
    name: str
    group: str
    release_id: int
    release_name: str
    release_version: str
    target: str
    state: str
    phase: int
    phase_name: str
    phases: int
    phase_started_at: dt.datetime | None
    reason: str | None
    plan: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    devices: int
    eligible: int
    counts: dict[str, int]


@dataclass(frozen=True)
class DeviceProgress:
    serial: str
    model: str
    state: str
    phase: int | None
    from_version: str | None
    assigned_at: dt.datetime | None
    updated_at: dt.datetime
    detail: str | None


@dataclass(frozen=True)
class CampaignProgress:
    campaign: CampaignView
    phases: list[PhaseProgress]
    devices: list[DeviceProgress]
    devices_total: int  # matching the filter, before paging


# -- reading --------------------------------------------------------------------------


def _campaign_query() -> Any:
    return select(
        campaigns,
        device_groups.c.name.label("group_name"),
        releases.c.name.label("release_name"),
        releases.c.version.label("release_version"),
        releases.c.target_path,
    ).select_from(
        campaigns.join(device_groups, device_groups.c.id == campaigns.c.group_id).join(
            releases, releases.c.id == campaigns.c.release_id
        )
    )


def campaign_members(
    conn: Connection,
    campaign_id: int,
    *,
    phase: int | None = None,
    assigned_after: dt.datetime | None = None,
) -> list[Member]:
    """Every device's place in the campaign, as :func:`.campaign.decide` takes it (which
    devices wait for another campaign is :func:`plan_sync`'s business). Timestamps are read
    only where a decision needs them — ``updated_at`` of the devices of ``phase``,
    ``assigned_at`` after ``assigned_after`` — which keeps a 10,000-device read cheap."""
    updated: Any = (
        null() if phase is None else case((cd.c.phase == phase, cd.c.updated_at), else_=null())
    )
    assigned: Any = (
        null()
        if assigned_after is None
        else case((cd.c.assigned_at > assigned_after, cd.c.assigned_at), else_=null())
    )
    rows = conn.execute(
        select(cd.c.device_id, cd.c.state, cd.c.phase, assigned, updated).where(
            cd.c.campaign_id == campaign_id
        )
    )
    return [Member(*r) for r in rows]


def _view(row: Any, members: Sequence[Member]) -> CampaignView:
    plan = Plan.from_text(row.plan)
    return CampaignView(
        id=row.id,
        name=row.name,
        group=row.group_name,
        release_id=row.release_id,
        release_name=row.release_name,
        release_version=row.release_version,
        target=row.target_path,
        state=row.state,
        phase=row.phase,
        phase_name=phase_name(row.phase),
        phases=plan.phases,
        phase_started_at=row.phase_started_at,
        reason=row.reason,
        plan=plan.to_json(),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        devices=len(members),
        eligible=sum(1 for m in members if eligible(m)),
        counts=dict(Counter(m.state for m in members)),
    )


def list_campaigns(
    conn: Connection,
    *,
    state: str | None = None,
    group: str | None = None,
    limit: int = CAMPAIGNS_PAGE,
    before: int | None = None,
) -> list[CampaignView]:
    """Campaigns, newest first, at most ``limit`` of them (1 to
    :data:`MAX_CAMPAIGNS_PAGE`), optionally only those in ``state`` (or ``"active"``:
    running, paused or halted), of ``group``, or with an id below ``before`` (the next
    page starts below the last id of this one). Device counts are aggregated for the
    campaigns of the page only."""
    if state is not None and state not in (*CAMPAIGN_STATES, ACTIVE_FILTER):
        raise InvalidRequest(f"state must be one of {', '.join((*CAMPAIGN_STATES, ACTIVE_FILTER))}")
    if not 1 <= limit <= MAX_CAMPAIGNS_PAGE:
        raise InvalidRequest(f"limit must be 1 to {MAX_CAMPAIGNS_PAGE}")
    if before is not None and before < 1:
        raise InvalidRequest("before must be a campaign id (1 or more)")
    query = _campaign_query().order_by(campaigns.c.id.desc()).limit(limit)
    if state == ACTIVE_FILTER:
        query = query.where(campaigns.c.state.in_(ACTIVE))
    elif state is not None:
        query = query.where(campaigns.c.state == state)
    if group is not None:
        query = query.where(device_groups.c.name == group)
    if before is not None:
        query = query.where(campaigns.c.id < before)
    rows = conn.execute(query).all()
    counts: dict[int, list[Member]] = {row.id: [] for row in rows}
    if rows:
        for r in conn.execute(
            select(cd.c.campaign_id, cd.c.state, cd.c.phase, func.count().label("n"))
            .where(cd.c.campaign_id.in_(list(counts)))
            .group_by(cd.c.campaign_id, cd.c.state, cd.c.phase)
        ):
            counts[r.campaign_id].extend([Member(0, r.state, r.phase)] * int(r.n))
    return [_view(row, counts[row.id]) for row in rows]


def get_campaign(conn: Connection, campaign_id: int) -> CampaignView:
    row = conn.execute(_campaign_query().where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise LookupError(f"no campaign {campaign_id}")
    return _view(row, campaign_members(conn, campaign_id))


def campaign_progress(
    conn: Connection,
    campaign_id: int,
    *,
    state: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> CampaignProgress:
    """The campaign, its phases with their devices by state, and its devices (ordered by
    serial; optionally only those in ``state``; ``limit`` / ``offset`` page them)."""
    if state is not None and state not in DEVICE_STATES:
        raise InvalidRequest(f"device state must be one of {', '.join(DEVICE_STATES)}")
    if not 0 <= limit <= MAX_DEVICES_PAGE or offset < 0:
        raise InvalidRequest(f"limit must be 0 to {MAX_DEVICES_PAGE}, offset at least 0")
    row = conn.execute(_campaign_query().where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise LookupError(f"no campaign {campaign_id}")
    members = campaign_members(conn, campaign_id)
    view = _view(row, members)
    condition = cd.c.campaign_id == campaign_id
    if state is not None:
        condition = and_(condition, cd.c.state == state)
    total = conn.execute(select(func.count()).select_from(cd).where(condition)).scalar_one()
    rows = conn.execute(
        select(
            devices.c.serial,
            devices.c.model,
            cd.c.state,
            cd.c.phase,
            cd.c.from_version,
            cd.c.assigned_at,
            cd.c.updated_at,
            cd.c.detail,
        )
        .select_from(cd.join(devices, devices.c.id == cd.c.device_id))
        .where(condition)
        .order_by(devices.c.serial)
        .limit(limit)
        .offset(offset)
    )
    return CampaignProgress(
        view,
        progress(Plan.from_text(row.plan), row.phase, row.state, members),
        [DeviceProgress(*r) for r in rows],
        int(total),
    )


# -- who takes part -------------------------------------------------------------------


def release_by_ref(conn: Connection, ref: ReleaseRef) -> ReleaseInfo:
    """The firmware release ``ref`` names: LookupError if there is none, InvalidRequest for
    an app package, Conflict while it awaits signatures."""
    ids = conn.execute(
        select(releases.c.id).where(releases.c.name == ref.name, releases.c.version == ref.version)
    ).scalars()
    found = sorted(load_releases(conn, ids).values(), key=lambda r: r.install != "image")
    if not found:
        raise LookupError(f"no release {ref.name[:64]!r} version {ref.version[:64]!r}")
    release = found[0]
    if release.install != "image":
        raise InvalidRequest(
            f"{ref.name} {ref.version} is an app package; campaigns roll out firmware images",
            hint="apps are rolled out through desired state (garrison desired set)",
        )
    if not release.published:
        raise Conflict(
            f"{ref.name} {ref.version} is not published yet",
            hint="release managers must sign it up to the threshold first",
        )
    return release


def campaign_releases(conn: Connection) -> list[ReleaseInfo]:
    """Releases a campaign can roll out: published firmware images, newest first."""
    ids = conn.execute(select(releases.c.id).where(releases.c.state == "published")).scalars()
    found = [r for r in load_releases(conn, ids).values() if r.install == "image"]
    return sorted(found, key=lambda r: r.id, reverse=True)


# -- operator actions -----------------------------------------------------------------


def lock_campaign(conn: Connection, campaign_id: int, *, skip_locked: bool = False) -> Any:
    """The campaign row, locked for this transaction (PostgreSQL; SQLite has one writer).
    With ``skip_locked``, None when another transaction holds it; LookupError if unknown."""
    row = conn.execute(
        select(campaigns)
        .where(campaigns.c.id == campaign_id)
        .with_for_update(skip_locked=skip_locked)
    ).first()
    if row is None and not skip_locked:
        raise LookupError(f"no campaign {campaign_id}")
    return row


def save_campaign(conn: Connection, row: Any, now: dt.datetime, **values: Any) -> None:
    """Write ``values`` to the campaign read as ``row``, if nobody changed it since
    (compare-and-set on ``revision``); :class:`CampaignChanged` otherwise."""
    changed = conn.execute(
        update(campaigns)
        .where(campaigns.c.id == row.id, campaigns.c.revision == row.revision)
        .values(**values, revision=row.revision + 1, updated_at=now)
    ).rowcount
    if changed != 1:
        raise CampaignChanged(
            f"campaign {row.id} changed while this request was processed", hint="try again"
        )


def unassign(conn: Connection, campaign_id: int, why: str, now: dt.datetime) -> list[int]:
    """``assigned`` (not started) → ``pending``, keeping the phase they were counted in;
    returns their ids and writes their history."""
    back = list(
        conn.execute(
            update(cd)
            .where(cd.c.campaign_id == campaign_id, cd.c.state == ASSIGNED)
            .values(state=PENDING, updated_at=now, detail=why)
            .returning(cd.c.device_id)
        ).scalars()
    )
    for device_id in back:
        add_history(
            conn,
            device_id,
            "campaign",
            f"campaign {campaign_id}: back to pending ({why})",
            {"campaign": campaign_id, "state": PENDING},
            now,
        )
    return back


def campaign_device_ids(conn: Connection, campaign_id: int) -> list[int]:
    return list(
        conn.execute(select(cd.c.device_id).where(cd.c.campaign_id == campaign_id)).scalars()
    )


def refresh_group(conn: Connection, campaign_id: int, group_id: int, now: dt.datetime) -> None:
    """Recompute the directives of the group's members and the campaign's devices: a change
    of campaign state changes their firmware overlay and their poll interval."""
    ids = set(campaign_device_ids(conn, campaign_id))
    ids.update(
        conn.execute(
            select(group_members.c.device_id).where(group_members.c.group_id == group_id)
        ).scalars()
    )
    recompute(conn, ids, now)


def create_campaign(conn: Connection, spec: CampaignSpec, actor: str, now: dt.datetime) -> int:
    """Start a campaign (``running``, canary phase). LookupError for an unknown group or
    release; InvalidRequest for a bad name or an app release; Conflict when the release is
    not published, the group already has an active campaign, or no member can take it."""
    name = spec.name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InvalidRequest(f"a campaign name is 1 to {MAX_NAME} printable characters")
    group = conn.execute(
        select(device_groups.c.id, device_groups.c.name)
        .where(device_groups.c.name == spec.group)
        .with_for_update()  # one create at a time per group: at most one active campaign
    ).first()
    if group is None:
        raise LookupError(f"no group named {spec.group[:64]!r}")
    release = release_by_ref(conn, spec.release)
    active = conn.execute(
        select(campaigns.c.id, campaigns.c.state).where(
            campaigns.c.group_id == group.id, campaigns.c.state.in_(ACTIVE)
        )
    ).first()
    if active is not None:
        raise Conflict(
            f"group {group.name!r} already has campaign {active.id} ({active.state})",
            hint="a group has one active campaign at a time: abort it or let it complete",
        )
    models = set(
        conn.execute(
            select(devices.c.model)
            .join(group_members, group_members.c.device_id == devices.c.id)
            .where(group_members.c.group_id == group.id, devices.c.status == "active")
            .distinct()
        ).scalars()
    )
    if not models & set(release.hardware):
        raise Conflict(
            f"no active member of group {group.name!r} has hardware the release is built for "
            f"({', '.join(release.hardware)})",
            hint=f"the group's hardware: {', '.join(sorted(models)) or 'none (empty group)'}",
        )
    campaign_id = int(
        conn.execute(
            campaigns.insert()
            .values(
                name=name,
                group_id=group.id,
                release_id=release.id,
                plan=spec.plan.to_text(),
                state=RUNNING,
                phase=0,
                phase_started_at=now,
                reason=None,
                revision=0,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            .returning(campaigns.c.id)
        ).scalar_one()
    )
    apply_sync(conn, campaign_id, plan_sync(conn, campaign_id, group.id, release, now), now)
    refresh_group(conn, campaign_id, group.id, now)
    members = campaign_members(conn, campaign_id)
    append_audit(
        conn,
        actor=actor,
        action="campaign.create",
        target=f"campaign:{campaign_id}",
        outcome="ok",
        now=now,
        details={
            "campaign": campaign_id,
            "name": name,
            "group": group.name,
            "release": f"{release.name} {release.version}",
            "plan": spec.plan.to_json(),
            "devices": len(members),
            "eligible": sum(1 for m in members if eligible(m)),
        },
    )
    return campaign_id


def pause_campaign(conn: Connection, campaign_id: int, actor: str, now: dt.datetime) -> None:
    """running → paused; assigned devices go back to pending."""
    row = lock_campaign(conn, campaign_id)
    if row.state != RUNNING:
        raise Conflict(
            f"campaign {campaign_id} is {row.state}; only a running campaign can be paused"
        )
    back = unassign(conn, campaign_id, "campaign paused", now)
    save_campaign(conn, row, now, state=PAUSED, reason=f"paused by {actor}"[:300])
    refresh_group(conn, campaign_id, row.group_id, now)
    _audit(conn, actor, "campaign.pause", campaign_id, now, {"back_to_pending": len(back)})


def resume_campaign(conn: Connection, campaign_id: int, actor: str, now: dt.datetime) -> None:
    """paused | halted → running. After a halt the phase's failure count restarts now: the
    operator has looked at the failures that halted it."""
    row = lock_campaign(conn, campaign_id)
    if row.state not in (PAUSED, HALTED):
        raise Conflict(
            f"campaign {campaign_id} is {row.state}; only a paused or halted campaign "
            "can be resumed"
        )
    values: dict[str, Any] = {"state": RUNNING, "reason": None}
    if row.state == HALTED:
        values["phase_started_at"] = now
    save_campaign(conn, row, now, **values)
    refresh_group(conn, campaign_id, row.group_id, now)
    _audit(conn, actor, "campaign.resume", campaign_id, now, {"from": row.state})


def abort_campaign(
    conn: Connection, campaign_id: int, rollback: bool | None, actor: str, now: dt.datetime
) -> list[str]:
    """running | paused | halted → aborted. Assigned devices go back to pending; with
    ``rollback`` (default: the plan's ``rollback_on_abort``) devices this campaign updated
    are sent back (``reverting``) with a rollback command and put on update hold. Returns
    the serials sent back."""
    row = lock_campaign(conn, campaign_id)
    if row.state not in ACTIVE:
        raise Conflict(
            f"campaign {campaign_id} is {row.state}; only a running, paused or halted "
            "campaign can be aborted"
        )
    plan = Plan.from_text(row.plan)
    rollback = plan.rollback_on_abort if rollback is None else rollback
    back = unassign(conn, campaign_id, "campaign aborted", now)
    serials: list[str] = []
    if rollback:
        serials = revert_updated(conn, campaign_id, actor, now)
    recorded = Plan.from_json({**plan.to_json(), "rollback_on_abort": rollback})
    save_campaign(
        conn,
        row,
        now,
        state=ABORTED,
        reason=(f"aborted by {actor}" + (" with rollback" if rollback else ""))[:300],
        plan=recorded.to_text(),
    )
    refresh_group(conn, campaign_id, row.group_id, now)
    _audit(
        conn,
        actor,
        "campaign.abort",
        campaign_id,
        now,
        {"rollback": rollback, "reverting": len(serials), "back_to_pending": len(back)},
    )
    return serials


def revert_updated(
    conn: Connection,
    campaign_id: int,
    actor: str,
    now: dt.datetime,
    device_ids: Iterable[int] | None = None,
) -> list[str]:
    """Devices this campaign updated (``succeeded`` with a phase), active → ``reverting``,
    with a rollback command each (:func:`garrison.updates.commands.request_rollback`).

    The rows are locked first, in the order of the module docstring — the campaign device
    rows, then the devices' rows (in id order, as :func:`.directives.recompute` does) — so
    a device revoked meanwhile is left out instead of failing the rollback request; only
    rows actually moved to ``reverting`` get a command (a row another transaction moved
    first is not sent back twice). Returns the serials sent back."""
    query = updated_rows([campaign_id]).with_only_columns(
        cd.c.device_id, maintain_column_froms=False
    )
    if device_ids is not None:
        query = query.where(cd.c.device_id.in_(list(device_ids)))
    candidates = list(conn.execute(query.order_by(cd.c.device_id).with_for_update(of=cd)).scalars())
    if not candidates:
        return []
    locked = list(
        conn.execute(
            select(devices.c.id)
            .where(devices.c.id.in_(candidates), devices.c.status == "active")
            .order_by(devices.c.id)
            .with_for_update()
        ).scalars()
    )
    if not locked:
        return []
    moved = set(
        conn.execute(
            update(cd)
            .where(
                cd.c.campaign_id == campaign_id,
                cd.c.device_id.in_(locked),
                cd.c.state == SUCCEEDED,
                cd.c.phase.is_not(None),
            )
            .values(state=REVERTING, updated_at=now, detail="sent back: campaign aborted")
            .returning(cd.c.device_id)
        ).scalars()
    )
    if not moved:
        return []
    rows = conn.execute(
        select(devices.c.id, devices.c.serial)
        .where(devices.c.id.in_(sorted(moved)))
        .order_by(devices.c.serial)
    ).all()
    serials = request_rollback(conn, [r.serial for r in rows], None, actor, now)
    for r in rows:
        add_history(
            conn,
            r.id,
            "campaign",
            f"campaign {campaign_id}: sent back to the previous version (campaign aborted)",
            {"campaign": campaign_id, "state": REVERTING},
            now,
        )
    return serials


def updated_rows(campaign_ids: Sequence[int]) -> Select[Any]:
    """The rows (campaign, device) of devices these campaigns updated, which an abort with
    rollback sends back: ``succeeded`` with a phase (not those that already ran the
    release), of devices that are still active."""
    return (
        select(cd.c.campaign_id, cd.c.device_id)
        .join(devices, devices.c.id == cd.c.device_id)
        .where(
            cd.c.campaign_id.in_(list(campaign_ids)),
            cd.c.state == SUCCEEDED,
            cd.c.phase.is_not(None),
            devices.c.status == "active",
        )
    )


def _audit(
    conn: Connection,
    actor: str,
    action: str,
    campaign_id: int,
    now: dt.datetime,
    details: dict[str, Any],
) -> None:
    append_audit(
        conn,
        actor=actor,
        action=action,
        target=f"campaign:{campaign_id}",
        outcome="ok",
        now=now,
        details={"campaign": campaign_id, **details},
    )

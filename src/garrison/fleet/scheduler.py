"""The rollout scheduler: every control-plane process runs one, about once a second.

:func:`tick` advances every running campaign once: it brings the campaign's device list up
to date with its group, asks the pure :func:`.campaign.decide` what to do, and applies it —
assign pending devices, move to the next phase, halt past the failure threshold, complete
(the release becomes the group's desired firmware). It also settles devices sent back by an
abort (``reverting`` → ``reverted`` once their rollback command is done), and sends back a
device whose ``committed`` report raced an abort with rollback (the abort could not see it).

Safe with several replicas on one database:

* Each campaign is advanced in its own write transaction that first locks the campaign row
  with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL): a campaign another replica is
  advancing is skipped, never advanced twice at once. SQLite has one writer
  (:meth:`Database.write`).
* Devices are assigned with ``UPDATE … WHERE state = 'pending' RETURNING``: a device is
  assigned once, and only the devices actually changed are recorded. The devices' rows are
  locked first and the update re-checks that no other active campaign holds the device: two
  replicas advancing two campaigns never assign one device in both.
* The campaign row is written with a compare-and-set on ``revision``; a lost race rolls the
  whole step back (nothing half-applied) and the next tick tries again.
* Automatic transitions (phase started, halted, completed) are audited as
  ``system:scheduler`` with the replica (host and process) that made them; device
  assignments go to the devices' history.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from garrison.clock import Clock
from garrison.fleet.campaign import (
    ABORTED,
    ACTIVE,
    ASSIGNED,
    COMPLETED,
    EXCLUDED,
    FAILED,
    HALTED,
    PENDING,
    RATE_WINDOW,
    REVERTED,
    REVERTING,
    RUNNING,
    Decision,
    Plan,
    decide,
    phase_name,
)
from garrison.fleet.campaign_sync import SyncPlan, apply_sync, plan_sync
from garrison.fleet.campaigns import (
    SYSTEM_ACTOR,
    CampaignChanged,
    CampaignDataMissing,
    campaign_members,
    lock_campaign,
    refresh_group,
    revert_updated,
    save_campaign,
    unassign,
    updated_rows,
)
from garrison.fleet.desired_state import set_group_firmware
from garrison.fleet.directives import ReleaseInfo, load_releases, recompute
from garrison.fleet.history import add_history
from garrison.store.audit_log import AuditEntry, append_audit_many
from garrison.store.database import Database
from garrison.store.tables import (
    campaign_devices,
    campaigns,
    device_commands,
    device_inventory,
    devices,
)
from garrison.updates.commands import ROLLBACK

log = logging.getLogger(__name__)

ACTOR = SYSTEM_ACTOR
TICK_SECONDS = 1.0
TICK_JITTER_SECONDS = 0.2
CHUNK = 500

cd = campaign_devices


def replica() -> str:
    """This process, as the audit log names the replica that moved a campaign."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Step:
    """What advancing one campaign did."""

    campaign: int
    state: str
    phase: int
    assigned: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    settled: int = 0
    sent_back: list[str] = field(default_factory=list)  # late commits after an abort


@dataclass
class TickReport:
    steps: list[Step] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # locked by another replica
    retry: list[int] = field(default_factory=list)  # lost a race; tried again next tick
    broken: list[int] = field(default_factory=list)  # refer to missing rows; logged

    @property
    def assigned(self) -> int:
        return sum(len(s.assigned) for s in self.steps)


def _busy_elsewhere(campaign_id: int) -> Any:
    """True for a device (the ``campaign_devices`` row being updated) that belongs to
    another active campaign by the rule of :func:`.campaign_sync.plan_sync`: it started
    there (any state but pending or excluded), or waits there in an older campaign."""
    other = cd.alias("other")
    return (
        select(other.c.device_id)
        .join(campaigns, campaigns.c.id == other.c.campaign_id)
        .where(
            other.c.device_id == cd.c.device_id,
            other.c.campaign_id != campaign_id,
            campaigns.c.state.in_(ACTIVE),
            or_(
                other.c.state.not_in((PENDING, EXCLUDED)),
                and_(other.c.state == PENDING, other.c.campaign_id < campaign_id),
            ),
        )
        .exists()
    )


def _assign(
    conn: Connection, campaign_id: int, phase: int, ids: tuple[int, ...], now: dt.datetime
) -> list[int]:
    """pending → assigned for ``ids`` (those still pending and not taken by another
    campaign), recording the firmware they run now as ``from_version``; returns the ids
    actually assigned.

    No device is assigned in two campaigns at once, whatever replicas do: the campaign's
    pending rows and then the devices' rows are locked (``FOR UPDATE``, in device id
    order, the order :func:`.directives.recompute` locks them in later), and the update
    re-checks, after the lock, that no other active campaign holds the device. A replica
    assigning the same device in another campaign holds the same device row lock until it
    commits; PostgreSQL takes a fresh snapshot for the update statement, so the re-check
    sees that commit. (SQLite has one writer: the check alone suffices.)"""
    done: list[int] = []
    firmware = (
        select(device_inventory.c.firmware)
        .where(device_inventory.c.device_id == cd.c.device_id)
        .scalar_subquery()
    )
    busy = _busy_elsewhere(campaign_id)
    for start in range(0, len(ids), CHUNK):
        chunk = sorted(ids[start : start + CHUNK])
        pending = list(
            conn.execute(
                select(cd.c.device_id)
                .where(
                    cd.c.campaign_id == campaign_id,
                    cd.c.device_id.in_(chunk),
                    cd.c.state == PENDING,
                )
                .order_by(cd.c.device_id)
                .with_for_update()
            ).scalars()
        )
        if not pending:
            continue
        conn.execute(
            select(devices.c.id)
            .where(devices.c.id.in_(pending))
            .order_by(devices.c.id)
            .with_for_update()
        ).all()
        done.extend(
            conn.execute(
                update(cd)
                .where(
                    cd.c.campaign_id == campaign_id,
                    cd.c.device_id.in_(pending),
                    cd.c.state == PENDING,
                    ~busy,
                )
                .values(
                    state=ASSIGNED,
                    phase=phase,
                    assigned_at=now,
                    updated_at=now,
                    detail=None,
                    from_version=firmware,
                )
                .returning(cd.c.device_id)
            ).scalars()
        )
    return sorted(done)


def settle_reverts(conn: Connection, campaign_id: int, now: dt.datetime) -> int:
    """``reverting`` devices whose rollback command is done since they were sent back:
    ``reverted`` when the device committed the previous version, else ``failed``."""
    rows = conn.execute(
        select(
            cd.c.device_id,
            device_commands.c.outcome,
            device_commands.c.detail,
            device_commands.c.done_at,
        )
        .join(
            device_commands,
            and_(
                device_commands.c.device_id == cd.c.device_id,
                device_commands.c.action == ROLLBACK,
                device_commands.c.done_at.is_not(None),
                device_commands.c.done_at >= cd.c.updated_at,
            ),
        )
        .where(cd.c.campaign_id == campaign_id, cd.c.state == REVERTING)
        .order_by(device_commands.c.done_at)
    ).all()
    outcome = {r.device_id: (r.outcome, r.detail) for r in rows}  # the latest stays
    settled = []
    for device_id, (result, detail) in sorted(outcome.items()):
        state = REVERTED if result == "committed" else FAILED
        why = "back on the previous version" if state == REVERTED else f"rollback {result}"
        changed = conn.execute(
            update(cd)
            .where(
                cd.c.campaign_id == campaign_id,
                cd.c.device_id == device_id,
                cd.c.state == REVERTING,
            )
            .values(state=state, updated_at=now, detail=f"{why}: {detail or ''}"[:300])
        ).rowcount
        if changed == 1:
            settled.append(device_id)
            add_history(
                conn,
                device_id,
                "campaign",
                f"campaign {campaign_id}: {state} ({why})",
                {"campaign": campaign_id, "state": state, "command_outcome": result},
                now,
            )
    if settled:
        recompute(conn, settled, now)
    return len(settled)


@dataclass(frozen=True)
class Prepared:
    """A step worked out from a read of the campaign, to apply if nobody moved it since."""

    revision: int
    state: str
    group_id: int
    release: ReleaseInfo
    sync: SyncPlan
    decision: Decision


def prepare(conn: Connection, campaign_id: int, now: dt.datetime) -> Prepared | None:
    """Read the campaign and decide its next step (no locks, no writes): the costly part,
    proportional to the group, kept out of the write transaction. None unless running."""
    row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None or row.state != RUNNING:
        return None
    release = load_releases(conn, [row.release_id]).get(row.release_id)
    if release is None:
        raise CampaignDataMissing(f"campaign {campaign_id}: its release {row.release_id} is gone")
    sync = plan_sync(conn, campaign_id, row.group_id, release, now)
    recent = now - RATE_WINDOW
    members = sync.apply_to(
        campaign_members(conn, campaign_id, phase=row.phase, assigned_after=recent)
    )
    decision = decide(Plan.from_text(row.plan), row.phase, row.phase_started_at, members, now)
    return Prepared(row.revision, row.state, row.group_id, release, sync, decision)


def advance_campaign(database: Database, campaign_id: int, now: dt.datetime) -> Step | None:
    """One scheduler step for one campaign: decide from a read, then apply in a write
    transaction that locks the campaign row (``SKIP LOCKED``) and checks that its revision
    did not move in between (:class:`CampaignChanged` otherwise: nothing is applied). None
    when another replica holds the campaign right now.

    Applying a decision read moments earlier is safe: device reports only move devices
    forward (so a phase never ends or halts early), assignments and exclusions are
    conditional on the state they were decided from, and anything that moves devices back
    (pause, halt, abort, another step) changes the revision."""
    with database.read() as conn:
        prepared = prepare(conn, campaign_id, now)
    with database.write() as conn:
        row = lock_campaign(conn, campaign_id, skip_locked=True)
        if row is None:
            return None
        step = Step(
            campaign_id, row.state, row.phase, settled=settle_reverts(conn, campaign_id, now)
        )
        if row.state == ABORTED and Plan.from_text(row.plan).rollback_on_abort:
            step.sent_back = revert_updated(conn, campaign_id, ACTOR, now)
        if prepared is None or row.state != RUNNING:
            return step
        if row.revision != prepared.revision:
            raise CampaignChanged(f"campaign {campaign_id} moved while its step was prepared")
        apply_step(conn, row, prepared, step, now)
    return step


def apply_step(
    conn: Connection, row: Any, prepared: Prepared, step: Step, now: dt.datetime
) -> None:
    """Write a prepared step (inside the write transaction that locked ``row``)."""
    campaign_id, decision, release = row.id, prepared.decision, prepared.release
    synced = apply_sync(conn, campaign_id, prepared.sync, now)
    step.assigned = _assign(conn, campaign_id, decision.phase, decision.assign, now)
    for device_id in step.assigned:
        add_history(
            conn,
            device_id,
            "campaign",
            f"campaign {campaign_id} ({phase_name(decision.phase)}): assigned {release.version}",
            {"campaign": campaign_id, "state": ASSIGNED, "phase": decision.phase},
            now,
        )
    values: dict[str, Any] = {}
    if decision.changes_campaign(row.state, row.phase):
        values.update(state=decision.state, phase=decision.phase)
        values["phase_started_at"] = decision.phase_started_at
    if decision.state == HALTED:
        unassign(conn, campaign_id, "campaign halted", now)
        values["reason"] = (decision.reason or "failure threshold exceeded")[:300]
    if values or synced or step.assigned:  # the revision moves with every applied step
        save_campaign(conn, row, now, **values)
    if decision.state == COMPLETED:
        set_group_firmware(conn, row.group_id, row.release_id, ACTOR, now)
    if decision.state != row.state:
        refresh_group(conn, campaign_id, row.group_id, now)
    else:
        recompute(conn, [*step.assigned, *synced], now)
    step.state, step.phase, step.events = decision.state, decision.phase, list(decision.events)
    if decision.events:
        last = len(decision.events) - 1
        final = {HALTED: "campaign.halt", COMPLETED: "campaign.complete"}.get(decision.state)
        entries = []
        for index, event in enumerate(decision.events):
            details: dict[str, Any] = {
                "campaign": campaign_id,
                "event": event,
                "replica": replica(),
            }
            if index == last and decision.state == COMPLETED:
                details["group_firmware"] = f"{release.name} {release.version}"
            action = final if final and index == last else "campaign.phase"
            entries.append(AuditEntry(ACTOR, action, f"campaign:{campaign_id}", "ok", details))
        append_audit_many(conn, entries, now)


def due_campaigns(conn: Connection) -> list[int]:
    """Campaigns a tick looks at: running ones, any with devices being sent back, and any
    aborted with rollback that still has a device it updated and did not send back.

    The last catches a device whose ``committed`` report raced the abort (its transaction
    read the campaign as running, and the abort did not see its row as ``succeeded`` yet):
    the tick sends it back like the abort did. Cheap: the campaigns table is read by
    state, and only the rows of campaigns aborted with rollback are looked at."""
    due = set(conn.execute(select(campaigns.c.id).where(campaigns.c.state == RUNNING)).scalars())
    due.update(
        conn.execute(select(cd.c.campaign_id).where(cd.c.state == REVERTING).distinct()).scalars()
    )
    with_rollback = [
        r.id
        for r in conn.execute(
            select(campaigns.c.id, campaigns.c.plan).where(campaigns.c.state == ABORTED)
        )
        if Plan.from_text(r.plan).rollback_on_abort
    ]
    for start in range(0, len(with_rollback), CHUNK):
        chunk = with_rollback[start : start + CHUNK]
        due.update(
            conn.execute(
                updated_rows(chunk).with_only_columns(cd.c.campaign_id).distinct()
            ).scalars()
        )
    return sorted(due)


def tick(database: Database, now: dt.datetime) -> TickReport:
    """Advance every due campaign once, each in its own transaction. A campaign that loses a
    race (another replica wrote it, a deadlock) is rolled back and left to the next tick; one
    that refers to a missing row is logged and skipped, never stopping the others."""
    report = TickReport()
    with database.read() as conn:
        due = due_campaigns(conn)
    for campaign_id in due:
        try:
            step = advance_campaign(database, campaign_id, now)
        except CampaignChanged as exc:  # another replica (or an operator) was faster
            log.info("campaign %s: %s; next tick", campaign_id, exc)
            report.retry.append(campaign_id)
            continue
        except DBAPIError as exc:  # a deadlock or a lost connection: rolled back, retried
            log.warning("campaign %s: step rolled back, retried next tick: %s", campaign_id, exc)
            report.retry.append(campaign_id)
            continue
        except CampaignDataMissing:  # a bug or a damaged database: the others still advance
            log.exception("campaign %s cannot be advanced", campaign_id)
            report.broken.append(campaign_id)
            continue
        if step is None:
            report.skipped.append(campaign_id)
        else:
            report.steps.append(step)
    return report


class Scheduler:
    """The background loop of one control-plane process: :func:`tick` every
    :data:`TICK_SECONDS` (± a small jitter, so replicas drift apart), until stopped."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        interval: float = TICK_SECONDS,
        jitter: float = TICK_JITTER_SECONDS,
    ) -> None:
        self._database = database
        self._clock = clock
        self._interval = interval
        self._jitter = jitter
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="campaign-scheduler")

    async def stop(self) -> None:
        """Stop after the tick in progress (if any) ends."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def _tick(self) -> None:
        try:
            tick(self._database, self._clock())
        except Exception:  # the loop outlives a bad tick; the error is logged
            log.exception("campaign scheduler tick failed")

    async def _run(self) -> None:
        while not self._stop.is_set():
            await run_in_threadpool(self._tick)
            delay = self._interval + random.uniform(-self._jitter, self._jitter)  # noqa: S311
            with contextlib.suppress(TimeoutError):  # the usual case: no stop during the wait
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.05, delay))

"""Devices' progress reports on their campaign firmware (``POST /device/v1/report``).

A report changes only the reporting device's own row, only along the campaign device state
machine (:func:`garrison.fleet.campaign.after_report`: forward, a repeat changes nothing),
with a conditional update on the state it was read in, and writes the device's history —
in the caller's transaction. Anything else is :class:`~garrison.errors.Conflict` (409),
nothing changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from garrison.errors import Conflict
from garrison.fleet.campaign import ABORTED, REVERTING, SUCCEEDED, Plan, after_report
from garrison.fleet.campaigns import SYSTEM_ACTOR, CampaignChanged, revert_updated
from garrison.fleet.directives import OVERLAY_DEVICE_STATES, recompute
from garrison.fleet.history import add_history
from garrison.identity.devices import DeviceIdentity
from garrison.store.tables import campaign_devices, campaigns, releases

cd = campaign_devices

# Built once: a report is the hottest write of a rollout (four or so per device).
_PLACE = (
    select(
        cd.c.state,
        cd.c.phase,
        cd.c.assigned_at,
        campaigns.c.state.label("campaign_state"),
        campaigns.c.phase.label("campaign_phase"),
        campaigns.c.plan,
        releases.c.target_path,
        releases.c.version,
    )
    .select_from(
        cd.join(campaigns, campaigns.c.id == cd.c.campaign_id).join(
            releases, releases.c.id == campaigns.c.release_id
        )
    )
    .where(cd.c.campaign_id == bindparam("campaign"), cd.c.device_id == bindparam("device"))
)
_MOVE = (
    update(cd)
    .where(
        cd.c.campaign_id == bindparam("campaign"),
        cd.c.device_id == bindparam("device"),
        cd.c.state == bindparam("old"),
    )
    .values(
        state=bindparam("new"),
        updated_at=bindparam("at"),
        detail=bindparam("why"),
        phase=bindparam("in_phase"),
    )
)


@dataclass(frozen=True)
class Report:
    """``POST /device/v1/report`` (docs/fleet.md)."""

    campaign: int | None
    target: str
    state: str
    version: str | None = None
    detail: str = ""


def record_report(
    conn: Connection, device: DeviceIdentity, report: Report, now: dt.datetime
) -> str | None:
    """Record what ``device`` reports; returns its campaign state after the report (None
    for a report outside any campaign, which only goes to its history). Conflict (nothing
    changed) for a campaign the device is not in, another release, or a transition the
    state machine does not allow."""
    detail = report.detail[:300]
    if report.campaign is None:
        add_history(
            conn,
            device.device_id,
            "update",
            f"{report.target}: {report.state}" + (f" ({detail})" if detail else ""),
            {"target": report.target, "state": report.state, "version": report.version},
            now,
        )
        return None
    for _ in range(2):  # a concurrent change of the row: read again, decide again, once
        place = conn.execute(
            _PLACE, {"campaign": report.campaign, "device": device.device_id}
        ).first()
        if place is None:
            raise Conflict(
                f"device {device.serial} is not in campaign {report.campaign}",
                hint="report the campaign named by the device's directive",
            )
        if report.target != place.target_path or report.version not in (None, place.version):
            raise Conflict(
                f"campaign {report.campaign} rolls out {place.target_path} "
                f"({place.version}); this report is about {report.target[:120]} "
                f"({(report.version or '?')[:40]})"
            )
        new = after_report(place.state, report.state, was_assigned=place.assigned_at is not None)
        if new is None:
            return str(place.state)
        changed = conn.execute(
            _MOVE,
            {
                "campaign": report.campaign,
                "device": device.device_id,
                "old": place.state,
                "new": new,
                "at": now,
                "why": detail or None,
                "in_phase": place.phase if place.phase is not None else place.campaign_phase,
            },
        ).rowcount
        if changed == 1:
            break
    else:
        raise CampaignChanged(
            f"device {device.serial}'s place in campaign {report.campaign} keeps changing",
            hint="send the report again",
        )
    add_history(
        conn,
        device.device_id,
        "campaign",
        f"campaign {report.campaign}: {report.state} {place.version}"
        + (f" ({detail})" if detail else ""),
        {"campaign": report.campaign, "state": new, "reported": report.state, "detail": detail},
        now,
    )
    final = new
    if (
        new == SUCCEEDED
        and place.campaign_state == ABORTED
        and Plan.from_text(place.plan).rollback_on_abort
    ):
        revert_updated(conn, report.campaign, SYSTEM_ACTOR, now, [device.device_id])
        final = REVERTING
    if (place.state in OVERLAY_DEVICE_STATES) != (final in OVERLAY_DEVICE_STATES):
        recompute(conn, [device.device_id], now)
    return final

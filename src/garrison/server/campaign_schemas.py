"""API schemas of rollout campaigns, the fleet update level and device progress reports.
Strict: unknown fields are refused (422). The plan is validated by the campaign core
(:meth:`garrison.fleet.campaign.Plan.from_json`), which names the bad field (400)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from garrison.server.schemas import Strict

PLAN_DESCRIPTION = (
    'canary: a count or "N%" (default 1); waves: cumulative percentages ending at 100 '
    '(default [100]); max_per_minute (default 60); failure_threshold per phase: a count or "N%" '
    "(default 0: the first failure halts); soak_minutes between phases (default 0); "
    "rollback_on_abort (default false)"
)


class ReleaseRef(Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class CampaignCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    group: str = Field(min_length=1, max_length=64, description="the group to roll out over")
    release: ReleaseRef = Field(description="a published firmware image release")
    plan: dict[str, Any] = Field(default_factory=dict, description=PLAN_DESCRIPTION)


class AbortRequest(Strict):
    rollback: bool | None = Field(
        default=None,
        description="send devices this campaign updated back (default: the plan's "
        "rollback_on_abort)",
    )


class CampaignRelease(Strict):
    id: int
    name: str
    version: str
    target: str


class ReleaseOption(CampaignRelease):
    hardware: list[str]


class CampaignPublic(Strict):
    id: int
    name: str
    group: str
    release: CampaignRelease
    state: str = Field(description="running, paused, halted, aborted or completed")
    phase: int = Field(description="0 is the canary, 1.. the waves")
    phase_name: str
    phases: int
    phase_started_at: dt.datetime | None
    reason: str | None = Field(description="why it is paused, halted or aborted")
    plan: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    members: int = Field(description="devices of the group the campaign knows")
    eligible: int = Field(description="members the campaign has to update")
    counts: dict[str, int] = Field(description="members by campaign device state")


class AbortResult(CampaignPublic):
    sent_back: list[str] = Field(description="serials sent back to their previous version")


class PhasePublic(Strict):
    index: int
    name: str
    target: int = Field(description="devices assigned by the end of this phase (cumulative)")
    size: int
    allowed_failures: int
    status: str = Field(description="done, current or upcoming")
    states: dict[str, int]


class CampaignDevice(Strict):
    serial: str
    model: str
    state: str
    phase: int | None
    phase_name: str | None
    from_version: str | None
    assigned_at: dt.datetime | None
    updated_at: dt.datetime
    detail: str | None


class CampaignDetail(CampaignPublic):
    phase_progress: list[PhasePublic]
    devices_total: int = Field(description="devices matching the state filter (all pages)")
    limit: int
    offset: int
    devices: list[CampaignDevice]


class LevelProof(Strict):
    members: int
    classified: int = Field(description="the sum of the four counts")
    exactly_one_each: bool
    digest: str = Field(description="SHA-256 over the sorted 'serial category' lines")


class GroupLevelPublic(Strict):
    group: str
    target: str | None = Field(description="the firmware version the group is going to")
    campaign: int | None
    members: int
    counts: dict[str, int] = Field(description="on_target, updating, failed, not_reached")
    proof: LevelProof
    devices: dict[str, list[str]] | None = Field(
        default=None, description="the serials in each category (with ?devices=true)"
    )


class LevelTotal(Strict):
    members: int = Field(description="group memberships (a device in two groups counts twice)")
    devices: int = Field(description="distinct devices in any group")
    counts: dict[str, int]


class FleetLevel(Strict):
    at: dt.datetime
    groups: list[GroupLevelPublic]
    total: LevelTotal


class DeviceReport(Strict):
    campaign: int | None = Field(
        default=None, ge=1, description="the directive's campaign (null outside a campaign)"
    )
    target: str = Field(min_length=1, max_length=256)
    state: Literal["downloading", "downloaded", "installing", "committed", "rolled-back", "failed"]
    version: str | None = Field(default=None, max_length=64)
    detail: str = Field(default="", max_length=2000, description="kept up to 300 characters")


class ReportResult(Strict):
    campaign: int | None
    state: str | None = Field(description="the device's campaign state after the report")

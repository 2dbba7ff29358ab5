"""API schemas of the fleet model: device check-in with inventory, devices with their
inventory, tags, groups and desired state. Strict: unknown fields are refused (422)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from garrison.server.schemas import Strict

# -- device API --------------------------------------------------------------------------


class CheckIn(Strict):
    agent_version: str = Field(default="", max_length=64)
    inventory: dict[str, Any] | None = Field(
        default=None, description="What the device runs (docs/fleet.md); optional for old agents"
    )


class CheckInResult(Strict):
    serial: str
    certificate: str
    server_time: dt.datetime
    poll_seconds: int
    jitter_seconds: int
    directive_etag: str


# -- devices -----------------------------------------------------------------------------


class DeviceSummary(Strict):
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


class DeviceList(Strict):
    total: int = Field(description="devices matching the filters (all pages)")
    limit: int
    offset: int
    devices: list[DeviceSummary]


class HistoryItem(Strict):
    id: int
    at: dt.datetime
    kind: str
    summary: str
    details: dict[str, Any]


class DeviceDetail(Strict):
    identity: dict[str, Any]
    inventory: dict[str, Any] | None
    tags: list[str]
    groups: list[dict[str, Any]]
    desired: dict[str, Any] = Field(
        description="resolved desired state and where each part is from"
    )
    directive: dict[str, Any] | None
    history: list[HistoryItem]


class TagsUpdate(Strict):
    tags: list[str] = Field(max_length=32)


class Tags(Strict):
    serial: str
    tags: list[str]


# -- groups ------------------------------------------------------------------------------


class GroupCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: str = Field(default="static", description="'static' (named members) or 'dynamic'")
    filter: str | None = Field(
        default=None, max_length=2000, description="a dynamic group's filter (docs/fleet.md)"
    )
    priority: int = Field(default=0, description="higher wins in the conflict rule")
    window: dict[str, Any] | None = Field(
        default=None, description="maintenance window: {timezone, slots}; null: always open"
    )


class GroupUpdate(Strict):
    filter: str | None = Field(default=None, max_length=2000)
    priority: int | None = None
    window: dict[str, Any] | None = None


class GroupPublic(Strict):
    name: str
    kind: str
    filter: str | None
    priority: int
    window: dict[str, Any] | None
    members: int
    created_by: str
    created_at: dt.datetime


class GroupDetail(GroupPublic):
    serials: list[str] = Field(description="members by serial (at most 10,000)")
    desired: DesiredPublic | None


class MembersChange(Strict):
    add: list[str] = Field(default_factory=list, max_length=10_000)
    remove: list[str] = Field(default_factory=list, max_length=10_000)


# -- desired state -----------------------------------------------------------------------


class ReleaseRef(Strict):
    name: str = Field(max_length=64)
    version: str = Field(max_length=64)


class AppDesired(Strict):
    name: str = Field(max_length=64)
    version: str | None = Field(default=None, max_length=64)
    config: dict[str, Any] | None = None
    absent: bool = Field(default=False, description="remove the app where it is installed")


class DesiredUpdate(Strict):
    firmware: ReleaseRef | None = None
    apps: list[AppDesired] | None = Field(
        default=None, max_length=64, description="null: says nothing about apps; []: no apps"
    )


class FirmwarePublic(Strict):
    name: str
    version: str
    target: str


class AppPublic(Strict):
    name: str
    version: str | None
    target: str | None
    config: dict[str, Any] | None
    absent: bool


class DesiredPublic(Strict):
    scope: str
    name: str
    firmware: FirmwarePublic | None
    apps: list[AppPublic] | None
    updated_by: str
    updated_at: dt.datetime


GroupDetail.model_rebuild()

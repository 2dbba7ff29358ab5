"""The fleet update level as a pure function (no I/O): every member of a group in exactly one
of four categories, with a proof a client can check.

Categories, decided in this order for a group whose target firmware version is ``target``:

1. **updating** — the boot slot is on trial (the agent reports boot state ``trial``;
   ``trying`` is accepted as well; a trial boot is never on target), or the
   device is in progress in the campaign that rolls the target out (assigned, downloading,
   downloaded, installing, or reverting after an abort);
2. **on target** — the inventory reports ``target``; or the device reported ``committed``
   (campaign state ``succeeded``) no earlier than its last inventory, not caught up yet;
3. **failed** — the campaign recorded ``failed``, ``rolled-back`` or ``reverted``;
4. **not reached** — everything else (pending, excluded, never in a campaign, no target).

The proof: the category lists are disjoint, their union is exactly the member list, and
the counts are their lengths; :func:`verify_level` checks all three and the digest (SHA-256
over the sorted ``serial category`` lines) lets a client compare two answers cheaply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from garrison.fleet.campaign import (
    ASSIGNED,
    DOWNLOADED,
    DOWNLOADING,
    FAILED,
    INSTALLING,
    REVERTED,
    REVERTING,
    ROLLED_BACK,
    SUCCEEDED,
)

ON_TARGET, UPDATING, FAILED_LEVEL, NOT_REACHED = "on_target", "updating", "failed", "not_reached"
CATEGORIES = (ON_TARGET, UPDATING, FAILED_LEVEL, NOT_REACHED)

_MOVING = (ASSIGNED, DOWNLOADING, DOWNLOADED, INSTALLING, REVERTING)
# Boot states of a slot on trial: ``trial`` is what the agent reports
# (:func:`garrison.agent.inventory.boot_report`); ``trying`` is the boot environment's word.
TRIAL_STATES = frozenset({"trial", "trying"})
_FAILED = (FAILED, ROLLED_BACK, REVERTED)


class LevelInconsistent(RuntimeError):
    """The classification broke its own proof: a bug, never a user error (HTTP 500)."""


@dataclass(frozen=True)
class MemberFacts:
    """What decides one member's category: its inventory and its place in the campaign
    that rolls the target out (None when it has none)."""

    serial: str
    firmware: str | None = None
    slot_state: str | None = None
    inventory_at: dt.datetime | None = None
    campaign_state: str | None = None
    campaign_at: dt.datetime | None = None


def classify(facts: MemberFacts, target: str | None) -> str:
    """The one category of a member (see the module docstring for the order)."""
    if facts.slot_state in TRIAL_STATES or facts.campaign_state in _MOVING:
        return UPDATING
    if target is not None:
        if facts.firmware == target:
            return ON_TARGET
        if facts.campaign_state == SUCCEEDED and (
            facts.inventory_at is None
            or facts.campaign_at is None
            or facts.inventory_at <= facts.campaign_at
        ):
            return ON_TARGET
    if facts.campaign_state in _FAILED:
        return FAILED_LEVEL
    return NOT_REACHED


@dataclass(frozen=True)
class GroupLevel:
    """One group's update level: counts, the serials behind them, and the proof."""

    group: str
    target: str | None
    campaign: int | None
    members: int
    counts: dict[str, int]
    devices: dict[str, tuple[str, ...]] = field(repr=False)
    digest: str

    def proof(self) -> dict[str, object]:
        return {
            "members": self.members,
            "classified": sum(self.counts.values()),
            "exactly_one_each": True,
            "digest": self.digest,
        }


def level_digest(assignment: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over the sorted ``serial category`` lines."""
    lines = sorted(f"{serial} {category}\n" for serial, category in assignment)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def group_level(
    group: str, target: str | None, campaign: int | None, members: Sequence[MemberFacts]
) -> GroupLevel:
    """Classify every member of ``group`` and prove the result (raises
    :class:`LevelInconsistent` if it cannot, which would be a bug)."""
    lists: dict[str, list[str]] = {category: [] for category in CATEGORIES}
    for facts in members:
        lists[classify(facts, target)].append(facts.serial)
    devices = {category: tuple(sorted(serials)) for category, serials in lists.items()}
    level = GroupLevel(
        group,
        target,
        campaign,
        len(members),
        {category: len(serials) for category, serials in devices.items()},
        devices,
        level_digest((s, c) for c, serials in devices.items() for s in serials),
    )
    verify_level(level, [m.serial for m in members])
    return level


def verify_level(level: GroupLevel, serials: Sequence[str]) -> None:
    """Check the proof against the member list: each member in exactly one category, the
    counts the lengths of the lists, their sum the number of members, the digest right."""
    seen: dict[str, str] = {}
    for category in CATEGORIES:
        listed = level.devices.get(category, ())
        if level.counts.get(category) != len(listed):
            raise LevelInconsistent(f"{level.group}: the {category} count is not its list")
        for serial in listed:
            if serial in seen:
                raise LevelInconsistent(
                    f"{level.group}: {serial} is both {seen[serial]} and {category}"
                )
            seen[serial] = category
    if len(serials) != len(set(serials)) or set(seen) != set(serials):
        raise LevelInconsistent(f"{level.group}: the categories do not list every member once")
    if sum(level.counts.values()) != level.members or level.members != len(serials):
        raise LevelInconsistent(f"{level.group}: the counts do not add up to the members")
    if level_digest(seen.items()) != level.digest:
        raise LevelInconsistent(f"{level.group}: the digest does not match the lists")

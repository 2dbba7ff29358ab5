"""Rollout campaigns as a pure state machine: the plan, the scheduler's decision, and the
device report transitions (no I/O, no clock: ``now`` is always passed in).

A campaign rolls one firmware release out over the eligible members of a group in phases:
phase 0 is the *canary* (a count or a percentage of the eligible devices), phases 1.. are
*waves* given as cumulative percentages ending at 100. The plan's JSON form::

    {"canary": 2,                 # or "5%"            (default 1)
     "waves": [25, 50, 100],      # cumulative %, strictly increasing, ends at 100
     "max_per_minute": 60,        # assignments in any sliding minute (default 60)
     "failure_threshold": 0,      # failures allowed per phase: a count or "10%" (default 0)
     "soak_minutes": 0,           # wait after a phase's last device finished (default 0)
     "rollback_on_abort": false}  # what abort does when the operator does not say

Guarantees of :func:`decide` (tested with hypothesis in tests/campaigns/test_campaign.py):

* Phase ``p`` may hold at most ``targets[p]`` devices counted from the start (the cumulative
  target, recomputed from the number of eligible devices, so devices that join a dynamic
  group mid-campaign are assigned in the current phase or a later one).
* Never more than ``max_per_minute`` devices have an ``assigned_at`` in any window of 60 s.
* A phase whose failures exceed its threshold halts the campaign at once, not at phase end:
  with a threshold of *t*, failure *t* + 1 halts. A percentage threshold allows
  ``floor(percent * phase size)`` failures. Failures count from ``phase_started_at``, which
  restarts when an operator resumes a halted campaign (the failures seen were looked at).
* A phase ends when its quota is assigned (or nobody is left to assign), no device is in
  progress, and ``soak_minutes`` have passed since its last device finished. The campaign
  completes when no device is pending (waiting for another campaign included) or in
  progress.
* Pending devices are assigned in ascending device id order: the same inputs give the same
  decision on every replica.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from garrison.errors import Conflict, InvalidRequest

# -- states ---------------------------------------------------------------------------

RUNNING, PAUSED, HALTED, ABORTED, COMPLETED = "running", "paused", "halted", "aborted", "completed"
CAMPAIGN_STATES = (RUNNING, PAUSED, HALTED, ABORTED, COMPLETED)
ACTIVE = (RUNNING, PAUSED, HALTED)  # a campaign that still owns its devices

PENDING, ASSIGNED, EXCLUDED = "pending", "assigned", "excluded"
DOWNLOADING, DOWNLOADED, INSTALLING = "downloading", "downloaded", "installing"
SUCCEEDED, FAILED, ROLLED_BACK = "succeeded", "failed", "rolled-back"
REVERTING, REVERTED = "reverting", "reverted"
DEVICE_STATES = (
    PENDING,
    ASSIGNED,
    DOWNLOADING,
    DOWNLOADED,
    INSTALLING,
    SUCCEEDED,
    FAILED,
    ROLLED_BACK,
    EXCLUDED,
    REVERTING,
    REVERTED,
)
IN_PROGRESS = (ASSIGNED, DOWNLOADING, DOWNLOADED, INSTALLING)
FINISHED = (SUCCEEDED, FAILED, ROLLED_BACK)
FAILURES = (FAILED, ROLLED_BACK)

# what a device reports (docs/fleet.md) → the state it moves its campaign entry to
REPORTED = {
    "downloading": DOWNLOADING,
    "downloaded": DOWNLOADED,
    "installing": INSTALLING,
    "committed": SUCCEEDED,
    "rolled-back": ROLLED_BACK,
    "failed": FAILED,
}
_RANK = {ASSIGNED: 0, DOWNLOADING: 1, DOWNLOADED: 2, INSTALLING: 3}
_RANK.update(dict.fromkeys(FINISHED, 4))

RATE_WINDOW = dt.timedelta(minutes=1)

# -- the plan -------------------------------------------------------------------------

_PERCENT = re.compile(r"(\d{1,3})(?:\.(\d{1,2}))?%")
MAX_WAVES = 20
MAX_COUNT = 1_000_000
MAX_SOAK_MINUTES = 7 * 24 * 60
PLAN_KEYS = (
    "canary",
    "waves",
    "max_per_minute",
    "failure_threshold",
    "soak_minutes",
    "rollback_on_abort",
)


@dataclass(frozen=True)
class Amount:
    """A number of devices, or a share of some number given in basis points (1/100 %)."""

    count: int | None = None
    basis_points: int | None = None

    @classmethod
    def parse(cls, value: object, what: str, *, minimum: int) -> Amount:
        """``3`` (a count, at least ``minimum``) or ``"12.5%"``; InvalidRequest otherwise."""
        if isinstance(value, int) and not isinstance(value, bool):
            if not minimum <= value <= MAX_COUNT:
                raise InvalidRequest(f"{what} must be between {minimum} and {MAX_COUNT} devices")
            return cls(count=value)
        if isinstance(value, str):
            match = _PERCENT.fullmatch(value.strip())
            if match:
                points = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
                if (minimum > 0 and points == 0) or points > 10_000:
                    low = "above 0%" if minimum > 0 else "0%"
                    raise InvalidRequest(f"{what} must be a percentage from {low} to 100%")
                return cls(basis_points=points)
        raise InvalidRequest(
            f'{what} must be a number of devices or a percentage such as "10%"',
            hint='e.g. 2 or "5%" (up to two decimals)',
        )

    def of_rounded_up(self, n: int) -> int:
        if self.count is not None:
            return self.count
        assert self.basis_points is not None
        return -(-n * self.basis_points // 10_000)

    def of_rounded_down(self, n: int) -> int:
        if self.count is not None:
            return self.count
        assert self.basis_points is not None
        return n * self.basis_points // 10_000

    def to_json(self) -> int | str:
        if self.count is not None:
            return self.count
        assert self.basis_points is not None
        return f"{self.basis_points / 100:g}%"


def _int(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be a whole number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Plan:
    """How a campaign proceeds; see the module docstring for the JSON form."""

    canary: Amount = field(default_factory=lambda: Amount(count=1))
    waves: tuple[int, ...] = (100,)
    max_per_minute: int = 60
    failure_threshold: Amount = field(default_factory=lambda: Amount(count=0))
    soak_minutes: int = 0
    rollback_on_abort: bool = False

    @classmethod
    def from_json(cls, data: object) -> Plan:
        """A validated plan; :class:`InvalidRequest` naming the first bad field."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidRequest("the plan must be a JSON object")
        unknown = sorted(set(data) - set(PLAN_KEYS))
        if unknown:
            raise InvalidRequest(
                f"unknown plan field {str(unknown[0])[:40]!r}",
                hint=f"plan fields: {', '.join(PLAN_KEYS)}",
            )
        waves = data.get("waves", [100])
        if (
            not isinstance(waves, list)
            or not 1 <= len(waves) <= MAX_WAVES
            or not all(isinstance(w, int) and not isinstance(w, bool) for w in waves)
        ):
            raise InvalidRequest(
                f"waves must be a list of 1 to {MAX_WAVES} whole percentages", hint="e.g. [25, 100]"
            )
        if any(not 0 < w <= 100 for w in waves) or any(
            a >= b for a, b in itertools.pairwise(waves)
        ):
            raise InvalidRequest("waves must be cumulative percentages, strictly increasing")
        if waves[-1] != 100:
            raise InvalidRequest("the last wave must be 100 (every eligible device)")
        rollback = data.get("rollback_on_abort", False)
        if not isinstance(rollback, bool):
            raise InvalidRequest("rollback_on_abort must be true or false")
        return cls(
            canary=Amount.parse(data.get("canary", 1), "canary", minimum=1),
            waves=tuple(waves),
            max_per_minute=_int(data, "max_per_minute", 60, 1, MAX_COUNT),
            failure_threshold=Amount.parse(
                data.get("failure_threshold", 0), "failure_threshold", minimum=0
            ),
            soak_minutes=_int(data, "soak_minutes", 0, 0, MAX_SOAK_MINUTES),
            rollback_on_abort=rollback,
        )

    @classmethod
    def from_text(cls, text: str) -> Plan:
        return cls.from_json(json.loads(text))

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``Plan.from_json(p.to_json()) == p``)."""
        return {
            "canary": self.canary.to_json(),
            "waves": list(self.waves),
            "max_per_minute": self.max_per_minute,
            "failure_threshold": self.failure_threshold.to_json(),
            "soak_minutes": self.soak_minutes,
            "rollback_on_abort": self.rollback_on_abort,
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @property
    def phases(self) -> int:
        return 1 + len(self.waves)

    def targets(self, eligible: int) -> list[int]:
        """For each phase, how many devices may have been assigned by its end (cumulative,
        non-decreasing, the last equal to ``eligible``)."""
        canary = min(eligible, max(1, self.canary.of_rounded_up(eligible)))
        out = [canary]
        for wave in self.waves:
            out.append(max(out[-1], min(eligible, -(-eligible * wave // 100))))
        out[-1] = eligible
        return out

    def allowed_failures(self, phase_size: int) -> int:
        """Failures a phase of ``phase_size`` devices tolerates; one more halts."""
        return self.failure_threshold.of_rounded_down(phase_size)


def phase_name(phase: int) -> str:
    return "canary" if phase == 0 else f"wave {phase}"


# -- the scheduler's decision ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One device's place in a campaign, as the scheduler sees it. A ``waiting`` device is
    pending but held by another active campaign: it cannot be assigned yet, and the
    campaign does not complete without it."""

    device_id: int
    state: str
    phase: int | None = None
    assigned_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    waiting: bool = False


def counts_toward_phases(member: Member) -> bool:
    """Assigned at some point and not sent back to pending (excluded and pre-satisfied
    devices, which never needed the update, do not count)."""
    return member.state not in (PENDING, EXCLUDED) and member.phase is not None


def eligible(member: Member) -> bool:
    """A device the campaign has to update: not excluded, not already running the release
    when it joined (``succeeded`` without a phase)."""
    return member.state != EXCLUDED and not (member.state == SUCCEEDED and member.phase is None)


@dataclass(frozen=True)
class Decision:
    """What the scheduler does now. ``assign`` are device ids that go from ``pending`` to
    ``assigned`` in ``phase``; ``events`` describe phase changes for the audit log."""

    state: str
    phase: int
    phase_started_at: dt.datetime | None
    assign: tuple[int, ...] = ()
    reason: str | None = None
    events: tuple[str, ...] = ()
    wake_at: dt.datetime | None = None  # a soak ends then: nothing changes before

    def changes_campaign(self, state: str, phase: int) -> bool:
        return (self.state, self.phase) != (state, phase)


def decide(
    plan: Plan,
    phase: int,
    phase_started_at: dt.datetime | None,
    members: Sequence[Member],
    now: dt.datetime,
) -> Decision:
    """The next step of a *running* campaign (see the module docstring for guarantees)."""
    started = phase_started_at or now
    n = sum(1 for m in members if eligible(m))
    targets = plan.targets(n)
    counted = [m for m in members if counts_toward_phases(m)]
    busy = any(m.state in IN_PROGRESS for m in counted)
    pending = sorted(m.device_id for m in members if m.state == PENDING and not m.waiting)
    waiting = any(m.state == PENDING and m.waiting for m in members)
    events: list[str] = []
    phase = min(phase, plan.phases - 1)
    while True:
        size = targets[phase] - (targets[phase - 1] if phase else 0)
        failures = sum(
            1
            for m in counted
            if m.phase == phase
            and m.state in FAILURES
            and (m.updated_at is None or m.updated_at >= started)
        )
        allowed = plan.allowed_failures(size)
        if failures > allowed:
            reason = (
                f"{phase_name(phase)}: {failures} failed, more than the {allowed} allowed "
                f"of {size} device(s)"
            )
            return Decision(HALTED, phase, started, reason=reason, events=(*events, reason))
        quota_filled = len(counted) >= targets[phase] or not pending
        if not quota_filled or busy:
            break
        if not pending and not waiting:
            events.append(f"completed: {len(counted)} device(s) updated in {phase + 1} phase(s)")
            return Decision(COMPLETED, phase, started, events=tuple(events))
        if phase == plan.phases - 1:  # unreachable: the last target is every eligible device
            break
        finished = [m.updated_at for m in counted if m.phase == phase and m.updated_at]
        if plan.soak_minutes and finished:
            ready = max(finished) + dt.timedelta(minutes=plan.soak_minutes)
            if now < ready:
                return Decision(RUNNING, phase, started, events=tuple(events), wake_at=ready)
        phase, started = phase + 1, now
        events.append(f"{phase_name(phase)} started ({targets[phase]} of {n} device(s))")
    window_start = now - RATE_WINDOW
    recent = sum(1 for m in members if m.assigned_at is not None and m.assigned_at > window_start)
    room = min(targets[phase] - len(counted), plan.max_per_minute - recent, len(pending))
    return Decision(
        RUNNING, phase, started, assign=tuple(pending[: max(0, room)]), events=tuple(events)
    )


# -- device reports -------------------------------------------------------------------


class TransitionRefused(Conflict):
    """A device report that the campaign device state machine does not allow."""


def after_report(current: str, reported: str, *, was_assigned: bool) -> str | None:
    """The device's new campaign state after it reports ``reported`` while ``current``;
    ``None`` when the report repeats the current state (idempotent, nothing to change).

    Reports move forward only (assigned → downloading → downloaded → installing →
    succeeded | failed | rolled-back, steps may be skipped). A ``pending`` device that had
    been assigned before a pause or halt may still report: it had started, and an A/B
    install is never cut. Anything else raises :class:`TransitionRefused`.
    """
    if reported not in REPORTED:
        raise InvalidRequest(f"state must be one of {', '.join(REPORTED)}")
    target = REPORTED[reported]
    if target == current:
        return None
    if current == PENDING and was_assigned:
        return target
    if current in _RANK and _RANK[target] > _RANK[current]:
        return target
    raise TransitionRefused(
        f"the device is {current} in this campaign; a {reported!r} report is not allowed",
        hint="reports move forward: downloading, downloaded, installing, then committed, "
        "failed or rolled-back",
    )


# -- progress -------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseProgress:
    """One phase as the operator sees it: its cumulative target and size at the current
    number of eligible devices, its devices by state, and the failures it tolerates."""

    index: int
    name: str
    target: int
    size: int
    allowed_failures: int
    status: str  # done | current | upcoming
    states: dict[str, int]


def progress(plan: Plan, phase: int, state: str, members: Sequence[Member]) -> list[PhaseProgress]:
    n = sum(1 for m in members if eligible(m))
    targets = plan.targets(n)
    out = []
    for index, target in enumerate(targets):
        size = target - (targets[index - 1] if index else 0)
        states: dict[str, int] = {}
        for m in members:
            if m.phase == index and counts_toward_phases(m):
                states[m.state] = states.get(m.state, 0) + 1
        if index < phase or (state == COMPLETED and index == phase):
            status = "done"
        elif index == phase:
            status = "current"
        else:
            status = "upcoming"
        out.append(
            PhaseProgress(
                index, phase_name(index), target, size, plan.allowed_failures(size), status, states
            )
        )
    return out

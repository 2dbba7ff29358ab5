"""The pure campaign core: plans, the scheduler's decision with an injected clock, device
report transitions, progress. Hypothesis checks the invariants over random rollouts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.errors import Conflict, InvalidRequest
from garrison.fleet.campaign import (
    ASSIGNED,
    COMPLETED,
    DOWNLOADING,
    EXCLUDED,
    FAILED,
    FINISHED,
    HALTED,
    IN_PROGRESS,
    INSTALLING,
    PENDING,
    REPORTED,
    ROLLED_BACK,
    RUNNING,
    SUCCEEDED,
    Amount,
    Member,
    Plan,
    TransitionRefused,
    after_report,
    counts_toward_phases,
    decide,
    progress,
)

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def plan(**fields: object) -> Plan:
    return Plan.from_json(fields)


# -- plans ----------------------------------------------------------------------------


def test_defaults() -> None:
    p = Plan.from_json({})
    assert p == Plan.from_json(None)
    assert p.to_json() == {
        "canary": 1,
        "waves": [100],
        "max_per_minute": 60,
        "failure_threshold": 0,
        "soak_minutes": 0,
        "rollback_on_abort": False,
    }
    assert p.phases == 2


@pytest.mark.parametrize(
    "data",
    [
        {"canary": 3, "waves": [10, 50, 100], "max_per_minute": 5, "failure_threshold": 2},
        {"canary": "5%", "waves": [100], "failure_threshold": "12.5%", "soak_minutes": 30},
        {"canary": "0.05%", "failure_threshold": "0%", "rollback_on_abort": True},
        {"canary": "100%", "failure_threshold": "100%"},
    ],
)
def test_round_trip(data: dict[str, object]) -> None:
    p = Plan.from_json(data)
    assert Plan.from_json(p.to_json()) == p
    assert Plan.from_text(p.to_text()) == p
    for key, value in data.items():
        assert p.to_json()[key] == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ("canary", "must be a JSON object"),
        ({"canery": 1}, "unknown plan field 'canery'"),
        ({"canary": 0}, "canary must be between 1 and"),
        ({"canary": -2}, "canary must be between 1 and"),
        ({"canary": True}, "canary must be a number of devices or a percentage"),
        ({"canary": 1.5}, "canary must be a number of devices or a percentage"),
        ({"canary": "0%"}, "canary must be a percentage from above 0% to 100%"),
        ({"canary": "101%"}, "canary must be a percentage from above 0% to 100%"),
        ({"canary": "5.123%"}, "canary must be a number of devices or a percentage"),
        ({"canary": "five"}, "canary must be a number of devices or a percentage"),
        ({"canary": 10**7}, "canary must be between 1 and"),
        ({"waves": []}, "waves must be a list of 1 to 20"),
        ({"waves": 100}, "waves must be a list of 1 to 20"),
        ({"waves": [*range(1, 21), 100]}, "waves must be a list of 1 to 20"),
        ({"waves": [50.5, 100]}, "waves must be a list of 1 to 20"),
        ({"waves": [True, 100]}, "waves must be a list of 1 to 20"),
        ({"waves": [50, 50, 100]}, "strictly increasing"),
        ({"waves": [60, 40, 100]}, "strictly increasing"),
        ({"waves": [0, 100]}, "strictly increasing"),
        ({"waves": [50, 120]}, "strictly increasing"),
        ({"waves": [25, 50]}, "the last wave must be 100"),
        ({"max_per_minute": 0}, "max_per_minute must be a whole number from 1"),
        ({"max_per_minute": "10"}, "max_per_minute must be a whole number from 1"),
        ({"max_per_minute": False}, "max_per_minute must be a whole number from 1"),
        ({"failure_threshold": -1}, "failure_threshold must be between 0 and"),
        ({"failure_threshold": "-1%"}, "failure_threshold must be a number of devices"),
        ({"soak_minutes": -1}, "soak_minutes must be a whole number from 0 to 10080"),
        ({"soak_minutes": 10081}, "soak_minutes must be a whole number from 0 to 10080"),
        ({"rollback_on_abort": "yes"}, "rollback_on_abort must be true or false"),
    ],
)
def test_malformed_plans_are_refused_by_field(data: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        Plan.from_json(data)


def test_amounts_round() -> None:
    assert Amount.parse("10%", "x", minimum=1).of_rounded_up(11) == 2
    assert Amount.parse("10%", "x", minimum=0).of_rounded_down(11) == 1
    assert Amount.parse("12.5%", "x", minimum=0).basis_points == 1250
    assert Amount.parse(" 7% ", "x", minimum=0).basis_points == 700
    assert Amount.parse(4, "x", minimum=0).of_rounded_up(1000) == 4


def test_targets() -> None:
    assert plan(canary=2, waves=[25, 50, 100]).targets(100) == [2, 25, 50, 100]
    assert plan(canary="5%", waves=[100]).targets(30) == [2, 30]  # 1.5 rounds up
    assert plan(canary=10, waves=[5, 100]).targets(20) == [10, 10, 20]  # never shrinks
    assert plan(canary=10).targets(3) == [3, 3]  # capped at the eligible devices
    assert plan(canary="1%").targets(1) == [1, 1]
    assert plan().targets(0) == [0, 0]


@given(
    n=st.integers(0, 5000),
    canary=st.one_of(st.integers(1, 6000), st.integers(1, 10_000).map(lambda b: f"{b / 100:g}%")),
    waves=st.lists(st.integers(1, 99), max_size=8, unique=True).map(lambda w: [*sorted(w), 100]),
)
def test_targets_are_cumulative_and_end_at_everyone(
    n: int, canary: int | str, waves: list[int]
) -> None:
    targets = Plan.from_json({"canary": canary, "waves": waves}).targets(n)
    assert len(targets) == 1 + len(waves)
    assert targets == sorted(targets)
    assert targets[-1] == n
    assert all(0 <= t <= n for t in targets)
    assert n == 0 or targets[0] >= 1


# -- decide ---------------------------------------------------------------------------


def fleet(n: int, state: str = PENDING) -> list[Member]:
    return [Member(i, state) for i in range(1, n + 1)]


def apply(
    members: list[Member], ids: Iterable[int], state: str, now: dt.datetime, phase: int | None
) -> list[Member]:
    chosen = set(ids)
    out = []
    for m in members:
        if m.device_id in chosen:
            assigned_at = now if state == ASSIGNED else m.assigned_at
            m = replace(
                m,
                state=state,
                phase=m.phase if phase is None else phase,
                assigned_at=assigned_at,
                updated_at=now,
            )
        out.append(m)
    return out


def test_canary_then_waves_to_completion() -> None:
    p = plan(canary=2, waves=[50, 100], max_per_minute=1000)
    members = fleet(10)
    d = decide(p, 0, T0, members, T0)
    assert (d.state, d.phase, d.assign) == (RUNNING, 0, (1, 2))
    members = apply(members, d.assign, ASSIGNED, T0, 0)
    # nothing more while the canary is in progress
    assert decide(p, 0, T0, members, T0 + MINUTE).assign == ()
    members = apply(members, [1], SUCCEEDED, T0 + MINUTE, None)
    assert decide(p, 0, T0, members, T0 + MINUTE).assign == ()
    members = apply(members, [2], SUCCEEDED, T0 + MINUTE, None)
    d = decide(p, 0, T0, members, T0 + 2 * MINUTE)
    assert (d.phase, d.assign) == (1, (3, 4, 5))
    assert d.phase_started_at == T0 + 2 * MINUTE
    assert d.events == ("wave 1 started (5 of 10 device(s))",)
    members = apply(members, d.assign, SUCCEEDED, T0 + 3 * MINUTE, 1)
    d = decide(p, 1, T0 + 2 * MINUTE, members, T0 + 3 * MINUTE)
    assert (d.phase, d.assign) == (2, (6, 7, 8, 9, 10))
    members = apply(members, d.assign, SUCCEEDED, T0 + 4 * MINUTE, 2)
    d = decide(p, 2, T0 + 3 * MINUTE, members, T0 + 4 * MINUTE)
    assert d.state == COMPLETED
    assert d.events[-1].startswith("completed: 10 device(s)")


def test_rate_limit_over_a_sliding_minute() -> None:
    p = plan(canary="100%", max_per_minute=3)
    members = fleet(10)
    d = decide(p, 0, T0, members, T0)
    assert d.assign == (1, 2, 3)
    members = apply(members, d.assign, ASSIGNED, T0, 0)
    assert decide(p, 0, T0, members, T0 + dt.timedelta(seconds=59)).assign == ()
    d = decide(p, 0, T0, members, T0 + dt.timedelta(seconds=60))
    assert d.assign == (4, 5, 6)  # the assignments at T0 are exactly a minute old: out


def test_halts_exactly_past_the_threshold_without_waiting_for_phase_end() -> None:
    p = plan(canary=5, failure_threshold=1, max_per_minute=100)
    members = apply(fleet(20), [1, 2, 3, 4, 5], ASSIGNED, T0, 0)
    members = apply(members, [1], FAILED, T0 + MINUTE, None)
    d = decide(p, 0, T0, members, T0 + MINUTE)
    assert d.state == RUNNING  # one failure is allowed
    members = apply(members, [2], ROLLED_BACK, T0 + MINUTE, None)
    d = decide(p, 0, T0, members, T0 + MINUTE)  # 3, 4, 5 still in progress
    assert d.state == HALTED
    assert d.assign == ()
    assert d.reason == "canary: 2 failed, more than the 1 allowed of 5 device(s)"


def test_percentage_threshold_rounds_down() -> None:
    p = plan(canary=9, failure_threshold="20%")  # 1.8 → 1 failure allowed
    members = apply(fleet(9), range(1, 10), ASSIGNED, T0, 0)
    members = apply(members, [1], FAILED, T0, None)
    assert decide(p, 0, T0, members, T0).state == RUNNING
    members = apply(members, [2], FAILED, T0, None)
    assert decide(p, 0, T0, members, T0).state == HALTED


def test_resume_after_halt_counts_failures_from_the_restart() -> None:
    p = plan(canary=3, failure_threshold=0)
    members = apply(fleet(6), [1, 2, 3], ASSIGNED, T0, 0)
    members = apply(members, [1], FAILED, T0 + MINUTE, None)
    assert decide(p, 0, T0, members, T0 + MINUTE).state == HALTED
    resumed = T0 + 5 * MINUTE  # the operator looked and resumed: phase clock restarts
    assert decide(p, 0, resumed, members, resumed).state == RUNNING
    members = apply(members, [2], FAILED, resumed + MINUTE, None)
    assert decide(p, 0, resumed, members, resumed + MINUTE).state == HALTED


def test_soak_between_phases() -> None:
    p = plan(canary=1, soak_minutes=30)
    members = apply(fleet(3), [1], ASSIGNED, T0, 0)
    members = apply(members, [1], SUCCEEDED, T0 + MINUTE, None)
    d = decide(p, 0, T0, members, T0 + 10 * MINUTE)
    assert (d.phase, d.assign, d.wake_at) == (0, (), T0 + 31 * MINUTE)
    d = decide(p, 0, T0, members, T0 + 31 * MINUTE)
    assert (d.phase, d.assign) == (1, (2, 3))


def test_devices_joining_mid_campaign_are_assigned_in_the_current_phase() -> None:
    p = plan(canary=1, waves=[50, 100], max_per_minute=100)
    members = apply(fleet(4), [1], SUCCEEDED, T0, 0)
    d = decide(p, 0, T0, members, T0)
    assert (d.phase, d.assign) == (1, (2,))  # 50 % of 4
    members = apply(members, [2], ASSIGNED, T0, 1)
    members += [Member(7, PENDING), Member(5, PENDING)]  # two devices join the group
    d = decide(p, 1, T0, members, T0)
    assert d.assign == (3,)  # 50 % of 6 is 3: room for one more, lowest id first
    members = apply(members, [3], SUCCEEDED, T0, 1)
    members = apply(members, [2], SUCCEEDED, T0, 1)
    d = decide(p, 1, T0, members, T0)
    assert (d.phase, d.assign) == (2, (4, 5, 7))


def test_excluded_and_already_updated_devices_do_not_count() -> None:
    p = plan(canary="50%")
    members = [
        Member(1, EXCLUDED),
        Member(2, SUCCEEDED, phase=None),  # already running the release when it joined
        Member(3, PENDING),
        Member(4, PENDING),
    ]
    d = decide(p, 0, T0, members, T0)
    assert d.assign == (3,)  # 50 % of the 2 that need it


def test_empty_phases_are_skipped_and_an_empty_campaign_completes() -> None:
    p = plan(canary=5, waves=[10, 20, 100])
    members = apply(fleet(5), range(1, 6), SUCCEEDED, T0, 0)
    d = decide(p, 0, T0, members, T0)
    assert d.state == COMPLETED
    assert decide(p, 0, T0, [Member(1, EXCLUDED)], T0).state == COMPLETED


def test_paused_devices_back_to_pending_keep_their_phase_but_do_not_count() -> None:
    p = plan(canary=2, max_per_minute=100)
    members = apply(fleet(4), [1, 2], ASSIGNED, T0, 0)
    members = apply(members, [2], PENDING, T0, None)  # pause sent it back
    assert not counts_toward_phases(members[1])
    d = decide(p, 0, T0, members, T0 + 2 * MINUTE)
    assert d.assign == (2,)


def test_same_inputs_same_decision_in_any_order() -> None:
    p = plan(canary=3)
    members = fleet(10)
    assert decide(p, 0, T0, members, T0) == decide(p, 0, T0, members[::-1], T0)


# -- invariants over random rollouts ---------------------------------------------------


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[Plan, int, list[tuple[int, int, int, int]]]:
    data: dict[str, object] = {
        "canary": draw(st.one_of(st.integers(1, 8), st.sampled_from(["10%", "25%", "2.5%"]))),
        "waves": [*sorted(draw(st.lists(st.integers(1, 99), max_size=4, unique=True))), 100],
        "max_per_minute": draw(st.integers(1, 12)),
        "failure_threshold": draw(st.one_of(st.integers(0, 3), st.sampled_from(["10%", "50%"]))),
        "soak_minutes": draw(st.sampled_from([0, 0, 1, 5])),
    }
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(1, 90),  # seconds to the next tick
                st.integers(0, 4),  # devices finishing
                st.integers(0, 100),  # failure chance in percent
                st.integers(0, 2),  # devices joining
            ),
            min_size=1,
            max_size=60,
        )
    )
    return Plan.from_json(data), draw(st.integers(0, 40)), steps


@settings(max_examples=300, deadline=None)
@given(rollouts())
def test_invariants(case: tuple[Plan, int, list[tuple[int, int, int, int]]]) -> None:
    p, n, steps = case
    members = fleet(n)
    next_id = n + 1
    now, phase, started, state = T0, 0, T0, RUNNING
    assignments: list[dt.datetime] = []
    for seconds, finishing, fail_pct, joining in steps:
        now += dt.timedelta(seconds=seconds)
        busy = [m.device_id for m in members if m.state in IN_PROGRESS][:finishing]
        for k, device_id in enumerate(busy):
            outcome = FAILED if (k * 37 + seconds) % 100 < fail_pct else SUCCEEDED
            members = apply(members, [device_id], outcome, now, None)
        for _ in range(joining):
            members.append(Member(next_id, PENDING))
            next_id += 1
        if state != RUNNING:
            continue
        d = decide(p, phase, started, members, now)
        # halt exactly past the threshold of the phase it was in
        eligible = sum(1 for m in members if m.state != EXCLUDED)
        targets = p.targets(eligible)
        size = targets[phase] - (targets[phase - 1] if phase else 0)
        failed = sum(
            1
            for m in members
            if m.phase == phase and m.state in (FAILED, ROLLED_BACK) and m.updated_at >= started
        )
        assert (d.state == HALTED) == (failed > p.allowed_failures(size))
        assert d.phase >= phase
        members = apply(members, d.assign, ASSIGNED, now, d.phase)
        assignments += [now] * len(d.assign)
        # never more assigned than the phase allows
        counted = sum(1 for m in members if counts_toward_phases(m))
        assert counted <= p.targets(eligible)[d.phase] or not d.assign
        # never faster than the rate, over any sliding minute
        recent = [t for t in assignments if t > now - MINUTE]
        assert len(recent) <= p.max_per_minute
        # in ascending id order: everyone assigned has a lower id than everyone pending
        if d.assign:
            pending = [m.device_id for m in members if m.state == PENDING]
            assert not pending or max(d.assign) < min(pending)
        if d.state == COMPLETED:
            assert all(m.state in FINISHED for m in members)
        state, phase, started = d.state, d.phase, d.phase_started_at or started


# -- reports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (ASSIGNED, "downloading", DOWNLOADING),
        (ASSIGNED, "installing", INSTALLING),  # steps may be skipped
        (ASSIGNED, "committed", SUCCEEDED),
        (DOWNLOADING, "downloaded", "downloaded"),
        (INSTALLING, "rolled-back", ROLLED_BACK),
        (INSTALLING, "failed", FAILED),
        (DOWNLOADING, "downloading", None),  # a repeat changes nothing
        (SUCCEEDED, "committed", None),
    ],
)
def test_reports_move_forward(current: str, reported: str, expected: str | None) -> None:
    assert after_report(current, reported, was_assigned=True) == expected


@pytest.mark.parametrize(
    ("current", "reported"),
    [
        (INSTALLING, "downloading"),
        (SUCCEEDED, "failed"),
        (FAILED, "committed"),
        (ROLLED_BACK, "installing"),
        (EXCLUDED, "downloading"),
        ("reverting", "committed"),
        ("reverted", "downloading"),
    ],
)
def test_reports_that_go_backwards_are_refused(current: str, reported: str) -> None:
    with pytest.raises(TransitionRefused, match=f"the device is {current}") as caught:
        after_report(current, reported, was_assigned=True)
    assert isinstance(caught.value, Conflict)


def test_pending_device_reports_only_if_it_had_been_assigned() -> None:
    assert after_report(PENDING, "installing", was_assigned=True) == INSTALLING
    with pytest.raises(TransitionRefused, match="the device is pending"):
        after_report(PENDING, "downloading", was_assigned=False)


def test_unknown_reported_state_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="state must be one of"):
        after_report(ASSIGNED, "succeeded", was_assigned=True)
    assert set(REPORTED) == {
        "downloading",
        "downloaded",
        "installing",
        "committed",
        "rolled-back",
        "failed",
    }


# -- progress -------------------------------------------------------------------------


def test_progress_per_phase() -> None:
    p = plan(canary=1, waves=[50, 100], failure_threshold="50%")
    members = apply(fleet(4), [1], SUCCEEDED, T0, 0)
    members = apply(members, [2], FAILED, T0, 1)
    phases = progress(p, 1, RUNNING, members)
    assert [(x.name, x.target, x.size, x.status) for x in phases] == [
        ("canary", 1, 1, "done"),
        ("wave 1", 2, 1, "current"),
        ("wave 2", 4, 2, "upcoming"),
    ]
    assert phases[0].states == {SUCCEEDED: 1}
    assert phases[1].states == {FAILED: 1}
    assert phases[2].allowed_failures == 1
    done = progress(p, 2, COMPLETED, members)
    assert [x.status for x in done] == ["done", "done", "done"]


def test_a_waiting_device_is_not_assigned_and_holds_completion() -> None:
    p = plan(canary="100%")
    members = [Member(1, SUCCEEDED, phase=0, updated_at=T0), Member(2, PENDING, waiting=True)]
    d = decide(p, 0, T0, members, T0)
    assert (d.state, d.assign) == (RUNNING, ())
    members[1] = Member(2, PENDING)  # the other campaign ended
    d = decide(p, 1, T0, members, T0)
    assert (d.state, d.assign) == (RUNNING, (2,))

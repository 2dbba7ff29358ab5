"""The pure update level: each member in exactly one category, and a proof that says so."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.agent.inventory import build_inventory
from garrison.fleet.campaign import DEVICE_STATES
from garrison.fleet.inventory import parse_inventory
from garrison.fleet.level import (
    CATEGORIES,
    FAILED_LEVEL,
    NOT_REACHED,
    ON_TARGET,
    TRIAL_STATES,
    UPDATING,
    LevelInconsistent,
    MemberFacts,
    classify,
    group_level,
    verify_level,
)
from garrison.updates import bootenv

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("facts", "category"),
    [
        (MemberFacts("a", "2.1.0", "committed"), ON_TARGET),
        (MemberFacts("a", "2.1.0", "trying"), UPDATING),  # a trial boot is never on target
        (MemberFacts("a", "2.0.0", "trying"), UPDATING),
        (MemberFacts("a", "2.1.0", "trial"), UPDATING),  # what the agent reports
        (MemberFacts("a", "2.0.0", "trial"), UPDATING),
        (MemberFacts("a", "2.0.0", "committed", T0, "assigned", T0), UPDATING),
        (MemberFacts("a", "2.0.0", "committed", T0, "installing", T0), UPDATING),
        (MemberFacts("a", "2.1.0", "committed", T0, "reverting", T0), UPDATING),
        # committed reported after the last inventory: the inventory has not caught up
        (MemberFacts("a", "2.0.0", "committed", T0, "succeeded", LATER), ON_TARGET),
        (MemberFacts("a", None, None, None, "succeeded", LATER), ON_TARGET),
        # an inventory newer than the report says otherwise: not on target
        (MemberFacts("a", "2.0.0", "committed", LATER, "succeeded", T0), NOT_REACHED),
        (MemberFacts("a", "2.0.0", "committed", T0, "failed", T0), FAILED_LEVEL),
        (MemberFacts("a", "2.0.0", "committed", T0, "rolled-back", T0), FAILED_LEVEL),
        (MemberFacts("a", "2.0.0", "committed", T0, "reverted", T0), FAILED_LEVEL),
        (MemberFacts("a", "2.0.0", "committed", T0, "pending", T0), NOT_REACHED),
        (MemberFacts("a", "2.0.0", "committed", T0, "excluded", T0), NOT_REACHED),
        (MemberFacts("a"), NOT_REACHED),  # never reported an inventory
    ],
)
def test_classify(facts: MemberFacts, category: str) -> None:
    assert classify(facts, "2.1.0") == category


def trial_inventory(firmware: str = "2.0.0", trial: str = "2.1.0") -> dict[str, object]:
    """An inventory as the agent builds it on a device whose new slot is on trial."""
    env = bootenv.factory_env(firmware, 1, "a" * 64, 10)
    info = bootenv.SlotInfo.of(b"image", trial, 1)
    env = bootenv.switch_to(
        bootenv.mark_written(bootenv.begin_write(env, "b", info), "b", info), "b", 3
    )
    return build_inventory("DM-1", "gw-1", env, {}, 60, None)


def test_a_device_on_trial_as_the_agent_reports_it_is_updating() -> None:
    """The agent reports a trial boot as ``trial`` (``level`` knew only ``trying``, so a
    device on trial outside a campaign was counted not reached)."""
    boot = parse_inventory(trial_inventory()).boot
    assert boot.state in TRIAL_STATES
    facts = MemberFacts("DM-1", parse_inventory(trial_inventory()).firmware, boot.state)
    assert classify(facts, "2.1.0") == UPDATING  # outside any campaign
    assert classify(facts, "2.0.0") == UPDATING  # the running version is the target: not yet
    assert classify(facts, None) == UPDATING


def test_no_target_means_nobody_is_on_target() -> None:
    assert classify(MemberFacts("a", "2.1.0", "committed"), None) == NOT_REACHED
    assert classify(MemberFacts("a", "2.1.0", "trying"), None) == UPDATING


def test_group_level_counts_and_proof() -> None:
    members = [
        MemberFacts("d1", "2.1.0", "committed"),
        MemberFacts("d2", "2.0.0", "trying"),
        MemberFacts("d3", "2.0.0", "committed", T0, "failed", T0),
        MemberFacts("d4", "2.0.0", "committed"),
        MemberFacts("d5", "2.1.0", "committed"),
    ]
    level = group_level("plant-a", "2.1.0", 7, members)
    assert level.counts == {ON_TARGET: 2, UPDATING: 1, FAILED_LEVEL: 1, NOT_REACHED: 1}
    assert level.devices[ON_TARGET] == ("d1", "d5")
    assert level.proof() == {
        "members": 5,
        "classified": 5,
        "exactly_one_each": True,
        "digest": level.digest,
    }
    verify_level(level, [m.serial for m in members])


def test_verify_catches_every_broken_proof() -> None:
    members = [MemberFacts("d1", "2.1.0"), MemberFacts("d2", "1.0")]
    level = group_level("g", "2.1.0", None, members)
    serials = ["d1", "d2"]
    twice = replace(
        level,
        devices={**level.devices, NOT_REACHED: ("d1", "d2")},
        counts={**level.counts, NOT_REACHED: 2},
        members=3,
    )
    with pytest.raises(LevelInconsistent, match="d1 is both on_target and not_reached"):
        verify_level(twice, serials)
    missing = replace(level, devices={**level.devices, NOT_REACHED: ()})
    with pytest.raises(LevelInconsistent, match="not_reached count is not its list"):
        verify_level(missing, serials)
    dropped = replace(
        level, devices={**level.devices, NOT_REACHED: ()}, counts={**level.counts, NOT_REACHED: 0}
    )
    with pytest.raises(LevelInconsistent, match="do not list every member once"):
        verify_level(dropped, serials)
    with pytest.raises(LevelInconsistent, match="do not list every member once"):
        verify_level(level, [*serials, "d3"])
    with pytest.raises(LevelInconsistent, match="digest"):
        verify_level(replace(level, digest="0" * 64), serials)
    with pytest.raises(LevelInconsistent, match="add up"):
        verify_level(replace(level, members=5), serials)


facts = st.builds(
    MemberFacts,
    serial=st.text("abcdef0123", min_size=1, max_size=6),
    firmware=st.sampled_from([None, "1.0", "2.1.0"]),
    slot_state=st.sampled_from([None, "committed", "trying", "trial"]),
    inventory_at=st.sampled_from([None, T0, LATER]),
    campaign_state=st.sampled_from([None, *DEVICE_STATES]),
    campaign_at=st.sampled_from([None, T0, LATER]),
)


@given(st.lists(facts, max_size=40, unique_by=lambda f: f.serial), st.sampled_from([None, "2.1.0"]))
def test_every_member_in_exactly_one_category(members: list[MemberFacts], target: str) -> None:
    level = group_level("g", target, None, members)
    listed = [s for c in CATEGORIES for s in level.devices[c]]
    assert sorted(listed) == sorted(m.serial for m in members)
    assert sum(level.counts.values()) == len(members)
    for m in members:
        assert m.serial in level.devices[classify(m, target)]
        if m.slot_state in TRIAL_STATES:
            assert m.serial not in level.devices[ON_TARGET]

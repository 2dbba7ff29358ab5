"""The conflict rule of docs/fleet.md, clause by clause, and its determinism: the resolved
state of a device does not depend on the order its groups are listed in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.fleet.desired import AppWant, Entry, GroupEntry, Resolved, group_order, resolve

BERLIN = {
    "timezone": "Europe/Berlin",
    "slots": [{"days": ["sun"], "start": "02:00", "minutes": 60}],
}
CHICAGO = {
    "timezone": "America/Chicago",
    "slots": [{"days": ["sat"], "start": "01:00", "minutes": 90}],
}


def test_no_entries_resolve_to_nothing() -> None:
    assert resolve(None, []) == Resolved()
    assert resolve(None, [GroupEntry("g", 0)]) == Resolved()
    assert resolve(None, []).present_apps() == {}


def test_groups_are_ordered_by_priority_descending_then_name_in_byte_order() -> None:
    groups = [
        GroupEntry("b", 0),
        GroupEntry("a", 0),
        GroupEntry("z", 5),
        GroupEntry("B", 0),  # upper case sorts before lower case in byte order
        GroupEntry("low", -3),
    ]
    assert [g.name for g in group_order(groups)] == ["z", "B", "a", "b", "low"]


def test_firmware_the_first_entry_naming_one_wins() -> None:
    groups = [
        GroupEntry("all", 0, Entry(firmware=1)),
        GroupEntry("line-3", 10, Entry(firmware=2)),
        GroupEntry("apps-only", 20, Entry(apps={})),
    ]
    resolved = resolve(None, groups)
    assert (resolved.firmware, resolved.firmware_from, resolved.pinned) == (2, "line-3", False)
    same_priority = [GroupEntry("b", 0, Entry(firmware=1)), GroupEntry("a", 0, Entry(firmware=2))]
    assert resolve(None, same_priority).firmware == 2  # "a" before "b"


def test_the_device_entry_comes_first_and_pins_firmware() -> None:
    groups = [GroupEntry("line-3", 100, Entry(firmware=2))]
    pinned = resolve(Entry(firmware=7), groups)
    assert (pinned.firmware, pinned.firmware_from, pinned.pinned) == (7, "device", True)
    apps_only = resolve(Entry(apps={"x": AppWant(5)}), groups)
    assert (apps_only.firmware, apps_only.firmware_from, apps_only.pinned) == (2, "line-3", False)


def test_apps_are_managed_when_any_entry_names_a_list_and_decided_per_name() -> None:
    groups = [
        GroupEntry("all", 0, Entry(apps={"modbus": AppWant(1, {"port": 502}), "old": AppWant(9)})),
        GroupEntry("line-3", 10, Entry(apps={"modbus": AppWant(2), "opcua": AppWant(3)})),
        GroupEntry("fw-only", 50, Entry(firmware=4)),
    ]
    resolved = resolve(Entry(apps={"old": AppWant(None)}), groups)
    assert resolved.apps == {
        "modbus": AppWant(2),
        "old": AppWant(None),
        "opcua": AppWant(3),
    }
    assert resolved.apps_from == {"modbus": "line-3", "old": "device", "opcua": "line-3"}
    assert resolved.present_apps() == {"modbus": AppWant(2), "opcua": AppWant(3)}
    assert AppWant(None).absent and not AppWant(2).absent


def test_an_empty_app_list_manages_apps_with_none_wanted() -> None:
    resolved = resolve(None, [GroupEntry("bare", 0, Entry(apps={}))])
    assert resolved.apps == {} and resolved.present_apps() == {}
    assert resolve(None, [GroupEntry("fw", 0, Entry(firmware=1))]).apps is None  # unmanaged


def test_the_window_of_the_first_group_with_one() -> None:
    groups = [
        GroupEntry("plant", 0, None, BERLIN),
        GroupEntry("us", -1, None, CHICAGO),
        GroupEntry("urgent", 9, Entry(firmware=1)),  # no window: does not close anything
    ]
    resolved = resolve(None, groups)
    assert (resolved.window, resolved.window_from) == (BERLIN, "plant")
    assert resolve(None, [GroupEntry("x", 0, Entry(firmware=1))]).window is None  # always open
    assert resolve(Entry(firmware=1), []).window_from is None


names = st.from_regex(r"[a-c]{1,2}", fullmatch=True)
entries = st.one_of(
    st.none(),
    st.builds(
        Entry,
        firmware=st.one_of(st.none(), st.integers(1, 5)),
        apps=st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["a", "b", "c"]),
                st.builds(AppWant, st.one_of(st.none(), st.integers(1, 5))),
                max_size=3,
            ),
        ),
    ),
)
groups = st.lists(
    st.builds(
        GroupEntry,
        names,
        st.integers(-2, 2),
        entries,
        st.one_of(st.none(), st.sampled_from(["w1", "w2"])),
    ),
    max_size=6,
    unique_by=lambda g: g.name,
)


@settings(max_examples=300, deadline=None)
@given(entries, groups, st.randoms())
def test_the_result_does_not_depend_on_the_order_of_groups(
    device: Entry | None, member_of: list[GroupEntry], rnd: random.Random
) -> None:
    shuffled = list(member_of)
    rnd.shuffle(shuffled)
    assert resolve(device, member_of) == resolve(device, shuffled)


@settings(max_examples=300, deadline=None)
@given(entries, groups)
def test_each_part_comes_from_the_first_entry_that_decides_it(
    device: Entry | None, member_of: list[GroupEntry]
) -> None:
    ordered = [("device", device)] if device is not None else []
    ordered += [(g.name, g.entry) for g in group_order(member_of) if g.entry is not None]
    resolved = resolve(device, member_of)
    firmware = next(((s, e.firmware) for s, e in ordered if e and e.firmware is not None), None)
    assert (resolved.firmware_from, resolved.firmware) == (firmware or (None, None))
    lists = [(s, e.apps) for s, e in ordered if e and e.apps is not None]
    assert (resolved.apps is None) is (not lists)
    for name, source in resolved.apps_from.items():
        first = next(s for s, apps in lists if apps and name in apps)
        assert source == first

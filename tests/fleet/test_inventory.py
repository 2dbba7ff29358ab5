"""The inventory report: strict parsing with limits, a digest that ignores only the uptime,
and the list of changes between two reports that becomes the device's history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.errors import InvalidRequest
from garrison.fleet.inventory import (
    MAX_APPS,
    Boot,
    Change,
    Inventory,
    LastUpdate,
    changes,
    from_stored,
    parse_inventory,
)


def report(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "serial": "DM-1000",
        "hardware": "edge-gw-2",
        "firmware": "2.0.0",
        "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
        "apps": {"modbus-bridge": "1.2.0"},
        "uptime_seconds": 86400,
        "last_update": {
            "target": "fw/2.0.0/fw-2.0.0.img",
            "outcome": "rolled-back",
            "version": "2.0.0",
            "event": "health check failed: exit 1",
            "at": "2026-11-21T10:00:00Z",
        },
    }
    doc.update(fields)
    return doc


def test_the_documented_report_parses() -> None:
    inv = parse_inventory(report(), "0.4.0")
    assert inv == Inventory(
        "DM-1000",
        "edge-gw-2",
        "2.0.0",
        Boot("a", "committed", "booted a"),
        {"modbus-bridge": "1.2.0"},
        86400,
        "0.4.0",
        LastUpdate(
            "fw/2.0.0/fw-2.0.0.img",
            "rolled-back",
            "2.0.0",
            "health check failed: exit 1",
            "2026-11-21T10:00:00Z",
        ),
    )
    assert from_stored(json.dumps(inv.to_json())) == inv


def test_only_serial_and_hardware_are_required() -> None:
    inv = parse_inventory({"serial": "S-1", "hardware": "gw-1"})
    assert inv == Inventory("S-1", "gw-1")
    nulls = dict.fromkeys(("firmware", "boot", "apps", "uptime_seconds", "last_update"))
    assert parse_inventory({"serial": "S-1", "hardware": "gw-1", **nulls}) == inv


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"color": "red"}, "inventory: unknown field(s) color"),
        ({"serial": None}, "inventory.serial and inventory.hardware are required"),
        ({"hardware": None}, "inventory.serial and inventory.hardware are required"),
        ({"serial": 5}, "inventory.serial must be a string"),
        ({"serial": "a b"}, "inventory.serial 'a b' is not valid"),
        ({"hardware": "Edge GW"}, "not a valid model name"),
        ({"firmware": 2}, "inventory.firmware must be a string"),
        ({"firmware": "2.0 beta"}, "inventory.firmware '2.0 beta' is not a valid version"),
        ({"firmware": "1" * 65}, "inventory.firmware is longer than 64 characters"),
        ({"boot": []}, "inventory.boot must be a JSON object"),
        ({"boot": {"slot": "a", "mood": "ok"}}, "inventory.boot: unknown field(s) mood"),
        ({"boot": {"slot": "slot-a-long"}}, "inventory.boot.slot"),
        ({"boot": {"state": "Committed"}}, "inventory.boot.state"),
        ({"boot": {"state": "x" * 17}}, "inventory.boot.state"),
        ({"boot": {"last_event": "x" * 301}}, "longer than 300 characters"),
        ({"boot": {"last_event": "a\x1b[31m"}}, "contains control characters"),
        ({"apps": ["a"]}, "inventory.apps must be an object"),
        ({"apps": {"Bad": "1"}}, "'Bad' is not a valid app name"),
        ({"apps": {"current": "1"}}, "'current' is not a valid app name"),
        ({"apps": {"a": 1}}, "inventory.apps.a must be a string"),
        ({"apps": {"a": None}}, "inventory.apps.a must be a version string"),
        ({"apps": {"a": "1 0"}}, "is not a valid version"),
        ({"apps": {f"a{i}": "1" for i in range(MAX_APPS + 1)}}, f"at most {MAX_APPS} apps"),
        ({"uptime_seconds": -1}, "uptime_seconds must be a whole number"),
        ({"uptime_seconds": 1.5}, "uptime_seconds must be a whole number"),
        ({"uptime_seconds": "5"}, "uptime_seconds must be a whole number"),
        ({"uptime_seconds": False}, "uptime_seconds must be a whole number"),
        ({"uptime_seconds": 10**11}, "uptime_seconds must be a whole number"),
        ({"last_update": "x"}, "inventory.last_update must be a JSON object"),
        ({"last_update": {"at": "yesterday"}}, "inventory.last_update.at must be an ISO 8601"),
        ({"last_update": {"target": "../../etc passwd"}}, "inventory.last_update.target"),
        ({"last_update": {"outcome": "OK!"}}, "inventory.last_update.outcome"),
        ({"last_update": {"why": "x"}}, "inventory.last_update: unknown field(s) why"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_inventory(report(**fields))
    assert message in str(refused.value)


def test_not_an_object_and_bad_agent_versions() -> None:
    for value in (None, [], "x", 3):
        with pytest.raises(InvalidRequest, match="inventory must be a JSON object"):
            parse_inventory(value)
    with pytest.raises(InvalidRequest, match="agent_version"):
        parse_inventory(report(), "0.4 beta")
    with pytest.raises(InvalidRequest, match="agent_version"):
        parse_inventory(report(), "1" * 33)
    assert parse_inventory(report(), "").agent_version is None


def test_the_digest_ignores_the_uptime_and_the_order_of_apps() -> None:
    base = parse_inventory(report())
    assert parse_inventory(report(uptime_seconds=5)).digest() == base.digest()
    two = {"a": "1", "b": "2"}
    assert (
        parse_inventory(report(apps=two)).digest()
        == parse_inventory(report(apps=dict(reversed(two.items())))).digest()
    )
    for changed in (
        report(firmware="2.0.1"),
        report(boot={"slot": "b", "state": "committed"}),
        report(apps={}),
        report(last_update=None),
    ):
        assert parse_inventory(changed).digest() != base.digest()
    assert parse_inventory(report(), "0.5.0").digest() != base.digest()


def test_the_first_report_is_one_summary() -> None:
    first = changes(None, parse_inventory(report()))
    assert [(c.kind, c.summary) for c in first] == [
        (
            "inventory",
            "first inventory: firmware 2.0.0, slot a (committed), modbus-bridge 1.2.0",
        )
    ]
    assert first[0].details["inventory"]["serial"] == "DM-1000"  # type: ignore[index]


def test_every_change_is_one_entry() -> None:
    old = parse_inventory(report(), "0.4.0")
    new = parse_inventory(
        report(
            firmware="2.1.0",
            boot={"slot": "b", "state": "trying", "last_event": "switched to b"},
            apps={"modbus-bridge": "1.3.0", "opcua": "0.9"},
            last_update={"outcome": "installing", "version": "2.1.0"},
            uptime_seconds=1,
        ),
        "0.5.0",
    )
    assert [(c.kind, c.summary) for c in changes(old, new)] == [
        ("inventory", "firmware 2.0.0 → 2.1.0"),
        ("inventory", "boot slot a (committed) → slot b (trying): switched to b"),
        ("inventory", "app modbus-bridge 1.2.0 → 1.3.0"),
        ("inventory", "app opcua 0.9 installed"),
        ("inventory", "agent 0.4.0 → 0.5.0"),
        ("update", "update installing: 2.1.0"),
    ]
    removed = parse_inventory(report(apps={}), "0.4.0")
    assert changes(old, removed) == [
        Change(
            "inventory",
            "app modbus-bridge removed (was 1.2.0)",
            {"field": "apps.modbus-bridge", "from": "1.2.0", "to": None},
        )
    ]
    assert changes(old, parse_inventory(report(uptime_seconds=7), "0.4.0")) == []


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,2}", fullmatch=True),
        max_size=8,
    ),
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,2}", fullmatch=True),
        max_size=8,
    ),
)
def test_app_changes_are_exactly_the_differing_names(
    before: dict[str, str], after: dict[str, str]
) -> None:
    old, new = parse_inventory(report(apps=before)), parse_inventory(report(apps=after))
    named = {c.details["field"] for c in changes(old, new)}
    assert named == {f"apps.{n}" for n in set(before) | set(after) if before.get(n) != after.get(n)}
    assert (old.digest() == new.digest()) is (before == after)

"""The directive as the device reads it: the contract's example, and every malformed field
refused (the device never acts on part of a directive)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from garrison.agent.directive import (
    AppEntry,
    CommandEntry,
    DirectiveInvalid,
    FirmwareEntry,
    KeptApp,
    directive_to_json,
    parse_directive,
    parse_poll_header,
)

EXAMPLE: dict[str, Any] = {  # docs/fleet.md
    "etag": "3f1c0a",
    "firmware": {"target": "firmware/edge-gw-2-2.1.0.img", "version": "2.1.0", "campaign": 3},
    "apps": [
        {
            "name": "modbus-bridge",
            "version": "1.3.0",
            "target": "apps/modbus-bridge-1.3.0.tar",
            "config": {"port": 502},
        }
    ],
    "kept_apps": [{"name": "opcua", "reason": "release opcua 3.0 is not built for model gw-2"}],
    "command": {"id": 7, "action": "rollback"},
    "window": {
        "timezone": "Europe/Berlin",
        "slots": [{"days": ["mon"], "start": "02:00", "minutes": 120}],
    },
    "poll_seconds": 1800,
    "jitter_seconds": 180,
}


def test_the_contract_example() -> None:
    directive = parse_directive(EXAMPLE)
    assert directive.etag == "3f1c0a"
    assert directive.firmware == FirmwareEntry("firmware/edge-gw-2-2.1.0.img", "2.1.0", 3)
    assert directive.apps == (
        AppEntry("modbus-bridge", "1.3.0", "apps/modbus-bridge-1.3.0.tar", {"port": 502}),
    )
    assert directive.kept_apps == (
        KeptApp("opcua", "release opcua 3.0 is not built for model gw-2"),
    )
    assert directive.kept == {"opcua"} and directive.app("opcua") is None
    assert directive.command == CommandEntry(7, "rollback")
    assert directive.window is not None and directive.window.timezone == "Europe/Berlin"
    assert (directive.poll_seconds, directive.jitter_seconds) == (1800, 180)
    assert parse_directive(directive_to_json(directive)) == directive
    assert directive.app("modbus-bridge") is not None and directive.app("other") is None


def test_a_directive_without_kept_apps_and_command_is_read_as_none_of_either() -> None:
    older = {k: v for k, v in EXAMPLE.items() if k not in ("kept_apps", "command")}
    directive = parse_directive(older)
    assert directive.kept_apps == () and directive.command is None
    assert directive.apps == parse_directive(EXAMPLE).apps
    nulls = parse_directive({**EXAMPLE, "kept_apps": None, "command": None})
    assert nulls.kept_apps == () and nulls.command is None
    assert parse_directive(directive_to_json(directive)) == directive


def test_nulls_mean_stay_unmanaged_and_always_open() -> None:
    doc = {**EXAMPLE, "firmware": None, "apps": None, "kept_apps": [], "window": None}
    directive = parse_directive(doc)
    assert directive.firmware is None and directive.apps is None and directive.window is None
    assert parse_directive({**doc, "apps": []}).apps == ()


def test_apps_are_ordered_by_name() -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["apps"].insert(0, {"name": "zeta", "version": "1", "target": "apps/z.tar", "config": None})
    doc["kept_apps"].insert(0, {"name": "zulu", "reason": "x"})
    directive = parse_directive(doc)
    assert [a.name for a in directive.apps or ()] == ["modbus-bridge", "zeta"]
    assert [k.name for k in directive.kept_apps] == ["opcua", "zulu"]


@pytest.mark.parametrize(
    "path",
    ["future", "firmware.future", "apps.0.future", "kept_apps.0.future", "command.future"],
)
def test_a_field_the_agent_does_not_know_is_refused(path: str) -> None:
    """It might restrict what the device may do: ignoring it could act against it."""
    with pytest.raises(DirectiveInvalid, match="unknown field"):
        parse_directive(_with(path, {"anything": 1}))


def _with(path: str, value: object) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        (_with("etag", None), "etag"),
        (_with("etag", ""), "etag"),
        (_with("etag", 'a"b'), "etag"),
        (_with("poll_seconds", 0), "poll_seconds"),
        (_with("poll_seconds", 1800.0), "poll_seconds"),
        (_with("poll_seconds", True), "poll_seconds"),
        (_with("poll_seconds", 10**9), "poll_seconds"),
        (_with("jitter_seconds", 1801), "jitter_seconds"),
        (_with("jitter_seconds", -1), "jitter_seconds"),
        (_with("firmware", "2.1.0"), "firmware must be an object"),
        (_with("firmware.version", "../2"), "firmware.version"),
        (_with("firmware.version", None), "firmware.version"),
        (_with("firmware.target", "/etc/passwd"), "firmware.target"),
        (_with("firmware.target", "a/../b"), "firmware.target"),
        (_with("firmware.target", "x" * 600), "firmware.target"),
        (_with("firmware.campaign", 0), "campaign"),
        (_with("firmware.campaign", "3"), "campaign"),
        (_with("firmware.campaign", True), "campaign"),
        (_with("apps", {"modbus-bridge": "1.3.0"}), "apps must be a list"),
        (_with("apps.0", "modbus-bridge"), r"apps\[0\] must be an object"),
        (_with("apps.0.name", "Bad Name"), r"apps\[0\].name"),
        (_with("apps.0.name", "current"), r"apps\[0\].name"),
        (_with("apps.0.version", ""), r"apps\[0\].version"),
        (_with("apps.0.target", 7), r"apps\[0\].target"),
        (_with("apps.0.config", [1, 2]), r"apps\[0\].config must be a JSON object"),
        (_with("apps.0.config", {"x": float("nan")}), "plain JSON"),
        (_with("apps.0.config", {"x": "y" * 70_000}), "larger than"),
        (_with("window", {"timezone": "Mars/Olympus", "slots": []}), "directive.window"),
        (_with("window", "always"), "directive.window: a maintenance window"),
        (_with("kept_apps", {"opcua": "why"}), "kept_apps must be a list"),
        (_with("kept_apps.0", "opcua"), r"kept_apps\[0\] must be an object"),
        (_with("kept_apps.0.name", "Bad Name"), r"kept_apps\[0\].name"),
        (_with("kept_apps.0.name", "modbus-bridge"), "named twice"),
        (_with("kept_apps.0.reason", None), r"kept_apps\[0\].reason"),
        (_with("kept_apps.0.reason", "x" * 301), r"kept_apps\[0\].reason"),
        (_with("kept_apps.0.reason", "line\nbreak"), r"kept_apps\[0\].reason"),
        ({**EXAMPLE, "apps": None}, "kept_apps needs managed apps"),
        (_with("command", 7), "command must be an object"),
        (_with("command", {"id": 7}), "command.action"),
        (_with("command.id", 0), "command.id"),
        (_with("command.id", "7"), "command.id"),
        (_with("command.id", True), "command.id"),
        (_with("command.action", ""), "command.action"),
        (_with("command.action", "roll back"), "command.action"),
        (_with("command.action", "x" * 17), "command.action"),
    ],
)
def test_malformed_directives_are_refused(doc: object, message: str) -> None:
    with pytest.raises(DirectiveInvalid, match=message):
        parse_directive(doc)


def test_an_app_named_twice_is_refused() -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["apps"].append(dict(doc["apps"][0], version="2.0"))
    with pytest.raises(DirectiveInvalid, match="named twice"):
        parse_directive(doc)


def test_too_many_apps_are_refused() -> None:
    app = EXAMPLE["apps"][0]
    doc = {**EXAMPLE, "apps": [dict(app, name=f"a{i}") for i in range(257)]}
    with pytest.raises(DirectiveInvalid, match="at most 256"):
        parse_directive(doc)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("30;jitter=5", (30, 5)), ("1800; jitter=180", (1800, 180)), ("60", (60, 0))],
)
def test_the_poll_header(header: str, expected: tuple[int, int]) -> None:
    assert parse_poll_header(header) == expected


@pytest.mark.parametrize("header", ["", "soon", "30;spread=5", "30;jitter=x", "30;jitter=31", "0"])
def test_a_malformed_poll_header_is_refused(header: str) -> None:
    with pytest.raises(DirectiveInvalid):
        parse_poll_header(header)

"""``garrison group …``, ``garrison desired …`` and ``garrison device tag|show``: groups,
tags and desired state over the admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from garrison.cli.admin_cmds import device_app
from garrison.cli.common import DataDir, ServerUrl, Token, add_row, api_call, console, fail
from garrison.errors import InvalidRequest

group_app = typer.Typer(
    help="Device groups: static members or a filter over inventory.", no_args_is_help=True
)
desired_app = typer.Typer(
    help="Desired state: the firmware and apps that must run, per group or device.",
    no_args_is_help=True,
)

Window = dict[str, Any]


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _window_text(window: Window | None) -> str:
    if window is None:
        return "always open"
    slots = "; ".join(
        f"{','.join(s['days'])} {s['start']} for {s['minutes']} min" for s in window["slots"]
    )
    return f"{slots} ({window['timezone']})"


def _print_group(group: dict[str, Any]) -> None:
    table = Table(show_header=False)
    add_row(table, "name", group["name"])
    add_row(table, "kind", group["kind"])
    if group["filter"] is not None:
        add_row(table, "filter", group["filter"])
    add_row(table, "priority", group["priority"])
    add_row(table, "window", _window_text(group["window"]))
    add_row(table, "members", group["members"])
    add_row(table, "created", f"{group['created_at'][:19]} by {group['created_by']}")
    console.print(table)


# -- groups ------------------------------------------------------------------------------


@group_app.command("create")
def group_create(
    name: str,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="Make a dynamic group of the devices this filter matches, e.g. "
            '\'model == "edge-gw-2" and tag == "line-3"\'',
        ),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher wins when groups disagree")] = 0,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Create a group: static (add members by serial) or, with --filter, dynamic."""
    body = {
        "name": name,
        "kind": "static" if filter_ is None else "dynamic",
        "filter": filter_,
        "priority": priority,
    }
    group = api_call(data_dir, server, token, "POST", "/groups", json=body)
    console.print(
        f"group [bold]{group['name']}[/] ({group['kind']}) created with "
        f"{group['members']} member(s)"
    )


@group_app.command("list")
def group_list(data_dir: DataDir = None, server: ServerUrl = None, token: Token = None) -> None:
    """List groups with their kind, priority, window and member count."""
    rows = api_call(data_dir, server, token, "GET", "/groups")
    table = Table("name", "kind", "priority", "members", "window", "filter")
    for g in rows:
        add_row(
            table,
            g["name"],
            g["kind"],
            g["priority"],
            g["members"],
            _window_text(g["window"]),
            g["filter"] or "",
        )
    console.print(table)


@group_app.command("show")
def group_show(
    name: str, data_dir: DataDir = None, server: ServerUrl = None, token: Token = None
) -> None:
    """Show a group: its settings, desired state and members."""
    group = api_call(data_dir, server, token, "GET", _path("groups", name))
    _print_group(group)
    if group["desired"] is not None:
        _print_desired(group["desired"])
    else:
        console.print("no desired state")
    if group["serials"]:
        console.print("members: " + ", ".join(group["serials"]), markup=False)


@group_app.command("delete")
def group_delete(
    name: str, data_dir: DataDir = None, server: ServerUrl = None, token: Token = None
) -> None:
    """Delete a group and its desired state (refused while a campaign targets it)."""
    api_call(data_dir, server, token, "DELETE", _path("groups", name), raw=True)
    console.print(f"group {name} deleted")


@group_app.command("add")
def group_add(
    name: str,
    serials: Annotated[list[str], typer.Argument(help="Device serials")],
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Add devices to a static group."""
    group = api_call(
        data_dir, server, token, "POST", _path("groups", name, "members"), json={"add": serials}
    )
    console.print(f"group {name} has {group['members']} member(s)")


@group_app.command("remove")
def group_remove(
    name: str,
    serials: Annotated[list[str], typer.Argument(help="Device serials")],
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Remove devices from a static group."""
    group = api_call(
        data_dir,
        server,
        token,
        "POST",
        _path("groups", name, "members"),
        json={"remove": serials},
    )
    console.print(f"group {name} has {group['members']} member(s)")


def _slot(text: str) -> dict[str, Any]:
    parts = text.split()
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
    if len(parts) != 3 or not (parts[2].isascii() and parts[2].isdigit()):
        raise fail(
            InvalidRequest(
                f"--slot {text!r} must be 'DAYS HH:MM MINUTES'",
                hint="e.g. --slot 'mon,tue,wed,thu,fri 02:00 120'",
            )
        )
    return {"days": parts[0].split(","), "start": parts[1], "minutes": int(parts[2])}


@group_app.command("set-window")
def group_set_window(
    name: str,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone of the slots, e.g. Europe/Berlin")
    ] = None,
    slot: Annotated[
        list[str] | None,
        typer.Option(help="'DAYS HH:MM MINUTES', e.g. 'sat,sun 02:00 240' (repeatable)"),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the window: always open")] = False,
    priority: Annotated[int | None, typer.Option(help="Also change the group's priority")] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Set a group's maintenance window: outside it, devices download but do not install."""
    if clear == bool(slot):
        raise fail(InvalidRequest("give --slot (with --timezone), or --clear"))
    window = None
    if slot:
        if timezone is None:
            raise fail(InvalidRequest("--timezone is required with --slot"))
        window = {"timezone": timezone, "slots": [_slot(s) for s in slot]}
    body: dict[str, Any] = {"window": window}
    if priority is not None:
        body["priority"] = priority
    group = api_call(data_dir, server, token, "PATCH", _path("groups", name), json=body)
    console.print(f"group {name}: window {_window_text(group['window'])}")


# -- desired state -----------------------------------------------------------------------

GroupOption = Annotated[str | None, typer.Option("--group", help="A group's desired state")]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="A device's own desired state (overrides groups)")
]


def _scope(group: str | None, device: str | None) -> str:
    if (group is None) == (device is None):
        raise fail(InvalidRequest("name exactly one of --group or --device"))
    return _path("desired", "groups", group) if group else _path("desired", "devices", device or "")


def _release(text: str, option: str) -> tuple[str, str]:
    name, sep, version = text.partition("=")
    if not sep or not name or not version:
        raise fail(InvalidRequest(f"{option} {text!r} must be NAME=VERSION, e.g. fw=2.1.0"))
    return name, version


def _print_desired(desired: dict[str, Any]) -> None:
    table = Table("part", "release", "configuration")
    firmware = desired["firmware"]
    add_row(
        table,
        "firmware",
        "(not set)" if firmware is None else f"{firmware['name']} {firmware['version']}",
        "",
    )
    if desired["apps"] is None:
        add_row(table, "apps", "(not managed)", "")
    for app in desired["apps"] or []:
        add_row(
            table,
            f"app {app['name']}",
            "absent" if app["absent"] else app["version"],
            "" if app["config"] is None else json.dumps(app["config"], sort_keys=True),
        )
    console.print(table)
    console.print(f"updated {desired['updated_at'][:19]} by {desired['updated_by']}", markup=False)


@desired_app.command("set")
def desired_set(
    group: GroupOption = None,
    device: DeviceOption = None,
    firmware: Annotated[
        str | None, typer.Option(help="Firmware release NAME=VERSION (an image release)")
    ] = None,
    app: Annotated[
        list[str] | None, typer.Option(help="App release NAME=VERSION (repeatable)")
    ] = None,
    absent: Annotated[
        list[str] | None, typer.Option(help="App NAME to remove where installed (repeatable)")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FILE: an app's configuration, a JSON object (repeatable)"),
    ] = None,
    no_apps: Annotated[
        bool, typer.Option("--no-apps", help="Manage apps: none must run (removes them all)")
    ] = False,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Replace the desired state of a group or device: firmware and/or apps."""
    path = _scope(group, device)
    configs: dict[str, Any] = {}
    for item in config or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise fail(InvalidRequest(f"--config {item!r} must be NAME=FILE"))
        try:
            configs[name] = json.loads(Path(file).read_text())
        except (OSError, ValueError) as exc:
            raise fail(InvalidRequest(f"--config {name}: cannot read {file}: {exc}")) from exc
    apps: list[dict[str, Any]] | None = None
    if app or absent or no_apps:
        apps = []
        for text in app or []:
            name, version = _release(text, "--app")
            apps.append({"name": name, "version": version, "config": configs.pop(name, None)})
        apps += [{"name": name, "absent": True} for name in absent or []]
    if configs:
        raise fail(InvalidRequest(f"--config {sorted(configs)[0]} names no --app"))
    body: dict[str, Any] = {"apps": apps, "firmware": None}
    if firmware is not None:
        name, version = _release(firmware, "--firmware")
        body["firmware"] = {"name": name, "version": version}
    desired = api_call(data_dir, server, token, "PUT", path, json=body)
    _print_desired(desired)


@desired_app.command("show")
def desired_show(
    group: GroupOption = None,
    device: DeviceOption = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Show the desired state of a group or device."""
    _print_desired(api_call(data_dir, server, token, "GET", _scope(group, device)))


@desired_app.command("clear")
def desired_clear(
    group: GroupOption = None,
    device: DeviceOption = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Remove the desired state of a group or device."""
    api_call(data_dir, server, token, "DELETE", _scope(group, device), raw=True)
    console.print("desired state cleared")


# -- devices -----------------------------------------------------------------------------


@device_app.command("tag")
def device_tag(
    serial: str,
    tags: Annotated[
        list[str] | None, typer.Argument(help="The device's tags (all of them)")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every tag")] = False,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Replace a device's tags (its dynamic groups follow at once)."""
    if clear == bool(tags):
        raise fail(InvalidRequest("name the tags, or --clear to remove them all"))
    body = api_call(
        data_dir, server, token, "PUT", _path("devices", serial, "tags"), json={"tags": tags or []}
    )
    console.print(f"{serial}: tags {', '.join(body['tags']) or '(none)'}", markup=False)


@device_app.command("show")
def device_show(
    serial: str,
    history: Annotated[int, typer.Option(help="How many history entries to show")] = 20,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Show a device: identity, inventory, tags, groups, desired state, directive, history."""
    page = api_call(data_dir, server, token, "GET", _path("devices", serial, "detail"))
    identity, inventory = page["identity"], page["inventory"] or {}
    boot = inventory.get("boot") or {}
    table = Table(show_header=False)
    add_row(table, "serial", identity["serial"])
    add_row(table, "model", identity["model"])
    add_row(
        table, "status", identity["status"] + (" (update hold)" if identity["update_hold"] else "")
    )
    add_row(table, "last seen", (identity["last_seen_at"] or "never")[:19])
    current = next((c for c in identity["certificates"] if c["current"]), None)
    if current is not None:
        add_row(table, "certificate", f"{current['serial']} until {current['not_after'][:19]}")
    add_row(table, "firmware", inventory.get("firmware") or "unknown")
    add_row(table, "boot", f"slot {boot.get('slot') or '?'} ({boot.get('state') or '?'})")
    apps = inventory.get("apps") or {}
    add_row(table, "apps", ", ".join(f"{n} {v}" for n, v in apps.items()) or "none")
    add_row(table, "agent", inventory.get("agent_version") or "unknown")
    add_row(table, "tags", ", ".join(page["tags"]) or "none")
    add_row(table, "groups", ", ".join(g["name"] for g in page["groups"]) or "none")
    desired = page["desired"]
    fw = desired["firmware"]
    add_row(
        table,
        "desired firmware",
        "(none)" if fw is None else f"{fw['name']} {fw['version']} (from {fw['from']})",
    )
    directive = page["directive"] or {}
    target = directive.get("firmware")
    add_row(
        table,
        "directive",
        "stay"
        if not target
        else f"{target['version']} ({target['target']})"
        + (f", campaign {target['campaign']}" if target.get("campaign") else ""),
    )
    console.print(table)
    entries = Table("at", "kind", "summary")
    for entry in page["history"][:history]:
        add_row(entries, entry["at"][:19], entry["kind"], entry["summary"])
    console.print(entries)

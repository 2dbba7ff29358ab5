"""``garrison campaign …``: rollout campaigns and the fleet update level, over the admin API."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from garrison.cli.common import (
    ApiClient,
    DataDir,
    ServerUrl,
    Token,
    add_row,
    api_call,
    console,
    failing,
)
from garrison.errors import InvalidRequest

campaign_app = typer.Typer(
    help="Rollout campaigns: canary, waves, pause, resume, abort; the fleet update level.",
    no_args_is_help=True,
)

FINISHED = ("succeeded", "failed", "rolled-back", "reverting", "reverted")
LEVEL_COLUMNS = ("on_target", "updating", "failed", "not_reached")

CampaignId = Annotated[int, typer.Argument(help="The campaign's number (garrison campaign list)")]


def _amount(text: str, option: str) -> int | str:
    """``3`` → 3, ``5%`` → "5%" (the server checks the range)."""
    text = text.strip()
    if text.endswith("%"):
        return text
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(
            f"{option} takes a number of devices or a percentage like 5%"
        ) from None


def _waves(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidRequest(
            "--waves takes cumulative percentages separated by commas, e.g. 25,50,100"
        ) from None


def _plan_text(plan: dict[str, Any]) -> str:
    waves = ", ".join(f"{w}%" for w in plan["waves"])
    soak = f", soak {plan['soak_minutes']} min" if plan["soak_minutes"] else ""
    return (
        f"canary {plan['canary']}, waves {waves}, {plan['max_per_minute']}/min, "
        f"{plan['failure_threshold']} failure(s) allowed per phase{soak}"
        + (", rollback on abort" if plan["rollback_on_abort"] else "")
    )


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no devices"


def _summary(campaign: dict[str, Any]) -> Table:
    table = Table(show_header=False, title=f"campaign {campaign['id']}: {campaign['name']}")
    release = campaign["release"]
    add_row(table, "group", campaign["group"])
    add_row(table, "release", f"{release['name']} {release['version']} ({release['target']})")
    state = campaign["state"] + (f" — {campaign['reason']}" if campaign["reason"] else "")
    add_row(table, "state", state)
    add_row(
        table,
        "phase",
        f"{campaign['phase_name']} ({campaign['phase'] + 1} of {campaign['phases']})",
    )
    add_row(table, "plan", _plan_text(campaign["plan"]))
    add_row(table, "devices", f"{campaign['members']} ({campaign['eligible']} to update)")
    add_row(table, "by state", _counts_text(campaign["counts"]))
    add_row(table, "created", f"{campaign['created_at'][:19]} by {campaign['created_by']}")
    return table


def _phases(campaign: dict[str, Any]) -> Progress:
    """One progress bar per phase: its finished devices of its size."""
    bars = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]:<8} {task.fields[states]}"),
        console=console,
    )
    for phase in campaign["phase_progress"]:
        done = sum(n for state, n in phase["states"].items() if state in FINISHED)
        bars.add_task(
            phase["name"],
            total=max(phase["size"], done),
            completed=done,
            status=phase["status"],
            states=_counts_text(phase["states"]) if phase["states"] else "",
        )
    return bars


def _devices(campaign: dict[str, Any]) -> Table:
    table = Table("serial", "model", "state", "phase", "from", "updated", "detail")
    for d in campaign["devices"]:
        add_row(
            table,
            d["serial"],
            d["model"],
            d["state"],
            d["phase_name"] or "",
            d["from_version"] or "",
            d["updated_at"][:19],
            d["detail"] or "",
        )
    if campaign["devices_total"] > len(campaign["devices"]):
        table.caption = f"{len(campaign['devices'])} of {campaign['devices_total']} devices"
    return table


@campaign_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the campaign")],
    group: Annotated[str, typer.Option(help="The group to roll out over")],
    release: Annotated[str, typer.Option(help="Name of a published firmware release")],
    version: Annotated[str, typer.Option(help="Its version")],
    canary: Annotated[str, typer.Option(help="Canary phase: a number of devices or 5%")] = "1",
    waves: Annotated[
        str, typer.Option(help="Cumulative percentages of the waves, ending at 100")
    ] = "100",
    rate: Annotated[int, typer.Option(help="At most this many devices start per minute")] = 60,
    threshold: Annotated[
        str, typer.Option(help="Failures a phase tolerates (a number or 10%); one more halts")
    ] = "0",
    soak: Annotated[int, typer.Option(help="Minutes to wait between phases")] = 0,
    rollback_on_abort: Annotated[
        bool, typer.Option(help="Abort sends updated devices back unless told otherwise")
    ] = False,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Start rolling a published firmware release out over a group: canary, then waves."""
    with failing():
        plan = {
            "canary": _amount(canary, "--canary"),
            "waves": _waves(waves),
            "max_per_minute": rate,
            "failure_threshold": _amount(threshold, "--threshold"),
            "soak_minutes": soak,
            "rollback_on_abort": rollback_on_abort,
        }
    body = {
        "name": name,
        "group": group,
        "release": {"name": release, "version": version},
        "plan": plan,
    }
    made = api_call(data_dir, server, token, "POST", "/campaigns", json=body)
    console.print(
        f"campaign [bold]{made['id']}[/] started: {made['eligible']} of {made['members']} "
        f"device(s) of {made['group']} to update to {made['release']['version']}",
        highlight=False,
    )


@campaign_app.command("list")
def list_campaigns(
    state: Annotated[str | None, typer.Option(help="Only campaigns in this state")] = None,
    group: Annotated[str | None, typer.Option(help="Only campaigns of this group")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1 to 1000)")] = 100,
    before: Annotated[
        int | None, typer.Option(help="Only campaigns with a smaller id (the next page)")
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """List campaigns, newest first (--state active: running, paused or halted)."""
    given = (("state", state), ("group", group), ("limit", limit), ("before", before))
    params = {k: v for k, v in given if v is not None}
    rows = api_call(data_dir, server, token, "GET", "/campaigns", params=params)
    table = Table("id", "name", "group", "release", "state", "phase", "devices")
    for c in rows:
        add_row(
            table,
            c["id"],
            c["name"],
            c["group"],
            f"{c['release']['name']} {c['release']['version']}",
            c["state"],
            c["phase_name"],
            _counts_text(c["counts"]),
        )
    console.print(table)


@campaign_app.command("show")
def show(
    campaign: CampaignId,
    state: Annotated[str | None, typer.Option(help="Only devices in this state")] = None,
    limit: Annotated[int, typer.Option(help="Devices to list")] = 50,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the progress until it stops running")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (--watch)")] = 2.0,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Show a campaign: its plan, a progress bar per phase and its devices."""
    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        params["state"] = state
    path = f"/campaigns/{campaign}"
    if not watch:
        found = api_call(data_dir, server, token, "GET", path, params=params)
        console.print(_summary(found))
        console.print(_phases(found))
        console.print(_devices(found))
        return
    with failing(), ApiClient(data_dir, server, token) as client:
        found = client.call("GET", path, params={"limit": 0})
        with Live(Group(_summary(found), _phases(found)), console=console) as live:
            try:
                while found["state"] == "running":
                    time.sleep(interval)
                    found = client.call("GET", path, params={"limit": 0})
                    live.update(Group(_summary(found), _phases(found)))
            except KeyboardInterrupt:
                pass
    console.print(f"campaign {campaign} is {found['state']}", highlight=False)


def _command(action: str, campaign: int, data_dir: Any, server: Any, token: Any, **kw: Any) -> Any:
    done = api_call(data_dir, server, token, "POST", f"/campaigns/{campaign}/{action}", **kw)
    reason = f" ({done['reason']})" if done.get("reason") else ""
    console.print(f"campaign {campaign} is {done['state']}{reason}", highlight=False)
    return done


@campaign_app.command("pause")
def pause(
    campaign: CampaignId, data_dir: DataDir = None, server: ServerUrl = None, token: Token = None
) -> None:
    """Pause: no device starts; devices already installing finish."""
    _command("pause", campaign, data_dir, server, token)


@campaign_app.command("resume")
def resume(
    campaign: CampaignId, data_dir: DataDir = None, server: ServerUrl = None, token: Token = None
) -> None:
    """Resume a paused or halted campaign (after a halt, failures count anew)."""
    _command("resume", campaign, data_dir, server, token)


@campaign_app.command("abort")
def abort(
    campaign: CampaignId,
    rollback: Annotated[
        bool | None,
        typer.Option(
            "--rollback/--no-rollback",
            help="Send devices this campaign updated back [default: the plan's choice]",
        ),
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Abort for good: no device starts; optionally send updated devices back."""
    done = _command("abort", campaign, data_dir, server, token, json={"rollback": rollback})
    if done["sent_back"]:
        console.print(
            f"sent back to their previous version: {', '.join(done['sent_back'])}",
            markup=False,
            highlight=False,
        )


@campaign_app.command("level")
def level(
    devices: Annotated[
        bool, typer.Option("--devices", help="List the serials in each category")
    ] = False,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """The fleet update level: per group, devices on target, updating, failed, not reached."""
    found = api_call(
        data_dir, server, token, "GET", "/fleet/level", params={"devices": str(devices).lower()}
    )
    table = Table("group", "target", "on target", "updating", "failed", "not reached", "members")
    for g in found["groups"]:
        add_row(
            table,
            g["group"],
            g["target"] or "(none)",
            *(g["counts"][c] for c in LEVEL_COLUMNS),
            g["members"],
        )
    total = found["total"]
    table.add_section()
    add_row(table, "total", "", *(total["counts"][c] for c in LEVEL_COLUMNS), total["members"])
    console.print(table)
    proven = all(
        g["proof"]["exactly_one_each"] and g["proof"]["classified"] == g["members"]
        for g in found["groups"]
    )
    console.print(
        Text(
            "every member is in exactly one category"
            if proven
            else "the server's proof does not add up",
            style="green" if proven else "bold red",
        )
    )
    if devices:
        for g in found["groups"]:
            for category in LEVEL_COLUMNS:
                if g["devices"][category]:
                    console.print(
                        f"{g['group']} {category}: {', '.join(g['devices'][category])}",
                        markup=False,
                        highlight=False,
                    )
    if not proven:
        raise typer.Exit(code=2)

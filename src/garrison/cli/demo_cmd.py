"""``garrison demo``: the whole system on this machine with a simulated fleet.

The tour: create a fleet, start the control plane, separate duties, enroll a few dozen
devices of two hardware models through EST (each a real agent with its own state directory
and simulated A/B device), show what an untrusted manufacturer cannot do, run the agents,
sign a release 2-of-3, give the controllers an app with per-device configuration, roll the
firmware out in a campaign (canary, then waves) during which one device fails its health
check and returns to its previous version by itself, show the fleet update level with its
proof, renew and revoke, verify the audit log, and leave the console open.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from garrison.agent.agent import Agent, ChannelError
from garrison.agent.est_client import EnrollmentFailed, tls_context
from garrison.agent.identity import AgentConfig, StateDir
from garrison.cli.common import ApiClient, add_row, console, failing, open_database
from garrison.cli.demo_farm import (
    DeviceFarm,
    ReleaseTeam,
    app_package,
    firmware_image,
    wait_until,
    write_token,
)
from garrison.clock import utc_now as now
from garrison.errors import GarrisonError

MARKER = ".garrison-demo"
MODELS = ("edge-gw-2", "press-ctl-5")
FIRMWARE = "plant-os"
APP = "opcua-bridge"
# The release's health check runs in each device's directory, where the demo puts the
# device's own service check; the device the demo marks with a FAULT file fails it, as a
# device whose fieldbus service does not come up after the update would.
HEALTH_CHECK = ["sh", "fieldbus-check"]
SERVICE_CHECK = "test ! -e FAULT || { echo 'fieldbus service did not start' >&2; exit 1; }\n"
TERMINAL = ("succeeded", "failed", "rolled-back", "reverted")
CATEGORIES = ("on_target", "updating", "failed", "not_reached")


def _fresh_dir(path: Path) -> None:
    if path.exists():
        if not (path / MARKER).exists():
            raise GarrisonError(
                f"{path} exists and was not made by 'garrison demo'", hint="pass another --data-dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).touch()


def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Where the demo fleet lives (recreated each run)")
    ] = Path(".garrison-demo"),
    devices: Annotated[
        int, typer.Option(min=4, max=300, help="Simulated devices (two hardware models)")
    ] = 36,
    port: Annotated[int, typer.Option(help="HTTPS port; 0 picks a free one")] = 8443,
    keep_running: Annotated[
        bool | None,
        typer.Option(
            "--keep-running/--no-keep-running",
            help="Keep the control plane and devices running for the console after the tour "
            "(default: when run in a terminal)",
        ),
    ] = None,
) -> None:
    """The whole system on this machine: a fleet, its control plane, a simulated fleet of
    real agents, a signed release rolled out in a campaign, and the web console."""
    from garrison.server.embedded import free_port

    stay = sys.stdout.isatty() if keep_running is None else keep_running
    with failing():
        _run(data_dir, devices, port or free_port(), stay)


def _run(data_dir: Path, count: int, port: int, keep_running: bool) -> None:
    # The server stack is imported here, not at module level: every other command and
    # '--help' would pay for it at startup.
    from securesystemslib.signer import CryptoSigner

    from garrison.identity.fleet import init_fleet, load_fleet
    from garrison.server.embedded import EmbeddedServer
    from garrison.server.run import Listen
    from garrison.settings import Settings
    from garrison.updates.device_state import fetch_initial_root, provision_updates
    from garrison.updates.offline import configure_release_managers

    started = time.monotonic()
    _fresh_dir(data_dir)
    fleet_dir = data_dir / "fleet"
    url = f"https://127.0.0.1:{port}"
    console.rule("[bold]1. Create the fleet")
    init_fleet(
        fleet_dir,
        Settings(organization="Demo Machines Ltd", public_url=url, listen=f"127.0.0.1:{port}"),
        now(),
    )
    fleet = load_fleet(fleet_dir)
    console.print(
        f"root CA, issuing CA, server certificate and TUF root in {fleet_dir / 'pki'}; "
        f"admin token in {fleet_dir / 'admin.token'}"
    )
    with open_database(fleet.database_url) as database:
        database.migrate()
        with (
            EmbeddedServer(fleet, database, Listen("127.0.0.1", port)) as server,
            contextlib.ExitStack() as stack,
        ):
            console.print(f"control plane on [bold]{server.url}[/] (SQLite: {fleet.database_url})")

            def client(token: str | None) -> ApiClient:
                return stack.enter_context(ApiClient(fleet_dir, url, token))

            admin = client(None)
            console.rule("[bold]2. Separate duties")
            tokens: dict[str, str] = {}
            for name, role in (
                ("sofia", "security-officer"),
                ("acme-ems", "manufacturer"),
                ("otto", "operator"),
                ("rm-anna", "release-manager"),
                ("rm-ben", "release-manager"),
                ("rm-chen", "release-manager"),
            ):
                made = admin.call("POST", "/principals", json={"name": name, "role": role})
                tokens[name] = made["token"]
            write_token(data_dir / "operator.token", tokens["otto"])
            officer, operator = client(tokens["sofia"]), client(tokens["otto"])
            signers = [CryptoSigner.generate_ecdsa() for _ in range(3)]
            configure_release_managers(fleet, database, [s.public_key for s in signers], 2, now())
            team = ReleaseTeam(
                [client(tokens[n]) for n in ("rm-anna", "rm-ben", "rm-chen")], signers, 2
            )
            console.print(
                "security officer sofia, manufacturer acme-ems, operator otto; release "
                "managers anna, ben and chen (any 2 of 3 sign a release)"
            )

            console.rule("[bold]3. The factory enrolls the devices over EST")
            plan = _device_plan(count)
            batches = {
                model: officer.call(
                    "POST",
                    "/batches",
                    json={
                        "name": f"PO-2026-{117 + i}",
                        "manufacturer": "acme-ems",
                        "model": model,
                        "serials": serials,
                        "valid_days": 14,
                    },
                )
                for i, (model, serials) in enumerate(plan.items())
            }
            root_pem = fleet.paths.root_ca.read_bytes()
            tuf_root = fetch_initial_root(url, fleet.paths.root_ca)
            agents: dict[str, Agent] = {}
            with Progress(console=console) as progress:
                task = progress.add_task("enrolling (key made on each device)", total=count)
                for model, batch in batches.items():
                    for entry in batch["tokens"]:
                        state = StateDir(data_dir / "devices" / entry["serial"])
                        config = AgentConfig(serial=entry["serial"], server_url=url, hardware=model)
                        agent = Agent(state)
                        agent.enroll(config, entry["token"], root_pem)
                        provision_updates(state, config, tuf_root)
                        (state.root / "device" / "fieldbus-check").write_text(SERVICE_CHECK)
                        agents[entry["serial"]] = agent
                        progress.advance(task)
            for model, serials in plan.items():
                console.print(f"{len(serials)} x {model}: {serials[0]} … {serials[-1]}")

            console.rule("[bold]4. What an untrusted manufacturer cannot do")
            _manufacturer_attempts(data_dir, url, root_pem, batches[MODELS[0]]["tokens"])

            console.rule("[bold]5. The devices run their agents")
            farm = DeviceFarm(agents)
            farm.start()
            stack.callback(farm.stop)
            wait_until(
                lambda: _reported(operator) >= count, 120, "every device to report its inventory"
            )
            console.print(
                f"{count} agents check in over mutual TLS with their inventory (firmware, boot "
                "slot, apps, uptime) and poll their directive; an idle poll is one request "
                "answered 304 Not Modified. (The demo runs each agent every second; in the "
                "field the control plane sets the interval, with jitter.)"
            )

            console.rule("[bold]6. A release, signed 2 of 3")
            firmware = team.publish(
                {
                    "name": FIRMWARE,
                    "version": "2.1.0",
                    "hardware": list(MODELS),
                    "security_version": 1,
                    "health_checks": [HEALTH_CHECK],
                },
                firmware_image(FIRMWARE, "2.1.0"),
            )
            app = team.publish(
                {
                    "name": APP,
                    "version": "1.4.0",
                    "hardware": [MODELS[1]],
                    "security_version": 0,
                    "install": "app",
                },
                app_package(APP, "1.4.0"),
            )
            console.print(
                f"{firmware['target_path']} and {app['target_path']} published: signed by "
                "rm-anna and rm-ben under TUF (one signature alone publishes nothing)"
            )

            console.rule("[bold]7. Groups, desired state and maintenance windows")
            _groups_and_desired_state(operator, plan)
            controllers = plan[MODELS[1]]
            wait_until(
                lambda: _apps_running(operator, controllers),
                120,
                f"the controllers to run {APP}",
            )
            special = controllers[min(3, len(controllers) - 1)]
            config_file = data_dir / "devices" / special / "device" / "apps" / APP / "config.json"
            console.print(
                f"every press-ctl-5 now runs {APP} 1.4.0; {special} with its own configuration "
                f"({config_file.relative_to(data_dir)}: {_read_json(config_file)})"
            )

            console.rule("[bold]8. A campaign: canary, then waves")
            faulty = plan[MODELS[0]][min(4, len(plan[MODELS[0]]) - 1)]
            (data_dir / "devices" / faulty / "device" / "FAULT").write_text("demo\n")
            campaign = operator.call(
                "POST",
                "/campaigns",
                json={
                    "name": "plant-os 2.1.0 rollout",
                    "group": "plant-berlin",
                    "release": {"name": FIRMWARE, "version": "2.1.0"},
                    "plan": {
                        "canary": 2,
                        "waves": [25, 60, 100],
                        "max_per_minute": 240,
                        "failure_threshold": 1,
                    },
                },
            )
            console.print(
                f"campaign {campaign['id']} over group plant-berlin ({campaign['members']} "
                "devices): canary 2 devices, waves to 25 %, 60 %, 100 %; at most 240 devices "
                "a minute; a phase halts the campaign at its second failure. "
                f"{faulty} is going to fail its health check."
            )
            final = _watch(operator, campaign["id"])
            console.print(
                f"campaign {final['state']}: {final['counts']}"
                + (f" — {final['reason']}" if final.get("reason") else "")
            )
            _show_failure(operator, faulty)

            console.rule("[bold]9. The fleet update level")
            _show_level(operator)

            console.rule("[bold]10. Renewal and revocation")
            serials = list(agents)
            renewed = agents[serials[0]].renew()
            console.print(
                f"{serials[0]} renewed with a new key: certificate "
                f"{renewed.certificate.serial_number:x}"
            )
            victim = serials[-1]
            agents_victim = farm.agents.pop(victim)
            farm.errors.pop(victim, None)
            officer.call("POST", f"/devices/{victim}/revoke", json={"reason": "key-compromise"})
            try:
                agents_victim.check_in()
                console.print(f"[red]{victim} still accepted after revocation[/]")
            except ChannelError as exc:
                console.print(f"{victim} revoked; its next request: [green]refused[/] — {exc}")
            crl = httpx.get(f"{url}/pki/crl", verify=tls_context(str(fleet.paths.root_ca))).content
            console.print(f"CRL at {url}/pki/crl ({len(crl)} bytes); OCSP at {url}/pki/ocsp")

            console.rule("[bold]11. The audit log")
            _show_audit(officer)
            if farm.errors:
                console.print(f"[yellow]agents reporting errors: {farm.errors}[/]")
            console.rule(f"[bold]Done in {time.monotonic() - started:.0f} s")
            console.print(f"fleet data: {fleet_dir}   devices: {data_dir / 'devices'}")
            if not keep_running:
                console.print(
                    "the control plane stops with the tour; run 'garrison demo --keep-running' "
                    "to keep it (and the devices) running and open the web console"
                )
                return
            console.print(
                f"web console: [bold]{url}/console/[/]  — sign in with the operator token in "
                f"{data_dir / 'operator.token'} (the browser will not know the fleet's own root "
                f"CA, {fleet.paths.root_ca}: import it or accept the warning)"
            )
            console.print(f"API docs:    {url}/api/v1/docs")
            console.print("control plane and devices keep running; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)


def _device_plan(count: int) -> dict[str, list[str]]:
    """Two thirds gateways, one third press controllers."""
    gateways = count - count // 3
    return {
        MODELS[0]: [f"GW-{1000 + i}" for i in range(gateways)],
        MODELS[1]: [f"PC-{2000 + i}" for i in range(count - gateways)],
    }


def _manufacturer_attempts(
    data_dir: Path, url: str, root_pem: bytes, tokens: list[dict[str, str]]
) -> None:
    first = tokens[0]
    attempts = [
        ("reuse a token", first["serial"], first["token"]),
        ("use a token for another serial", "GW-9999", tokens[1]["token"]),
        ("invent a token", tokens[1]["serial"], "gst_made-up"),
    ]
    for label, serial, token in attempts:
        probe = Agent(StateDir(data_dir / "attempts" / label.replace(" ", "-")))
        try:
            probe.enroll(AgentConfig(serial=serial, server_url=url), token, root_pem)
            console.print(f"[red]{label}: unexpectedly accepted[/]")
        except EnrollmentFailed as exc:
            console.print(f"{label}: [green]refused[/] — {str(exc).splitlines()[0]}")


def _groups_and_desired_state(operator: ApiClient, plan: dict[str, list[str]]) -> None:
    gateways, controllers = plan[MODELS[0]], plan[MODELS[1]]
    operator.call(
        "POST",
        "/groups",
        json={
            "name": "plant-berlin",
            "kind": "dynamic",
            "filter": f'model in ["{MODELS[0]}", "{MODELS[1]}"]',
        },
    )
    local = dt.datetime.now(dt.UTC).astimezone(_berlin())
    window = {
        "timezone": "Europe/Berlin",
        "slots": [
            {
                "days": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]],
                "start": f"{max(local.hour - 1, 0):02d}:00",
                "minutes": 180,
            }
        ],
    }
    operator.call(
        "POST",
        "/groups",
        json={
            "name": "press-controllers",
            "kind": "dynamic",
            "filter": f'model == "{MODELS[1]}"',
            "priority": 10,
            "window": window,
        },
    )
    operator.call("POST", "/groups", json={"name": "pilot-line", "kind": "static", "priority": 20})
    operator.call("POST", "/groups/pilot-line/members", json={"add": gateways[:2]})
    config = {"endpoint": "opc.tcp://0.0.0.0:4840", "publish_ms": 500}
    operator.call(
        "PUT",
        "/desired/groups/press-controllers",
        json={"apps": [{"name": APP, "version": "1.4.0", "config": config}]},
    )
    special = controllers[min(3, len(controllers) - 1)]
    operator.call(
        "PUT",
        f"/desired/devices/{special}",
        json={"apps": [{"name": APP, "version": "1.4.0", "config": {**config, "publish_ms": 100}}]},
    )
    table = Table("group", "kind", "members by", "priority", "maintenance window")
    slot = window["slots"][0]
    assert isinstance(slot, dict)
    for name, kind, rule, priority, win in (
        ("plant-berlin", "dynamic", "model in [both models]", 0, "always"),
        (
            "press-controllers",
            "dynamic",
            f"model == {MODELS[1]}",
            10,
            f"{slot['days'][0]} {slot['start']} for 3 h, Europe/Berlin",
        ),
        ("pilot-line", "static", ", ".join(gateways[:2]), 20, "always"),
    ):
        add_row(table, name, kind, rule, priority, win)
    console.print(table)
    console.print(
        f"desired state: press-controllers run {APP} 1.4.0 (publish every 500 ms); "
        f"device {special} overrides it (every 100 ms). Overlapping groups: the device's own "
        "entry first, then groups by priority (highest first), then by name. The "
        "controllers' window is the customer's: the demo picks one open now so the tour goes "
        "on; outside it a device downloads but does not install ('garrison agent status' "
        "shows when it opens)."
    )


def _berlin() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Berlin")


def _reported(operator: ApiClient) -> int:
    listing = operator.call("GET", "/fleet/devices", params={"limit": 1000})
    return sum(1 for d in listing["devices"] if d.get("reported_at"))


def _apps_running(operator: ApiClient, serials: list[str]) -> bool:
    listing = operator.call("GET", "/fleet/devices", params={"limit": 1000})
    running = {d["serial"] for d in listing["devices"] if d["apps"].get(APP) == "1.4.0"}
    return set(serials) <= running


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return "(missing)"


def _watch(operator: ApiClient, campaign_id: int, timeout: float = 300) -> dict[str, Any]:
    """Show each phase filling up until the campaign completes, halts or is aborted."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn())
    seen: set[str] = set()
    with Progress(*columns, TextColumn("{task.fields[note]}"), console=console) as progress:
        tasks: dict[int, Any] = {}
        while True:
            detail = operator.call("GET", f"/campaigns/{campaign_id}", params={"limit": 1000})
            for phase in detail["phase_progress"]:
                done = sum(phase["states"].get(s, 0) for s in TERMINAL)
                failed = phase["states"].get("rolled-back", 0) + phase["states"].get("failed", 0)
                note = f"{failed} rolled back" if failed else phase["status"]
                if phase["index"] not in tasks:
                    tasks[phase["index"]] = progress.add_task(
                        phase["name"], total=max(phase["size"], 1), note=note
                    )
                progress.update(tasks[phase["index"]], completed=done, note=note)
            for device in detail["devices"]:
                if device["state"] in ("rolled-back", "failed") and device["serial"] not in seen:
                    seen.add(device["serial"])
                    progress.console.print(
                        f"[yellow]{device['serial']} {device['state']}[/]: {device['detail']}"
                    )
            if detail["state"] in ("completed", "halted", "aborted"):
                return dict(detail)
            if time.monotonic() > deadline:
                raise GarrisonError(f"campaign {campaign_id} still {detail['state']} after 5 min")
            time.sleep(0.5)


def _show_failure(operator: ApiClient, serial: str) -> None:
    detail = operator.call("GET", f"/devices/{serial}/detail")
    inventory = detail.get("inventory") or {}
    last = inventory.get("last_update") or {}
    console.print(
        f"{serial} is back on its previous firmware ({inventory.get('firmware')}) in slot "
        f"{(inventory.get('boot') or {}).get('slot')}, by itself: {last.get('event') or last}"
    )


def _show_level(operator: ApiClient) -> None:
    """The level per group, and its proof checked here, not taken on trust: the member
    list from the group API, each member in exactly one category, the counts the lengths,
    the digest recomputed."""
    level = operator.call("GET", "/fleet/level", params={"devices": "true"})
    table = Table("group", "target", "on target", "updating", "failed", "not reached", "proof")
    untargeted = [g["group"] for g in level["groups"] if g["target"] is None]
    for group in level["groups"]:
        if group["target"] is None:
            continue
        members = operator.call("GET", f"/groups/{group['group']}")["serials"]
        add_row(
            table,
            group["group"],
            group["target"],
            *(group["counts"].get(c, 0) for c in CATEGORIES),
            _check_proof(group, members),
        )
    console.print(table)
    if untargeted:
        console.print(
            f"no firmware target of their own (no campaign, no desired firmware): "
            f"{', '.join(untargeted)}"
        )
    console.print(
        "every member is in exactly one state (checked here against the group's member list "
        "and the digest); A/B slots mean no device runs half an update"
    )


def _check_proof(group: dict[str, Any], members: list[str]) -> str:
    listed = [(s, c) for c in CATEGORIES for s in group["devices"].get(c, [])]
    serials = [s for s, _ in listed]
    lines = sorted(f"{serial} {category}\n" for serial, category in listed)
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    if (
        sorted(serials) != sorted(members)
        or len(set(serials)) != len(serials)
        or any(group["counts"].get(c, 0) != len(group["devices"].get(c, [])) for c in CATEGORIES)
        or digest != group["proof"]["digest"]
    ):
        return f"BROKEN: {len(serials)} listed for {len(members)} members"
    return f"{len(members)} of {len(members)}, each once, digest {digest[:8]}"


def _show_audit(officer: ApiClient) -> None:
    head = officer.call("GET", "/audit/verify")
    table = Table("action", "outcome", "count")
    counts: dict[tuple[str, str], int] = {}
    after = 0
    while entries := officer.call("GET", "/audit", params={"after": after, "limit": 1000}):
        for entry in entries:
            key = (entry["action"], entry["outcome"])
            counts[key] = counts.get(key, 0) + 1
        after = entries[-1]["seq"]
    for (action, outcome), n in sorted(counts.items()):
        add_row(table, action, outcome, n)
    console.print(table)
    console.print(f"hash chain intact: {head['seq']} entries, head {head['entry_hash'][:16]}…")

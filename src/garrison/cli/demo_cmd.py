"""``garrison demo``: the whole system on this machine with a simulated fleet."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import Progress
from rich.table import Table

from garrison.agent.agent import Agent, ChannelError
from garrison.agent.est_client import EnrollmentFailed, tls_context
from garrison.agent.identity import AgentConfig, StateDir
from garrison.cli.common import ApiClient, add_row, console, failing, open_database
from garrison.clock import utc_now as now
from garrison.errors import GarrisonError

MARKER = ".garrison-demo"


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
    devices: Annotated[int, typer.Option(min=1, max=500, help="Number of simulated devices")] = 12,
    port: Annotated[int, typer.Option(help="HTTPS port; 0 picks a free one")] = 8443,
    keep_running: Annotated[
        bool, typer.Option(help="Keep the control plane running after the tour")
    ] = False,
) -> None:
    """Create a fleet, start the control plane, enroll simulated devices through EST, have
    them check in over mutual TLS, renew one, revoke one, and verify the audit log."""
    from garrison.server.embedded import free_port

    with failing():
        _run(data_dir, devices, port or free_port(), keep_running)


def _run(data_dir: Path, count: int, port: int, keep_running: bool) -> None:
    # The server stack is imported here, not at module level: every other command and
    # '--help' would pay for it at startup.
    from garrison.identity.fleet import init_fleet, load_fleet
    from garrison.server.embedded import EmbeddedServer
    from garrison.server.run import Listen
    from garrison.settings import Settings

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
        f"root CA, issuing CA and server certificate in {fleet_dir / 'pki'}; "
        f"admin token in {fleet_dir / 'admin.token'}"
    )
    with open_database(fleet.database_url) as database:
        database.migrate()
        with (
            EmbeddedServer(fleet, database, Listen("127.0.0.1", port)) as server,
            contextlib.ExitStack() as clients,
        ):
            console.print(
                f"control plane listening on [bold]{server.url}[/] (SQLite: {fleet.database_url})"
            )
            admin = clients.enter_context(ApiClient(fleet_dir, url, None))
            console.rule("[bold]2. Separate duties: a security officer and a contract manufacturer")
            officer_token = admin.call(
                "POST", "/principals", json={"name": "sofia", "role": "security-officer"}
            )["token"]
            admin.call("POST", "/principals", json={"name": "acme-ems", "role": "manufacturer"})
            officer = clients.enter_context(ApiClient(fleet_dir, url, officer_token))
            serials = [f"DM-{1000 + i}" for i in range(count)]
            batch = officer.call(
                "POST",
                "/batches",
                json={
                    "name": "PO-2026-117",
                    "manufacturer": "acme-ems",
                    "model": "edge-gw-2",
                    "serials": serials,
                    "valid_days": 14,
                },
            )
            console.print(
                f"batch {batch['id']} authorizes {count} serials for manufacturer acme-ems; "
                "one single-use token each"
            )

            console.rule(
                "[bold]3. The factory enrolls the devices over EST (keys generated on each device)"
            )
            root_pem = fleet.paths.root_ca.read_bytes()
            agents: dict[str, Agent] = {}
            with Progress(console=console) as progress:
                task = progress.add_task("enrolling", total=count)
                for entry in batch["tokens"]:
                    agent = Agent(StateDir(data_dir / "devices" / entry["serial"]))
                    agent.enroll(
                        AgentConfig(serial=entry["serial"], server_url=url),
                        entry["token"],
                        root_pem,
                    )
                    agents[entry["serial"]] = agent
                    progress.advance(task)
            for agent in agents.values():
                agent.check_in()
            console.print(f"{count} devices enrolled and checked in over mutual TLS")

            console.rule("[bold]4. What an untrusted manufacturer cannot do")
            first = batch["tokens"][0]
            attempts = [
                ("reuse a token", first["serial"], first["token"]),
                ("use a token for another serial", "DM-9999", batch["tokens"][1]["token"]),
                ("invent a token", "DM-1001", "gst_made-up"),
            ]
            for label, serial, token in attempts:
                probe = Agent(StateDir(data_dir / "attempts" / label.replace(" ", "-")))
                try:
                    probe.enroll(AgentConfig(serial=serial, server_url=url), token, root_pem)
                    console.print(f"[red]{label}: unexpectedly accepted[/]")
                except EnrollmentFailed as exc:
                    console.print(f"{label}: [green]refused[/] — {str(exc).splitlines()[0]}")

            console.rule("[bold]5. Renewal and revocation")
            renewing = agents[serials[0]]
            renewed = renewing.renew()
            console.print(
                f"{serials[0]} renewed with a new key: "
                f"certificate {renewed.certificate.serial_number:x}"
            )
            victim = serials[-1]
            officer.call("POST", f"/devices/{victim}/revoke", json={"reason": "key-compromise"})
            try:
                agents[victim].check_in()
                console.print(f"[red]{victim} still accepted after revocation[/]")
            except ChannelError as exc:
                console.print(f"{victim} revoked; its next request: [green]refused[/] — {exc}")
            crl = httpx.get(f"{url}/pki/crl", verify=tls_context(str(fleet.paths.root_ca))).content
            console.print(f"CRL at {url}/pki/crl ({len(crl)} bytes); OCSP at {url}/pki/ocsp")

            console.rule("[bold]6. The audit log")
            head = officer.call("GET", "/audit/verify")
            entries = officer.call("GET", "/audit", params={"limit": 1000})
            table = Table("action", "outcome", "count")
            counts: dict[tuple[str, str], int] = {}
            for entry in entries:
                key = (entry["action"], entry["outcome"])
                counts[key] = counts.get(key, 0) + 1
            for (action, outcome), n in sorted(counts.items()):
                add_row(table, action, outcome, n)
            console.print(table)
            console.print(
                f"hash chain intact: {head['seq']} entries, head {head['entry_hash'][:16]}…"
            )
            console.rule("[bold]Done")
            console.print(f"fleet data: {fleet_dir}   devices: {data_dir / 'devices'}")
            console.print(
                f"API docs:   {url}/api/v1/docs   (admin token in {fleet_dir / 'admin.token'})"
            )
            if keep_running:
                console.print("control plane keeps running; Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)

"""``garrison agent``: the device side."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from garrison.agent.agent import Agent
from garrison.agent.identity import AgentConfig, StateDir
from garrison.cli.common import console, fail
from garrison.errors import GarrisonError

agent_app = typer.Typer(
    help="The device agent: enrollment, check-in, renewal.", no_args_is_help=True
)

State = Annotated[
    Path, typer.Option("--state", help="Agent state directory", envvar="GARRISON_AGENT_STATE")
]


@agent_app.command("enroll")
def enroll(
    state: State,
    server: Annotated[str, typer.Option(help="Control plane URL, e.g. https://fleet.example:8443")],
    serial: Annotated[str, typer.Option(help="This device's serial number")],
    token: Annotated[
        str,
        typer.Option(help="Single-use factory enrollment token", envvar="GARRISON_ENROLL_TOKEN"),
    ],
    fleet_root: Annotated[
        Path, typer.Option(help="The fleet's root CA certificate (PEM), given at provisioning")
    ],
    key_store: Annotated[
        str, typer.Option(help="'file' (encrypted) or 'pkcs11:token=LABEL;object=NAME'")
    ] = "file",
    pkcs11_module: Annotated[str, typer.Option(help="PKCS#11 module for a pkcs11: key store")] = "",
) -> None:
    """Generate this device's key, enroll over EST with the factory token, store the identity."""
    config = AgentConfig(
        serial=serial,
        server_url=server.rstrip("/"),
        key_store=key_store,
        pkcs11_module=pkcs11_module,
    )
    try:
        identity = Agent(StateDir(state)).enroll(config, token, fleet_root.read_bytes())
    except (GarrisonError, OSError) as exc:
        raise fail(exc if isinstance(exc, GarrisonError) else GarrisonError(str(exc))) from exc
    cert = identity.certificate
    console.print(
        f"[green]enrolled[/] {serial}: certificate {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


@agent_app.command("run")
def run(
    state: State,
    once: Annotated[
        bool, typer.Option(help="One cycle (renew if due, check in), then exit")
    ] = False,
) -> None:
    """Run the agent: check in over mTLS at the server's poll interval, renew when due."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    agent = Agent(StateDir(state))
    if once:
        try:
            if agent.renewal_due():
                agent.renew()
            result = agent.check_in()
        except GarrisonError as exc:
            raise fail(exc) from exc
        console.print(f"checked in as {result.serial} with certificate {result.certificate}")
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop)


@agent_app.command("renew")
def renew(state: State) -> None:
    """Re-enroll now with a new key (normally automatic)."""
    try:
        identity = Agent(StateDir(state)).renew()
    except GarrisonError as exc:
        raise fail(exc) from exc
    console.print(
        f"[green]renewed[/]: certificate {identity.certificate.serial_number:x} "
        f"(generation {identity.generation})"
    )


@agent_app.command("status")
def status(state: State) -> None:
    """Show this device's identity."""
    sd = StateDir(state)
    try:
        config = sd.load_config()
        identity = sd.current()
    except GarrisonError as exc:
        raise fail(exc) from exc
    console.print(f"serial      {config.serial}\nserver      {config.server_url}")
    if identity is None:
        console.print("identity    none (not enrolled)")
        return
    cert = identity.certificate
    console.print(f"certificate {cert.serial_number:x} (generation {identity.generation})")
    console.print(
        f"valid       {cert.not_valid_before_utc:%Y-%m-%d %H:%M} .. "
        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )
    console.print(f"key         {identity.key_ref}")

"""``garrison agent``: the device side (identity, check-in, signed updates)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID

from garrison.agent.agent import Agent, CycleResult
from garrison.agent.converge import Hold, WaitForWindow, describe
from garrison.agent.identity import AgentConfig, StateDir
from garrison.cli.common import console, failing, transfer_progress
from garrison.errors import GarrisonError
from garrison.fleet.windows import DAYS, Window
from garrison.updates.client import (
    InstallResult,
    UpdateClient,
    rollback_device,
    run_operator_command,
)
from garrison.updates.device_state import (
    UpdateState,
    check_tuf_root,
    fetch_initial_root,
    provision_updates,
)
from garrison.updates.fetchers import device_channel

agent_app = typer.Typer(
    help="The device agent: enrollment, check-in, renewal, convergence, signed updates.",
    no_args_is_help=True,
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
    tuf_root: Annotated[
        Path | None,
        typer.Option(
            help="The fleet's TUF root (pki/tuf-root.json), given at provisioning "
            "[default: fetched once now, over TLS pinned to --fleet-root]"
        ),
    ] = None,
    hardware: Annotated[
        str, typer.Option(help="This device's hardware model (releases must name it)")
    ] = "",
    device_dir: Annotated[
        Path | None, typer.Option(help="The simulated A/B device [default: STATE/device]")
    ] = None,
) -> None:
    """Generate this device's key, enroll over EST with the factory token, store the identity
    and the fleet's TUF root (the trust anchor of every update)."""
    config = AgentConfig(
        serial=serial,
        server_url=server.rstrip("/"),
        key_store=key_store,
        pkcs11_module=pkcs11_module,
        hardware=hardware,
        device_dir=str(device_dir.resolve()) if device_dir is not None else "",
    )
    with failing():
        if tuf_root is not None:
            root_bytes = tuf_root.read_bytes()
            check_tuf_root(root_bytes)
        else:
            root_bytes = fetch_initial_root(config.server_url, fleet_root)
        sd = StateDir(state)
        identity = Agent(sd).enroll(config, token, fleet_root.read_bytes())
        updates = provision_updates(sd, config, root_bytes)
    cert = identity.certificate
    console.print(
        f"[green]enrolled[/] {serial}: certificate {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
        f"device {updates.device_dir}"
    )


@agent_app.command("run")
def run(
    state: State,
    once: Annotated[
        bool,
        typer.Option(
            help="One cycle (renew if due, check in, converge to the directive), then exit"
        ),
    ] = False,
) -> None:
    """Run the agent: renew when due, check in over mTLS when the inventory changed, poll the
    directive and converge to it (firmware and apps, in the maintenance window), carry out
    operator commands; then wait the server's poll interval (with jitter)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    agent = Agent(StateDir(state))
    if once:
        with failing():
            result = agent.cycle()
        _print_cycle(result)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop)


@agent_app.command("renew")
def renew(state: State) -> None:
    """Re-enroll now with a new key (normally automatic)."""
    with failing():
        identity = Agent(StateDir(state)).renew()
    console.print(
        f"[green]renewed[/]: certificate {identity.certificate.serial_number:x} "
        f"(generation {identity.generation})"
    )


def _print_cycle(result: CycleResult) -> None:
    if result.check_in is not None:
        console.print(
            f"checked in as {result.serial} with certificate {result.check_in.certificate}"
        )
    else:
        console.print(f"{result.serial}: inventory unchanged, no check-in needed")
    status = {200: "new", 304: "unchanged (304)", 204: "none", 404: "none"}
    seen = (
        "current (named by the check-in)"
        if result.directive_status is None
        else (status.get(result.directive_status, str(result.directive_status)))
    )
    console.print(f"directive   {seen}{_etag(result.directive.etag)}")
    for line in result.did or ["nothing to do"]:
        console.print(f"did         {line}")
    if result.plan is not None:
        for step in result.plan.steps:
            if isinstance(step, Hold | WaitForWindow):
                console.print(f"pending     {describe(step)}")
    console.print(f"next poll   in {result.poll_seconds} s (± {result.jitter_seconds} s)")


def _etag(etag: str) -> str:
    return f" (etag {etag[:12]})" if etag else ""


def _print_fleet(agent: Agent) -> None:
    directive, planned, record = agent.local_plan()
    if directive is None:
        console.print("directive   none received yet")
    else:
        firmware = directive.firmware
        console.print(
            f"directive   {directive.etag[:12]}: firmware "
            + ("(stay)" if firmware is None else firmware.version)
            + (
                ""
                if firmware is None or firmware.campaign is None
                else f" (campaign {firmware.campaign})"
            )
            + ", apps "
            + (
                "not managed"
                if directive.apps is None
                else ", ".join(f"{a.name} {a.version}" for a in directive.apps) or "none"
            )
        )
        window = directive.window
        console.print(
            "window      " + ("always open" if window is None else f"{_window_text(window)}")
        )
        console.print(
            f"poll        every {directive.poll_seconds} s ± {directive.jitter_seconds} s"
        )
    if planned is not None:
        for line in planned.describe():
            console.print(f"plan        {line}")
    last = record.last_update
    if last:
        console.print(
            f"last update {last.get('outcome')} {last.get('target')} at {last.get('at')}: "
            f"{last.get('event')}"
        )
    cycle = record.last_cycle
    if cycle:
        at = str(cycle.get("at", ""))
        with contextlib.suppress(ValueError):
            at = f"{dt.datetime.fromisoformat(at).astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
        console.print(f"last cycle  {at}")
        for line in cycle.get("did", []) or ["nothing to do"]:
            console.print(f"  did       {line}")
        if cycle.get("error"):
            console.print(f"  [yellow]stopped[/]   {cycle['error']}")
    if record.outbox:
        console.print(f"reports     {len(record.outbox)} waiting to be sent")


def _window_text(window: Window) -> str:
    slots = "; ".join(
        f"{','.join(DAYS[d] for d in sorted(slot.days))} {slot.start:%H:%M} for {slot.minutes} min"
        for slot in window.slots
    )
    return f"{slots} ({window.timezone})"


@agent_app.command("status")
def status(state: State) -> None:
    """Show this device's identity, its A/B slots (versions, states, security floor), the
    directive it follows and what it would do now (its plan)."""
    sd = StateDir(state)
    with failing():
        config = sd.load_config()
        identity = sd.current()
    console.print(f"serial      {config.serial}\nserver      {config.server_url}")
    if identity is None:
        console.print("identity    none (not enrolled)")
    else:
        cert = identity.certificate
        console.print(f"certificate {cert.serial_number:x} (generation {identity.generation})")
        console.print(
            f"valid       {cert.not_valid_before_utc:%Y-%m-%d %H:%M} .. "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
        console.print(f"key         {identity.key_ref}")
    _print_device(sd, config)
    with failing():
        _print_fleet(Agent(sd))


def _print_device(sd: StateDir, config: AgentConfig) -> None:
    updates = UpdateState.of(sd, config)
    console.print(f"hardware    {config.hardware or '(not set)'}")
    try:
        env = updates.device().load_env()
    except GarrisonError:
        console.print(f"device      none at {updates.device_dir}")
        return
    console.print(f"device      {updates.device_dir}")
    for slot, info in sorted(env.slots.items()):
        if info is None:
            line = "empty"
        else:
            line = f"{info.version} (security {info.security_version}, {info.state})"
        marks = [m for m, s in (("active", env.active), ("on trial", env.trying)) if s == slot]
        console.print(f"slot {slot}      {line}{' — ' + ', '.join(marks) if marks else ''}")
    console.print(f"floor       security version {env.security_floor}")
    console.print(f"last event  {env.last_event}")


class _DownloadBar:
    """A Rich progress bar fed by the update client's (done, total) callback; shown only
    once a download starts."""

    def __init__(self) -> None:
        self.progress = transfer_progress()
        self.task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("download", total=total)
        self.progress.update(self.task, completed=done)

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()


def _report(result: InstallResult | None) -> None:
    if result is None:
        console.print("no release for this device")
        return
    if result.outcome == "current":
        console.print(f"up to date: {result.version} already runs")
    elif result.outcome == "committed":
        console.print(f"[green]updated[/]: {result.version} runs and is committed")
    else:
        console.print(
            f"[yellow]{result.outcome}[/]: {result.version} runs; {result.event}"
            + (f" (health: {result.health})" if result.health else "")
        )


@agent_app.command("update")
def update(
    state: State,
    target: Annotated[
        str | None,
        typer.Option(help="TUF target path [default: the release the control plane offers]"),
    ] = None,
) -> None:
    """Verify (TUF, mTLS), download (resumable) and install a release; the device boots it,
    runs its health checks, and commits or returns to the previous version by itself."""
    sd = StateDir(state)
    with failing():
        if target is None:  # an operator's command (a rollback) comes before any update
            config = sd.load_config()
            with device_channel(sd, config) as http:
                done = run_operator_command(http, UpdateState.of(sd, config))
            if done is not None:
                console.print(f"operator rollback: {done.outcome}, {done.version} runs")
                return
        with UpdateClient.for_agent(sd) as client, _DownloadBar() as bar:
            result = client.update(target, progress=bar)
    _report(result)


@agent_app.command("install")
def install(
    state: State,
    bundle: Annotated[Path, typer.Argument(help="An update bundle ('garrison release export')")],
) -> None:
    """Install an offline bundle, verified against this device's own TUF trust: no network."""
    with (
        failing(),
        UpdateClient.for_bundle(StateDir(state), bundle) as client,
        _DownloadBar() as bar,
    ):
        result = client.update(progress=bar)
    _report(result)


@agent_app.command("rollback")
def rollback(state: State) -> None:
    """Return to the previous good version (local operator fallback, no network); refused
    below the anti-rollback floor."""
    sd = StateDir(state)
    with failing():
        result = rollback_device(UpdateState.of(sd, sd.load_config()))
    if result.outcome == "committed":
        console.print(f"[green]rolled back[/]: {result.version} runs and is committed")
    else:
        _report(result)

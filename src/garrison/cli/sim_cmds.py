"""``garrison simulate``: a fleet of simulated devices against a running control plane."""

from __future__ import annotations

import asyncio
import csv
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from garrison.cli.common import DataDir, ServerUrl, console, failing, resolve_data_dir
from garrison.errors import ConfigError

if TYPE_CHECKING:
    from garrison.sim.device import Behaviour
    from garrison.sim.fleet import Simulator


def _tokens(path: Path) -> list[tuple[str, str]]:
    """``(serial, token)`` rows of a ``garrison batch create --tokens-out`` CSV file."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or [c.strip() for c in rows[0]] != ["serial", "token"]:
        raise ConfigError(
            f"{path} is not a tokens file (first line must be 'serial,token')",
            hint="write one with 'garrison batch create --serials-file ... --tokens-out FILE'",
        )
    tokens = [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2 and r[1].strip()]
    if not tokens:
        raise ConfigError(f"{path} holds no tokens")
    if any(not serial for serial, _ in tokens):
        raise ConfigError(
            f"{path} has tokens without a serial (a quota batch)",
            hint="simulated devices need their serials: create the batch with --serials-file",
        )
    return tokens


def simulate(
    tokens_csv: Annotated[
        Path, typer.Option("--tokens", help="CSV of serial,token ('garrison batch create')")
    ],
    model: Annotated[str, typer.Option(help="Hardware model the devices report")],
    firmware: Annotated[str, typer.Option(help="Firmware version they start with")] = "1.0.0",
    install_seconds: Annotated[
        float, typer.Option(help="How long a simulated install takes")
    ] = 2.0,
    fail: Annotated[
        list[str] | None,
        typer.Option("--fail", help="A serial whose installs fail their health check (repeat)"),
    ] = None,
    failure_rate: Annotated[
        float, typer.Option(help="Share of installs failing their health check (0..1)")
    ] = 0.0,
    poll_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Poll this often (seconds) instead of the control plane's interval"
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds [default: Ctrl-C]")
    ] = None,
    status_every: Annotated[
        float, typer.Option(min=0.1, help="Seconds between status lines")
    ] = 5.0,
    root_ca: Annotated[
        Path | None, typer.Option(help="Fleet root CA [default: DATA_DIR/pki/root-ca.pem]")
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the devices' keys here [default: a temporary directory]"),
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
) -> None:
    """Run simulated devices: each enrolls over EST with its factory token and its own key,
    then cycles like the agent (check-in with inventory, directive polls, simulated A/B
    installs, progress reports) over its own mutual-TLS connection."""
    from garrison.settings import read_settings
    from garrison.sim.device import Behaviour

    with failing():
        if not 0 <= failure_rate <= 1:
            raise ConfigError("--failure-rate must be between 0 and 1")
        tokens = _tokens(tokens_csv)
        if root_ca is None or server is None:
            root = resolve_data_dir(data_dir)
            root_ca = root_ca or root / "pki" / "root-ca.pem"
            server = server or read_settings(root).public_url
        url = urlsplit(server)
        if url.scheme != "https" or not url.hostname:
            raise ConfigError(f"--server must be an https:// URL, not {server!r}")
        behaviour = Behaviour(
            install_seconds=install_seconds,
            failing=frozenset(fail or ()),
            failure_rate=failure_rate,
            poll_seconds=poll_seconds,
            jitter_seconds=None if poll_seconds is None else poll_seconds / 10,
        )
        with tempfile.TemporaryDirectory(prefix="garrison-sim-") as scratch:
            directory = work_dir or Path(scratch)
            asyncio.run(
                _run(
                    url.hostname,
                    url.port or 443,
                    root_ca,
                    directory,
                    behaviour,
                    tokens,
                    model,
                    firmware,
                    duration,
                    status_every,
                )
            )


async def _run(
    host: str,
    port: int,
    root_ca: Path,
    directory: Path,
    behaviour: Behaviour,
    tokens: list[tuple[str, str]],
    model: str,
    firmware: str,
    duration: float | None,
    status_every: float,
) -> None:
    from garrison.sim.fleet import DeviceSpec, Simulator

    sim = Simulator(host, port, root_ca, directory, behaviour)
    started = time.monotonic()
    await sim.enroll([DeviceSpec(serial, token, model, firmware) for serial, token in tokens])
    console.print(f"{len(sim.devices)} devices enrolled in {time.monotonic() - started:.1f}s")
    sim.start(spread=min(5.0, len(sim.devices) / 200))
    started = time.monotonic()
    try:
        while duration is None or time.monotonic() - started < duration:
            wait = status_every
            if duration is not None:
                wait = min(wait, max(0.0, duration - (time.monotonic() - started)))
            await asyncio.sleep(wait)
            console.print(_status(sim, time.monotonic() - started), highlight=False)
    finally:
        await sim.stop()


def _status(sim: Simulator, elapsed: float) -> str:
    versions = ", ".join(f"{v}: {n}" for v, n in sorted(sim.versions().items()))
    tally = sim.tally
    not_modified = sum(n for k, n in tally.requests.items() if k.endswith(" 304"))
    errors = sum(tally.errors.values()) + tally.failed_cycles
    return (
        f"{elapsed:6.0f}s  firmware {versions}  installs {tally.committed + tally.rolled_back} "
        f"(rolled back {tally.rolled_back})  requests {sum(tally.requests.values()):,} "
        f"(304: {not_modified:,})  errors {errors}"
    )

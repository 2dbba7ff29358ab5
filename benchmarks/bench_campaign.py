"""A simulated fleet's rollout campaign, from its start to the fleet's full update level.

``python -m benchmarks.bench_campaign [--devices N] [--backend sqlite|postgresql]
[--workers W] [--poll-seconds P] [--install-seconds I] [--failing F] [--json]``

Untimed set-up: a fresh fleet in a temporary directory (PostgreSQL: a fresh
``garrison_bench_<random>`` database, dropped afterwards); ``garrison server --workers W``
in its own process; through the admin API (:mod:`garrison.sim.scenario`): a batch of N
factory tokens, a firmware release ``fw 2.0.0`` for ``gw-1`` signed by a release manager,
a dynamic group ``fleet`` (``model == "gw-1"``). N simulated devices (:mod:`garrison.sim`,
one process, one event loop) enroll over EST with their own keys, start cycling every P
seconds (±10 %) on their own kept-alive mutual-TLS connections and check in with their
inventory (firmware 1.0.0).

Timed: the campaign is created (``POST /api/v1/campaigns``: canary 1 %, waves 10 %, 50 %,
100 %, no rate limit to speak of, F failures tolerated per phase) and runs on the
control plane's scheduler; each device polls its directive, downloads, installs for I
seconds (simulated) and reports like the agent. F devices (spread over the phases) fail
their health check and roll back. The clock stops at the fleet's full update level: every
member of the group on the target or failed (``GET /api/v1/fleet/level``: updating and not
reached both 0, with the proof that each device is in exactly one category) and the
campaign completed. Printed: the wall time, each phase's duration, the requests the devices
made, and the server's and the client's CPU.

The limit beside it: the *protocol bound*, the wall time of a control plane that took no
time at all — each phase still needs a scheduler tick (1 s) to assign it, the slowest
device's poll (P + 10 %) to see it, and the install (I): ``phases * (1 + 1.1 P + I)``. The
table prints measured ÷ bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.bench_enroll import (
    BenchError,
    _progress,
    cpu_seconds,
    hotspots,
    postgres_database,
    sampled,
    server_process,
)
from garrison.fleet.scheduler import TICK_SECONDS
from garrison.identity.fleet import init_fleet, load_fleet
from garrison.server.embedded import free_port
from garrison.settings import Settings
from garrison.sim.device import Behaviour
from garrison.sim.fleet import DeviceSpec, Simulator
from garrison.sim.scenario import Scenario
from garrison.store.database import Database

DEFAULT_DEVICES = 10_000
DEFAULT_POLL_SECONDS = 10.0
DEFAULT_INSTALL_SECONDS = 2.0
DEFAULT_FAILING = 5
MODEL = "gw-1"
GROUP = "fleet"
PLAN: dict[str, Any] = {"canary": "1%", "waves": [10, 50, 100], "max_per_minute": 1_000_000}
HOST = "127.0.0.1"
# The agent's heartbeat check-in comes every 12th poll; with polls every few seconds instead
# of 30 minutes that would be a check-in a minute per device. Time is compressed for polls
# only: a heartbeat would come every 6 hours, so never during a campaign.
HEARTBEAT_POLLS = 10**9
FIRST_CONTACTS = 32


@dataclass
class Phase:
    name: str
    size: int
    started: float  # seconds since the campaign was created
    done: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.done is None else self.done - self.started


@dataclass
class Result:
    """The figures of one run: the JSON object printed with ``--json``."""

    backend: str
    workers: int
    devices: int
    poll_seconds: float
    install_seconds: float
    enroll_seconds: float
    checkin_seconds: float
    campaign_seconds: float
    create_seconds: float
    bound_seconds: float
    ratio: float
    phases: list[dict[str, Any]]
    level: dict[str, int]
    proof: bool
    state: str
    requests: dict[str, int]
    errors: dict[str, int]
    server_cpu_seconds: float | None
    client_cpu_seconds: float
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)


# -- set-up (untimed) ------------------------------------------------------------------


def prepare(data_dir: Path, db_url: str, port: int) -> str:
    """A new fleet on a migrated database; returns the admin token."""
    settings = Settings(
        organization="Bench Fleet",
        public_url=f"https://{HOST}:{port}",
        listen=f"{HOST}:{port}",
        database_url=db_url,
    )
    token = init_fleet(data_dir, settings, dt.datetime.now(dt.UTC))
    database = Database(db_url)
    try:
        database.migrate()
    finally:
        database.dispose()
    return token


def set_up(scenario: Scenario, data_dir: Path, db_url: str, count: int) -> list[DeviceSpec]:
    """Batch, release and group through the admin API; the device specs to simulate."""
    database = Database(db_url)
    try:
        scenario.release_managers(load_fleet(data_dir), database)
    finally:
        database.dispose()
    scenario.publish("fw", "2.0.0", [MODEL])
    serials = [f"SIM-{i:06d}" for i in range(count)]
    tokens: list[tuple[str, str]] = []
    for start in range(0, count, 50_000):
        tokens += scenario.batch(serials[start : start + 50_000], MODEL)
    scenario.group(GROUP, where=f'model == "{MODEL}"')
    return [DeviceSpec(serial, token, MODEL, "1.0.0") for serial, token in tokens]


def failing_serials(specs: list[DeviceSpec], count: int) -> frozenset[str]:
    """``count`` serials spread evenly over the fleet (so over the phases)."""
    if count <= 0:
        return frozenset()
    step = max(1, len(specs) // count)
    return frozenset(s.serial for s in specs[step // 2 :: step][:count])


# -- the run ---------------------------------------------------------------------------


async def until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    report = time.monotonic() + 30
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            detail = f" ({progress()})" if progress else ""
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        if progress is not None and now > report:
            _progress(f"waiting for {what}: {progress()}")
            report = now + 30
        await asyncio.sleep(0.2)


def tally_line(sim: Simulator) -> str:
    tally = sim.tally
    checked = tally.requests["POST /device/v1/checkin 200"]
    errors = dict(tally.errors)
    return f"{checked:,} checked in, {tally.failed_cycles} failed cycles, errors {errors}"


def _level(scenario: Scenario) -> dict[str, Any]:
    groups = [g for g in scenario.level()["groups"] if g["group"] == GROUP]
    if not groups:
        raise BenchError(f"group {GROUP!r} is not in the fleet level")
    level: dict[str, Any] = groups[0]
    return level


async def run(
    scenario: Scenario,
    specs: list[DeviceSpec],
    work: Path,
    port: int,
    root_ca: Path,
    args: argparse.Namespace,
    pid: int,
) -> Result:
    behaviour = Behaviour(
        install_seconds=args.install_seconds,
        poll_seconds=args.poll_seconds,
        jitter_seconds=args.poll_seconds / 10,
        failing=failing_serials(specs, args.failing),
        heartbeat_polls=HEARTBEAT_POLLS,
        request_timeout=120,
    )
    sim = Simulator(HOST, port, root_ca, work / "sim", behaviour, seed=1)
    started = time.perf_counter()
    await sim.enroll(specs, connections=8)
    enrolled = time.perf_counter() - started
    _progress(f"{len(specs)} devices enrolled over EST in {enrolled:.1f}s; starting them")
    started = time.perf_counter()
    # first contacts (TLS handshake, check-in, first directive) 32 at a time: the fleet
    # comes online as fast as the control plane takes it, without timeouts and retries
    sim.start(spread=1.0, first_contacts=FIRST_CONTACTS)
    try:
        await until(
            lambda: sim.tally.requests["POST /device/v1/checkin 200"] >= len(specs),
            max(600.0, 0.3 * len(specs)),
            "every device's first check-in",
            lambda: tally_line(sim),
        )
        checked = time.perf_counter() - started
        _progress(f"all checked in after {checked:.1f}s; creating the campaign")

        profile = Path(args.profile) if args.profile else None
        stack = contextlib.ExitStack()
        stack.enter_context(sampled(pid, profile))
        server0, client0 = cpu_seconds(pid), time.process_time()
        requests0 = Counter(sim.tally.requests)
        began = time.perf_counter()
        plan = PLAN | {"failure_threshold": args.failing}  # each phase tolerates them
        created = await asyncio.to_thread(scenario.campaign, "bench", GROUP, ("fw", "2.0.0"), plan)
        campaign = int(created["id"])
        create_seconds = time.perf_counter() - began
        phases: list[Phase] = []
        view: dict[str, Any] = {}
        level: dict[str, Any] = {}
        while True:
            view = await asyncio.to_thread(scenario.show, campaign, limit=0)
            now = time.perf_counter() - began
            for progress in view["phase_progress"]:
                index = progress["index"]
                if progress["status"] != "upcoming" and index >= len(phases):
                    phases.append(Phase(progress["name"], progress["size"], now))
                ended = progress["status"] == "done" and index < len(phases)
                if ended and phases[index].done is None:
                    phases[index].done = now
            if view["state"] in ("halted", "aborted"):
                raise BenchError(f"the campaign {view['state']}: {view['reason']}")
            if view["state"] == "completed":
                level = await asyncio.to_thread(_level, scenario)
                counts = level["counts"]
                if counts["updating"] == 0 and counts["not_reached"] == 0:
                    break
            if now > args.timeout:
                raise BenchError(f"not done after {args.timeout:.0f}s: {view['counts']}")
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - began
        for phase in phases:
            if phase.done is None:
                phase.done = elapsed
        server = cpu_seconds(pid)
        client = time.process_time() - client0
        requests = sim.tally.requests - requests0
        stack.close()
    finally:
        await sim.stop()
    bound = len(PLAN["waves"]) + 1
    bound_seconds = bound * (TICK_SECONDS + 1.1 * args.poll_seconds + args.install_seconds)
    return Result(
        backend=args.backend,
        workers=args.workers,
        devices=len(specs),
        poll_seconds=args.poll_seconds,
        install_seconds=args.install_seconds,
        enroll_seconds=enrolled,
        checkin_seconds=checked,
        campaign_seconds=elapsed,
        create_seconds=create_seconds,
        bound_seconds=bound_seconds,
        ratio=elapsed / bound_seconds,
        phases=[asdict(p) | {"seconds": p.seconds} for p in phases],
        level=dict(level["counts"]),
        proof=bool(level["proof"]["exactly_one_each"])
        and level["proof"]["classified"] == level["members"] == len(specs),
        state=str(view["state"]),
        requests=dict(sorted(requests.items())),
        errors=dict(sim.tally.errors) | {"failed cycles": sim.tally.failed_cycles},
        server_cpu_seconds=None if server is None or server0 is None else server - server0,
        client_cpu_seconds=client,
    )


def bench(db_url: str, work: Path, args: argparse.Namespace) -> Result:
    data_dir = work / "fleet"
    port = free_port()
    token = prepare(data_dir, db_url, port)
    root_ca = data_dir / "pki" / "root-ca.pem"
    with server_process(data_dir, port, args.workers) as pid:
        scenario = Scenario(f"https://{HOST}:{port}", root_ca, token)
        specs = set_up(scenario, data_dir, db_url, args.devices)
        _progress(f"{args.backend}: fleet, batch of {len(specs)}, release and group ready")
        return uvloop.run(run(scenario, specs, work, port, root_ca, args, pid))


# -- output ----------------------------------------------------------------------------


def render(r: Result) -> str:
    cpu = "n/a" if r.server_cpu_seconds is None else f"{r.server_cpu_seconds:.1f} s"
    lines = [
        f"Rollout campaign over a simulated fleet ({r.cpus} CPUs, {r.backend}, "
        f"{r.workers} server worker(s))",
        f"  devices                          {r.devices:,}",
        f"  poll / install (simulated)       {r.poll_seconds:g} s ± 10 % / {r.install_seconds:g} s",
        f"  enrollment over EST (untimed)    {r.enroll_seconds:.1f} s",
        f"  all checked in (untimed)         {r.checkin_seconds:.1f} s",
        f"  campaign: start → full level     {r.campaign_seconds:.1f} s",
        f"    POST /campaigns answered after {r.create_seconds:.1f} s",
    ]
    for phase in r.phases:
        seconds = phase["seconds"]
        lines.append(
            f"    {phase['name']:<10} {phase['size']:>7,} devices   "
            f"from {phase['started']:6.1f} s   {seconds:6.1f} s"
        )
    lines += [
        f"  protocol bound (no server time)  {r.bound_seconds:.1f} s",
        f"  measured ÷ bound                 {r.ratio:.2f}",
        f"  campaign state                   {r.state}",
        "  update level                     " + ", ".join(f"{k} {v:,}" for k, v in r.level.items()),
        f"  proof: each device in one state  {'yes' if r.proof else 'NO'}",
        f"  server CPU during the campaign   {cpu}",
        f"  client CPU (the simulator)       {r.client_cpu_seconds:.1f} s",
        "  device requests during the campaign:",
    ]
    lines += [f"    {name:<40} {count:>9,}" for name, count in r.requests.items()]
    if any(r.errors.values()):
        lines.append(f"  device-side errors               {r.errors}")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_campaign",
        description="A simulated fleet's campaign, start to full update level (wall time).",
    )
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS)
    parser.add_argument("--install-seconds", type=float, default=DEFAULT_INSTALL_SECONDS)
    parser.add_argument(
        "--failing", type=int, default=DEFAULT_FAILING, help="devices failing their health check"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="give up after (seconds)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    parser.add_argument(
        "--profile", metavar="FILE", help="sample the server with py-spy during the campaign"
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.poll_seconds <= 0 or args.install_seconds < 0 or args.workers < 1:
        parser.error("--devices, --poll-seconds and --workers must be positive")
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: servers stopped, database dropped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="garrison-bench-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            work = Path(tmp)
            if args.backend == "sqlite":
                db_url = f"sqlite:///{work / 'garrison.db'}"
            else:
                db_url = stack.enter_context(postgres_database())
            result = bench(db_url, work, args)
    except KeyboardInterrupt:
        _progress("interrupted; server stopped and benchmark database dropped")
        return 130
    except BenchError as exc:
        _progress(f"failed: {exc}")
        return 1
    print(json.dumps(asdict(result)) if args.json else render(result))
    if args.profile and Path(args.profile).exists():
        lines = ["server hotspots (py-spy, % of samples): inclusive  self  function"]
        lines += [f"  {i:6.1f}% {o:6.1f}%  {n}" for i, o, n in hotspots(Path(args.profile), 30)]
        print("\n".join(lines), file=sys.stderr)
    clean = result.proof and result.state == "completed" and not any(result.errors.values())
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

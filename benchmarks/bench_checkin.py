"""Idle device check-ins per second over mutual TLS, beside the limit of the same client
loop against a trivial TLS server.

``python -m benchmarks.bench_checkin [--backend sqlite|postgresql|both] [--workers N]
[--devices N] [--seconds S] [--fresh-concurrency C] [--json] [--profile FILE]``

An idle check-in is what a device does every poll interval when nothing changed: ``GET
/device/v1/directive`` with ``If-None-Match`` naming the directive it holds, answered ``304``
after the control plane checked that this exact certificate belongs to an active device and
is not revoked.

For each backend, untimed: a fresh fleet in a temporary directory (PostgreSQL: a fresh
``garrison_bench_<random>`` database, dropped afterwards) with one batch of N serials;
``garrison server --workers W`` in its own process; N simulated devices enrolled over real
EST (:mod:`garrison.sim`: each its own P-256 key, made here) and each device's first
directive fetched (a 200: that is how it learns the ETag).

Timed, S seconds each, in this process (the client: one asyncio event loop on uvloop, the
simulator's lean HTTP/1.1 client, requests pre-built):

* **keep-alive**: every device on its own kept-alive TLS connection, one request at a
  time, as fast as answers come;
* **fresh handshake**: C concurrent loops, each opening a new TLS connection (a full
  handshake presenting the device's certificate) per request, ``Connection: close``.

Only 304s count; any other answer is an error and fails the run. Reported: requests/s,
p50/p99 latency, and the CPU the server (all workers) and the client spent per request.
After the server stopped, every device's ``last_seen_at`` must have been written (the
coalesced last-seen recording flushes at shutdown).

The limit: the same two loops against a trivial TLS server — a bare asyncio protocol on
uvloop with the control plane's own TLS context (same certificate, ciphers, client
certificates verified), answering every request with the same 304 bytes — in its own
process. The table prints the control plane's rate ÷ that limit. For where the time goes,
the keep-alive loop also runs against the control plane's own server stack (uvicorn with
the TLS scope protocol, configured as ``garrison server`` does, in as many processes as
``--workers``) serving an ASGI app that answers the same 304 and does nothing else: the
framework's floor; and through the FastAPI route instead of the fast path (a two-tag
``If-None-Match`` the fast path leaves to the route), for the fast path's gain.

``--profile FILE`` samples the server with py-spy during the keep-alive part (``pip install
py-spy``) and prints the functions holding most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from sqlalchemy import func, select

from benchmarks.bench_enroll import (
    BenchError,
    _percentile,
    _progress,
    cpu_seconds,
    hotspots,
    postgres_database,
    prepare_fleet,
    sampled,
    server_process,
)
from garrison.identity.fleet import load_fleet
from garrison.server.device_fast import DIRECTIVE_PATH
from garrison.server.embedded import free_port
from garrison.server.run import Listen
from garrison.server.tls import TlsScopeProtocol, server_ssl_context
from garrison.server.workers import reuseport_socket
from garrison.sim.http import HttpConnection, HttpProtocolError, build_request
from garrison.sim.identity import SimIdentity, device_context, enroll_many
from garrison.store.database import Database
from garrison.store.tables import devices

AIM_PER_SECOND = 5000.0
DEFAULT_DEVICES = 256
DEFAULT_SECONDS = 10.0
DEFAULT_FRESH_CONCURRENCY = 16
DEFAULT_WORKERS = 1
HOST = "127.0.0.1"


@dataclass
class LoopRun:
    """One timed loop: what was answered, how fast, at what CPU cost."""

    requests: int
    seconds: float
    latencies: list[float]
    errors: list[str]
    client_cpu_seconds: float
    server_cpu_seconds: float | None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def server_us(self) -> float | None:
        if self.server_cpu_seconds is None or not self.requests:
            return None
        return 1e6 * self.server_cpu_seconds / self.requests

    def client_us(self) -> float:
        return 1e6 * self.client_cpu_seconds / max(self.requests, 1)


@dataclass
class Result:
    """One backend's figures: the JSON object printed with ``--json``."""

    backend: str
    workers: int
    devices: int
    seconds: float
    keepalive_per_s: float
    keepalive_p50_ms: float
    keepalive_p99_ms: float
    keepalive_server_us: float | None
    keepalive_client_us: float
    route_keepalive_per_s: float
    route_keepalive_server_us: float | None
    fresh_concurrency: int
    fresh_per_s: float
    fresh_p50_ms: float
    fresh_p99_ms: float
    fresh_server_us: float | None
    fresh_client_us: float
    limit_keepalive_per_s: float
    limit_keepalive_server_us: float | None
    limit_keepalive_client_us: float
    limit_fresh_per_s: float
    stack_keepalive_per_s: float
    stack_keepalive_server_us: float | None
    keepalive_ratio: float
    fresh_ratio: float
    errors: int
    aim_per_s: float
    aim_met: bool
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)
    error_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Device:
    identity: SimIdentity
    context: ssl.SSLContext
    request: bytes  # GET /device/v1/directive with If-None-Match, kept alive
    closing: bytes  # the same with Connection: close
    routed: bytes  # If-None-Match: "<etag>", "0": a list, left to the FastAPI route


# -- the client loops ------------------------------------------------------------------


def cpu_of(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes and their children, or None."""
    times = [cpu_seconds(pid) for pid in pids]
    return None if any(t is None for t in times) else sum(t for t in times if t is not None)


async def keepalive_loop(
    port: int, fleet: list[Device], seconds: float, pids: list[int], *, routed: bool = False
) -> LoopRun:
    """Every device on its own kept-alive connection (opened before the clock starts);
    ``routed``: with a two-tag ``If-None-Match``, which only the FastAPI route answers."""
    conns = await asyncio.gather(*(HttpConnection.open(HOST, port, d.context) for d in fleet))
    latencies: list[float] = []
    errors: list[str] = []
    done = 0
    deadline = 0.0

    async def device(conn: HttpConnection, raw: bytes) -> None:
        nonlocal done
        clock = time.perf_counter
        while clock() < deadline:
            started = clock()
            try:
                response = await conn.send(raw)
            except HttpProtocolError as exc:
                errors.append(str(exc))
                return
            if response.status != 304:
                errors.append(f"{response.status} {response.body[:120]!r}")
                return
            latencies.append(clock() - started)
            done += 1

    server0, client0 = cpu_of(pids), time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    requests = [d.routed if routed else d.request for d in fleet]
    await asyncio.gather(*(device(c, r) for c, r in zip(conns, requests, strict=True)))
    elapsed = time.perf_counter() - started
    client, server = time.process_time() - client0, cpu_of(pids)
    for conn in conns:
        conn.close()
    return LoopRun(
        done,
        elapsed,
        latencies,
        errors,
        client,
        None if server is None or server0 is None else server - server0,
    )


async def fresh_loop(
    port: int, fleet: list[Device], seconds: float, concurrency: int, pids: list[int]
) -> LoopRun:
    """``concurrency`` loops, each a new TLS connection (full handshake) per request."""
    latencies: list[float] = []
    errors: list[str] = []
    done = 0
    turn = 0
    deadline = 0.0

    async def worker() -> None:
        nonlocal done, turn
        clock = time.perf_counter
        while clock() < deadline:
            device = fleet[turn % len(fleet)]
            turn += 1
            started = clock()
            try:
                conn = await HttpConnection.open(HOST, port, device.context)
                try:
                    response = await conn.send(device.closing)
                finally:
                    conn.close()
            except HttpProtocolError as exc:
                errors.append(str(exc))
                return
            if response.status != 304:
                errors.append(f"{response.status} {response.body[:120]!r}")
                return
            latencies.append(clock() - started)
            done += 1

    server0, client0 = cpu_of(pids), time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    client, server = time.process_time() - client0, cpu_of(pids)
    return LoopRun(
        done,
        elapsed,
        latencies,
        errors,
        client,
        None if server is None or server0 is None else server - server0,
    )


# -- set-up (untimed) ------------------------------------------------------------------


async def enroll_devices(
    port: int, root_ca: Path, tokens: list[tuple[str, str]], work: Path
) -> list[Device]:
    """Enroll every serial over EST, then fetch each device's directive once (200)."""
    identities = await enroll_many(HOST, port, root_ca, tokens, work / "identities")
    contexts = [device_context(root_ca, identity) for identity in identities]

    async def first(identity: SimIdentity, context: ssl.SSLContext) -> Device:
        conn = await HttpConnection.open(HOST, port, context)
        try:
            response = await conn.request("GET", DIRECTIVE_PATH, timeout=60)
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"{identity.serial}: first directive {response.status}")
        etag = json.loads(response.body)["etag"]
        headers = {"If-None-Match": f'"{etag}"'}
        return Device(
            identity,
            context,
            build_request("GET", DIRECTIVE_PATH, HOST, headers),
            build_request("GET", DIRECTIVE_PATH, HOST, headers, close=True),
            build_request("GET", DIRECTIVE_PATH, HOST, {"If-None-Match": f'"{etag}", "0"'}),
        )

    gate = asyncio.Semaphore(32)

    async def gated(identity: SimIdentity, context: ssl.SSLContext) -> Device:
        async with gate:
            return await first(identity, context)

    return list(
        await asyncio.gather(*(gated(i, c) for i, c in zip(identities, contexts, strict=True)))
    )


def count_seen(db_url: str, since: float) -> int:
    """Devices whose ``last_seen_at`` is at or after the ``since`` epoch time."""
    import datetime as dt

    moment = dt.datetime.fromtimestamp(since, dt.UTC)
    database = Database(db_url)
    try:
        with database.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(devices)
                    .where(devices.c.last_seen_at >= moment)
                ).scalar_one()
            )
    finally:
        database.dispose()


# -- the trivial TLS server (the limit) ------------------------------------------------


NOT_MODIFIED = (
    b"HTTP/1.1 304 Not Modified\r\n"
    b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    b'etag: "0123456789abcdef0123456789abcdef"\r\n'
    b"garrison-poll: 1800;jitter=180\r\n"
    b"cache-control: no-cache\r\n\r\n"
)


class _Trivial(asyncio.Protocol):
    """Answers each request (headers only) with the same 304; closes on Connection: close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.transport.write(NOT_MODIFIED)
            if b"connection: close" in head.lower():
                self.transport.close()
                return


def serve_trivial(data_dir: Path, port: int) -> None:
    """Run the trivial server until terminated (``--serve-trivial``)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fleet = load_fleet(data_dir)
    context = server_ssl_context(
        fleet.paths.server_cert,
        fleet.server_key_path,
        fleet.secrets.passphrase,
        fleet.paths.ca_chain,
    )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Trivial, HOST, port, ssl=context, backlog=2048
        )
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


async def _empty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers every request with the fast path's 304, doing nothing."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 304,
            "headers": [
                (b"etag", b'"0123456789abcdef0123456789abcdef"'),
                (b"garrison-poll", b"1800;jitter=180"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def serve_uvicorn(data_dir: Path, port: int) -> None:
    """The control plane's server stack with an empty app (``--serve-uvicorn``): uvicorn
    configured as :func:`garrison.server.run.build_server` does (httptools with the TLS
    scope, uvloop, the fleet's TLS context, no access log)."""
    fleet = load_fleet(data_dir)
    context = server_ssl_context(
        fleet.paths.server_cert,
        fleet.server_key_path,
        fleet.secrets.passphrase,
        fleet.paths.ca_chain,
    )
    config = uvicorn.Config(
        _empty_app,
        host=HOST,
        port=port,
        http=TlsScopeProtocol,
        loop="uvloop",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
        ssl_context_factory=lambda _config, _default: context,
    )
    sock = reuseport_socket(Listen(HOST, port))  # several such processes share the port
    print("ready", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def limit_process(data_dir: Path, port: int, kind: str, processes: int = 1) -> Iterator[list[int]]:
    """A limit server (``trivial``, or ``uvicorn`` in ``processes`` processes sharing the
    port like ``garrison server --workers``); yields their pids."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_checkin",
                f"--serve-{kind}",
                str(data_dir),
                str(port),
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise BenchError(f"the {kind} limit server did not start")
        deadline = time.monotonic() + 15
        while True:  # listening?
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise BenchError(f"the {kind} limit server does not listen on {port}")
            time.sleep(0.05)
        time.sleep(0.5)  # every process listening
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- one backend -----------------------------------------------------------------------


def bench_backend(backend: str, db_url: str, work_dir: Path, args: argparse.Namespace) -> Result:
    data_dir = work_dir / f"fleet-{backend}"
    port = free_port()
    started = time.perf_counter()
    tokens = prepare_fleet(data_dir, db_url, port, args.devices)
    root_ca = data_dir / "pki" / "root-ca.pem"
    profile = Path(args.profile) if args.profile else None
    _progress(f"{backend}: fleet and batch of {len(tokens)} ready; starting garrison server")
    with server_process(data_dir, port, args.workers) as pid:
        fleet = uvloop.run(enroll_devices(port, root_ca, tokens, work_dir / backend))
        _progress(
            f"{backend}: {len(fleet)} devices enrolled, first directives fetched "
            f"({time.perf_counter() - started:.1f}s); keep-alive for {args.seconds:g}s"
        )
        since = time.time()
        with sampled(pid, profile):
            keep = uvloop.run(keepalive_loop(port, fleet, args.seconds, [pid]))
        _progress(f"{backend}: {keep.per_second:,.0f}/s; fresh handshakes for {args.seconds:g}s")
        fresh = uvloop.run(fresh_loop(port, fleet, args.seconds, args.fresh_concurrency, [pid]))
        _progress(f"{backend}: {fresh.per_second:,.0f}/s; keep-alive through the FastAPI route")
        route = uvloop.run(keepalive_loop(port, fleet, args.seconds, [pid], routed=True))
    seen = count_seen(db_url, since - 1)
    errors = keep.errors + fresh.errors + route.errors
    if not errors and seen != len(fleet):
        errors.append(f"only {seen} of {len(fleet)} devices have last_seen_at written")
    _progress(f"{backend}: the limit: the same loops against a trivial TLS server")
    trivial_port = free_port()
    with limit_process(data_dir, trivial_port, "trivial") as trivial:
        limit_keep = uvloop.run(keepalive_loop(trivial_port, fleet, args.seconds, trivial))
        limit_fresh = uvloop.run(
            fresh_loop(trivial_port, fleet, args.seconds, args.fresh_concurrency, trivial)
        )
    errors += limit_keep.errors + limit_fresh.errors
    _progress(f"{backend}: the keep-alive loop against uvicorn with an empty app")
    stack_port = free_port()
    with limit_process(data_dir, stack_port, "uvicorn", args.workers) as bare:
        stack_keep = uvloop.run(keepalive_loop(stack_port, fleet, args.seconds, bare))
    errors += stack_keep.errors
    return Result(
        backend=backend,
        workers=args.workers,
        devices=len(fleet),
        seconds=args.seconds,
        keepalive_per_s=keep.per_second,
        keepalive_p50_ms=1000 * _percentile(keep.latencies, 0.50),
        keepalive_p99_ms=1000 * _percentile(keep.latencies, 0.99),
        keepalive_server_us=keep.server_us(),
        keepalive_client_us=keep.client_us(),
        route_keepalive_per_s=route.per_second,
        route_keepalive_server_us=route.server_us(),
        fresh_concurrency=args.fresh_concurrency,
        fresh_per_s=fresh.per_second,
        fresh_p50_ms=1000 * _percentile(fresh.latencies, 0.50),
        fresh_p99_ms=1000 * _percentile(fresh.latencies, 0.99),
        fresh_server_us=fresh.server_us(),
        fresh_client_us=fresh.client_us(),
        limit_keepalive_per_s=limit_keep.per_second,
        limit_keepalive_server_us=limit_keep.server_us(),
        limit_keepalive_client_us=limit_keep.client_us(),
        limit_fresh_per_s=limit_fresh.per_second,
        stack_keepalive_per_s=stack_keep.per_second,
        stack_keepalive_server_us=stack_keep.server_us(),
        keepalive_ratio=keep.per_second / max(limit_keep.per_second, 1e-9),
        fresh_ratio=fresh.per_second / max(limit_fresh.per_second, 1e-9),
        errors=len(errors),
        aim_per_s=AIM_PER_SECOND,
        aim_met=not errors and keep.per_second >= AIM_PER_SECOND,
        error_examples=errors[:5],
    )


# -- output ----------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} µs"


def render(results: list[Result]) -> str:
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("server workers", lambda r: str(r.workers)),
        ("devices (connections)", lambda r: str(r.devices)),
        ("errors", lambda r: str(r.errors)),
        ("keep-alive: 304/s", lambda r: f"{r.keepalive_per_s:,.0f}"),
        ("  latency p50 / p99", lambda r: f"{r.keepalive_p50_ms:.1f}/{r.keepalive_p99_ms:.1f} ms"),
        ("  server CPU / request", lambda r: _us(r.keepalive_server_us)),
        ("  client CPU / request", lambda r: _us(r.keepalive_client_us)),
        ("  limit: trivial TLS server/s", lambda r: f"{r.limit_keepalive_per_s:,.0f}"),
        ("  limit: its server CPU / req", lambda r: _us(r.limit_keepalive_server_us)),
        ("  limit: client CPU / req", lambda r: _us(r.limit_keepalive_client_us)),
        ("  304/s ÷ limit", lambda r: f"{r.keepalive_ratio:.2f}"),
        ("  FastAPI route (no fast path)/s", lambda r: f"{r.route_keepalive_per_s:,.0f}"),
        ("  FastAPI route: server CPU / req", lambda r: _us(r.route_keepalive_server_us)),
        ("  uvicorn, empty app/s", lambda r: f"{r.stack_keepalive_per_s:,.0f}"),
        ("  uvicorn, empty app: CPU / req", lambda r: _us(r.stack_keepalive_server_us)),
        ("fresh handshake: 304/s", lambda r: f"{r.fresh_per_s:,.0f}"),
        ("  concurrency", lambda r: str(r.fresh_concurrency)),
        ("  latency p50 / p99", lambda r: f"{r.fresh_p50_ms:.1f}/{r.fresh_p99_ms:.1f} ms"),
        ("  server CPU / request", lambda r: _us(r.fresh_server_us)),
        ("  client CPU / request", lambda r: _us(r.fresh_client_us)),
        ("  limit: trivial TLS server/s", lambda r: f"{r.limit_fresh_per_s:,.0f}"),
        ("  304/s ÷ limit", lambda r: f"{r.fresh_ratio:.2f}"),
        (
            f"aim ≥ {AIM_PER_SECOND:,.0f}/s keep-alive",
            lambda r: "met" if r.aim_met else "NOT met",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"Idle check-ins (GET /device/v1/directive → 304) over mTLS ({results[0].cpus} CPUs, "
        f"{results[0].seconds:g} s per loop)",
        f"{'':<{width}}  " + "  ".join(f"{r.backend:>14}" for r in results),
    ]
    for label, cell in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell(r):>14}" for r in results))
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_checkin",
        description="Idle device check-ins per second against a real garrison server process.",
    )
    parser.add_argument(
        "--devices", type=int, default=DEFAULT_DEVICES, help="devices (connections)"
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per timed loop")
    parser.add_argument(
        "--fresh-concurrency",
        type=int,
        default=DEFAULT_FRESH_CONCURRENCY,
        help="concurrent loops of the fresh-handshake part",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server processes")
    parser.add_argument("--json", action="store_true", help="one JSON object per backend")
    parser.add_argument("--profile", metavar="FILE", help="sample the server with py-spy")
    for kind in ("trivial", "uvicorn"):
        parser.add_argument(
            f"--serve-{kind}", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS
        )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.seconds <= 0 or args.fresh_concurrency < 1 or args.workers < 1:
        parser.error("--devices, --seconds, --fresh-concurrency and --workers must be positive")
    return args


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: servers stopped, database dropped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_trivial:
        serve_trivial(Path(args.serve_trivial[0]), int(args.serve_trivial[1]))
        return 0
    if args.serve_uvicorn:
        serve_uvicorn(Path(args.serve_uvicorn[0]), int(args.serve_uvicorn[1]))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="garrison-bench-") as tmp:
            work_dir = Path(tmp)
            for backend in backends:
                with contextlib.ExitStack() as stack:
                    if backend == "sqlite":
                        db_url = f"sqlite:///{work_dir / 'garrison.db'}"
                    else:
                        db_url = stack.enter_context(postgres_database())
                    result = bench_backend(backend, db_url, work_dir, args)
                results.append(result)
                if args.json:
                    print(json.dumps(asdict(result)), flush=True)
                if args.profile:
                    _report_profile(Path(args.profile), backend)
                    args.profile = None  # profile the first backend only
    except KeyboardInterrupt:
        _progress("interrupted; servers stopped and benchmark database dropped")
        return 130
    except BenchError as exc:
        _progress(f"failed: {exc}")
        return 1
    if not args.json:
        print(render(results))
    for result in results:
        for example in result.error_examples:
            _progress(f"{result.backend}: error: {example}")
    return 1 if any(r.errors for r in results) else 0


def _report_profile(path: Path, backend: str) -> None:
    if not path.exists():
        _progress(f"py-spy wrote no profile to {path}")
        return
    lines = [f"server hotspots ({backend}, py-spy, % of samples): inclusive  self  function"]
    lines += [f"  {inc:6.1f}% {own:6.1f}%  {name}" for inc, own, name in hotspots(path, 25)]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

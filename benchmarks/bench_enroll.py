"""End-to-end EST enrollment throughput, beside the raw certificate-signing rate.

``python -m benchmarks.bench_enroll [--devices N] [--concurrency C]
[--backend sqlite|postgresql|both] [--json] [--profile FILE]``

For each backend, untimed: a fresh fleet in a temporary directory (PostgreSQL: a fresh
``garrison_bench_<random>`` database, dropped afterwards), one production batch of N
serials, and N pre-generated P-256 keys with their base64 DER CSRs. Then ``garrison server``
starts in its own process and this process, the client, sends the N
``/.well-known/est/simpleenroll`` requests over HTTPS with keep-alive, on C connections
(one thread and one ``httpx.Client`` each; TLS handshakes are done before the clock
starts). Only 200s count; any other answer is an error and fails the run.

Timed: the wall time of the N enrollments (enrollments/s), their p50/p99 latency and the
CPU time the server and the client spent. Afterwards, with the server stopped: how many
certificates per second ``issue_device_certificate`` signs in-process with the fleet's
issuing CA (the limit enrollment is compared against), the raw ECDSA P-256 signing rate
and the CSR check rate (parse + proof-of-possession verify), for context.

``--profile FILE`` samples the server with py-spy during the timed part (``pip install
py-spy``) and prints the functions holding most samples (inclusive).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from garrison.access.roles import Role
from garrison.identity.batches import BatchRequest, create_batch
from garrison.identity.fleet import init_fleet, load_fleet
from garrison.identity.principals import create_principal
from garrison.pki.csr import check_csr
from garrison.pki.profile import issue_device_certificate
from garrison.server.embedded import free_port
from garrison.settings import Settings
from garrison.store.database import Database
from garrison.store.tables import certificates, devices

AIM_PER_SECOND = 1000.0
DEFAULT_DEVICES = 2000
DEFAULT_CONCURRENCY = 4
DEFAULT_WORKERS = 1
PG_ADMIN_URL = os.environ.get(
    "GARRISON_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SIGN_SECONDS = 2.0
SAMPLE_CHECKS = 20
ENROLL_PATH = "/.well-known/est/simpleenroll"
SERVER_COMMAND_ENV = "GARRISON_BENCH_SERVER"


class BenchError(Exception):
    """The benchmark could not run, or its run was not clean (any non-200)."""


@dataclass(frozen=True)
class Enrollment:
    """One prepared request: everything the client sends, computed before the clock starts."""

    serial: str
    authorization: str
    body: bytes
    public_key: ec.EllipticCurvePublicKey


@dataclass
class ClientRun:
    seconds: float
    latencies: list[float]
    errors: list[str]
    samples: list[tuple[Enrollment, bytes]]
    client_cpu_seconds: float
    server_cpu_seconds: float | None


@dataclass(frozen=True)
class SigningRates:
    cert_sign_per_s: float
    ecdsa_sign_per_s: float
    csr_check_per_s: float


@dataclass
class Result:
    """One backend's figures: the JSON object printed with ``--json``."""

    backend: str
    devices: int
    enrolled: int
    concurrency: int
    seconds: float
    enroll_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cert_sign_per_s: float
    ecdsa_sign_per_s: float
    csr_check_per_s: float
    ratio: float
    server_cpu_ms_per_enroll: float | None
    client_cpu_ms_per_enroll: float
    aim_per_s: float
    aim_met: bool
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)
    error_examples: list[str] = field(default_factory=list)


# -- set-up (untimed) ------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped (even if connected) on the way out."""
    import psycopg

    name = f"garrison_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(f"cannot create a PostgreSQL database via {PG_ADMIN_URL}: {exc}") from exc
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_fleet(data_dir: Path, db_url: str, port: int, count: int) -> list[tuple[str, str]]:
    """A new fleet with one batch of ``count`` serials; return ``(serial, token)`` pairs."""
    now = dt.datetime.now(dt.UTC)
    settings = Settings(
        organization="Bench Fleet",
        public_url=f"https://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        database_url=db_url,
    )
    init_fleet(data_dir, settings, now)
    database = Database(db_url)
    try:
        database.migrate()
        with database.write() as conn:
            create_principal(conn, "acme", Role.MANUFACTURER, now)
            serials = [f"BENCH-{i:06d}" for i in range(count)]
            batch = create_batch(
                conn, BatchRequest("bench", "acme", "gw-1", serials, None, 30), now
            )
    finally:
        database.dispose()
    return [(serial, token) for serial, token in batch.tokens if serial is not None]


def prepare_requests(tokens: list[tuple[str, str]]) -> list[Enrollment]:
    """One fresh P-256 key and base64 DER CSR per serial, and its HTTP Basic header."""
    requests = []
    for serial, token in tokens:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(key, hashes.SHA256())
        )
        body = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
        basic = base64.b64encode(f"{serial}:{token}".encode()).decode()
        requests.append(Enrollment(serial, f"Basic {basic}", body, key.public_key()))
    return requests


# -- the server process ----------------------------------------------------------------


def _garrison_command() -> list[str]:
    """The installed ``garrison`` script, or ``$GARRISON_BENCH_SERVER`` (to try a variant)."""
    override = os.environ.get(SERVER_COMMAND_ENV)
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "garrison"
    if script.exists():
        return [str(script)]
    found = shutil.which("garrison")
    if found is None:
        raise BenchError("the garrison console script is not installed (pip install -e .)")
    return [found]


def _tls_context(root_ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root_ca))


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def server_process(
    data_dir: Path, port: int, workers: int = 1, timeout: float = 30.0
) -> Iterator[int]:
    """``garrison server`` in its own process, healthy over HTTPS; yields its pid.

    It runs in its own session so that a Ctrl-C reaches only this process, which then
    stops it (SIGTERM, then SIGKILL) on every way out.
    """
    log = data_dir / "server.log"
    command = [*_garrison_command(), "server", "--data-dir", str(data_dir)]
    command += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"https://127.0.0.1:{port}/healthz"
        context = _tls_context(data_dir / "pki" / "root-ca.pem")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BenchError(f"garrison server exited ({proc.returncode}):\n{_log_tail(log)}")
            try:
                if httpx.get(url, verify=context, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"garrison server not healthy after {timeout}s:\n{_log_tail(log)}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time so far of a process and its live children (the server
    workers), from Linux ``/proc``, or ``None``."""
    own = _stat(pid)
    if own is None:
        return None
    total = int(own[11]) + int(own[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sampled(pid: int, output: Path | None) -> Iterator[None]:
    """py-spy sampling ``pid`` while the block runs: collapsed stacks into ``output``.

    Only the thread holding the GIL is sampled (``--gil``): one server process runs Python
    on one core at a time, so that is the work that bounds its throughput.
    """
    if output is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy: pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "250"]
    command += ["--format", "raw", "--output", str(output)]
    log = output.with_name(output.name + ".log")
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    try:
        time.sleep(1.0)  # let py-spy attach before the clock starts
        if proc.poll() is not None:
            raise BenchError(f"py-spy could not sample the server:\n{_log_tail(log)}")
        yield
    finally:
        _stop(proc, signal.SIGINT)


def hotspots(collapsed: Path, top: int = 15) -> list[tuple[float, float, str]]:
    """``(inclusive %, self %, function)`` of the functions in most sampled stacks.

    Pass-through frames (nine tenths or more of their samples in one callee: wrappers,
    middleware) are left out, so the list shows where the work branches.
    """
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    callees: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            re.sub(r":\d+\)$", ")", frame)
            for frame in stack.split(";")
            if not frame.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        for caller, callee in set(itertools.pairwise(frames)):
            if caller != callee:
                callees[caller][callee] += count
        own[frames[-1]] += count

    def passes_through(frame: str) -> bool:
        most = callees[frame].most_common(1)
        return bool(most) and most[0][1] >= 0.9 * inclusive[frame]

    shown = [(frame, n) for frame, n in inclusive.most_common() if not passes_through(frame)]
    return [(100 * n / total, 100 * own[frame] / total, frame) for frame, n in shown[:top]]


# -- the client (timed) ----------------------------------------------------------------


def run_clients(
    url: str, root_ca: Path, requests: list[Enrollment], concurrency: int, server_pid: int
) -> ClientRun:
    """Send every request on ``concurrency`` keep-alive connections; time the whole."""
    work: queue.SimpleQueue[Enrollment] = queue.SimpleQueue()
    for request in requests:
        work.put(request)
    context = _tls_context(root_ca)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    stop = threading.Event()
    sample_every = max(1, len(requests) // SAMPLE_CHECKS)
    samples: list[tuple[Enrollment, bytes]] = []
    ready = threading.Barrier(concurrency + 1)

    def worker(mine: list[float]) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=url, verify=context, limits=limits, timeout=60) as client:
            try:
                client.get("/healthz")  # the TLS handshake, before the clock starts
            except httpx.HTTPError as exc:
                errors.append(f"warm-up: {type(exc).__name__}: {exc}")
            ready.wait()
            while not stop.is_set():
                try:
                    request = work.get_nowait()
                except queue.Empty:
                    return
                headers = {
                    "Authorization": request.authorization,
                    "Content-Type": "application/pkcs10",
                }
                started = time.perf_counter()
                try:
                    response = client.post(ENROLL_PATH, content=request.body, headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(f"{request.serial}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    errors.append(f"{request.serial}: {response.status_code} {response.text[:200]}")
                    continue
                mine.append(time.perf_counter() - started)  # only 200s count
                if int(request.serial.rsplit("-", 1)[1]) % sample_every == 0:
                    samples.append((request, response.content))

    threads = [
        threading.Thread(target=worker, args=(mine,), name=f"client-{i}", daemon=True)
        for i, mine in enumerate(latencies)
    ]
    for thread in threads:
        thread.start()
    try:
        try:
            ready.wait(timeout=60)
        except threading.BrokenBarrierError:
            raise BenchError(f"the clients did not connect: {errors[:1]}") from None
        server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_after = cpu_seconds(server_pid)
    finally:
        stop.set()
    server_used = None if server_cpu is None or server_after is None else server_after - server_cpu
    merged = [latency for mine in latencies for latency in mine]
    return ClientRun(seconds, merged, errors, samples, client_cpu, server_used)


def verify_samples(samples: list[tuple[Enrollment, bytes]], issuing: x509.Certificate) -> None:
    """Each sampled answer is a PKCS#7 holding the device's certificate from the issuing CA."""
    if not samples:
        raise BenchError("no enrollment answer was sampled for verification")
    for request, body in samples:
        try:
            (cert,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
            cert.verify_directly_issued_by(issuing)
        except (ValueError, TypeError) as exc:
            raise BenchError(f"{request.serial}: answer is not a valid certificate: {exc}") from exc
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [request.serial] or cert.public_key() != request.public_key:
            raise BenchError(f"{request.serial}: the certificate names another device or key")


def count_persisted(db_url: str) -> tuple[int, int]:
    database = Database(db_url)
    try:
        with database.read() as conn:
            device_rows = conn.execute(select(func.count()).select_from(devices)).scalar_one()
            cert_rows = conn.execute(select(func.count()).select_from(certificates)).scalar_one()
    finally:
        database.dispose()
    return int(device_rows), int(cert_rows)


# -- the limit: in-process signing -----------------------------------------------------


def _rate(operation: Callable[[], object], seconds: float) -> float:
    operation()
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            operation()
        done += 20
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def signing_rates(data_dir: Path, request: Enrollment) -> SigningRates:
    """Certificates/s that ``issue_device_certificate`` signs in this process (one core)."""
    fleet = load_fleet(data_dir)
    profile = fleet.device_profile
    now = dt.datetime.now(dt.UTC)
    cert_rate = _rate(
        lambda: issue_device_certificate(
            fleet.issuing, request.public_key, request.serial, profile, now
        ),
        SIGN_SECONDS,
    )
    key = ec.generate_private_key(ec.SECP256R1())
    ecdsa_rate = _rate(lambda: key.sign(b"x" * 100, ec.ECDSA(hashes.SHA256())), SIGN_SECONDS / 2)
    der = base64.b64decode(request.body)
    csr_rate = _rate(lambda: check_csr(der), SIGN_SECONDS / 2)
    return SigningRates(cert_rate, ecdsa_rate, csr_rate)


# -- one backend -----------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_backend(backend: str, db_url: str, work_dir: Path, args: argparse.Namespace) -> Result:
    data_dir = work_dir / f"fleet-{backend}"
    port = free_port()
    started = time.perf_counter()
    tokens = prepare_fleet(data_dir, db_url, port, args.devices)
    requests = prepare_requests(tokens)
    _progress(
        f"{backend}: fleet, batch of {len(requests)} and CSRs ready "
        f"in {time.perf_counter() - started:.1f}s; starting garrison server"
    )
    root_ca = data_dir / "pki" / "root-ca.pem"
    profile = Path(args.profile) if args.profile else None
    with server_process(data_dir, port, args.workers) as pid, sampled(pid, profile):
        _progress(f"{backend}: {len(requests)} enrollments on {args.concurrency} connections")
        run = run_clients(f"https://127.0.0.1:{port}", root_ca, requests, args.concurrency, pid)
    if run.errors:
        _progress(f"{backend}: {len(run.errors)} errors, e.g. {run.errors[0]}")
    else:
        issuing = x509.load_pem_x509_certificate((data_dir / "pki" / "issuing-ca.pem").read_bytes())
        verify_samples(run.samples, issuing)
        persisted = count_persisted(db_url)
        if persisted != (len(requests), len(requests)):
            raise BenchError(
                f"{backend}: expected {len(requests)} devices and certificates "
                f"in the database, found {persisted}"
            )
    _progress(f"{backend}: measuring in-process signing rates")
    rates = signing_rates(data_dir, requests[0])
    successes = len(run.latencies)
    enroll_rate = successes / run.seconds
    server_cpu = run.server_cpu_seconds
    return Result(
        backend=backend,
        devices=len(requests),
        enrolled=successes,
        concurrency=args.concurrency,
        seconds=run.seconds,
        enroll_per_s=enroll_rate,
        p50_ms=1000 * _percentile(run.latencies, 0.50),
        p99_ms=1000 * _percentile(run.latencies, 0.99),
        errors=len(run.errors),
        cert_sign_per_s=rates.cert_sign_per_s,
        ecdsa_sign_per_s=rates.ecdsa_sign_per_s,
        csr_check_per_s=rates.csr_check_per_s,
        ratio=enroll_rate / rates.cert_sign_per_s,
        server_cpu_ms_per_enroll=(
            None if server_cpu is None or not successes else 1000 * server_cpu / successes
        ),
        client_cpu_ms_per_enroll=1000 * run.client_cpu_seconds / max(successes, 1),
        aim_per_s=AIM_PER_SECOND,
        aim_met=not run.errors and successes == len(requests) and enroll_rate >= AIM_PER_SECOND,
        error_examples=run.errors[:5],
    )


# -- output ----------------------------------------------------------------------------


def render(results: list[Result]) -> str:
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("enrollments (200 OK)", lambda r: f"{r.enrolled}/{r.devices}"),
        ("errors (non-200)", lambda r: str(r.errors)),
        ("concurrency", lambda r: str(r.concurrency)),
        ("wall time", lambda r: f"{r.seconds:.2f} s"),
        ("enroll/s", lambda r: f"{r.enroll_per_s:,.0f}"),
        ("latency p50", lambda r: f"{r.p50_ms:.1f} ms"),
        ("latency p99", lambda r: f"{r.p99_ms:.1f} ms"),
        (
            "server CPU / enrollment",
            lambda r: (
                "n/a"
                if r.server_cpu_ms_per_enroll is None
                else f"{r.server_cpu_ms_per_enroll:.2f} ms"
            ),
        ),
        ("client CPU / enrollment", lambda r: f"{r.client_cpu_ms_per_enroll:.2f} ms"),
        ("cert-sign/s (in-process)", lambda r: f"{r.cert_sign_per_s:,.0f}"),
        ("ECDSA P-256 sign/s", lambda r: f"{r.ecdsa_sign_per_s:,.0f}"),
        ("CSR check/s", lambda r: f"{r.csr_check_per_s:,.0f}"),
        ("enroll/s ÷ cert-sign/s", lambda r: f"{r.ratio:.3f}"),
        (
            f"aim ≥ {AIM_PER_SECOND:,.0f} enroll/s",
            lambda r: "met" if r.aim_met else "NOT met",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"EST enrollment over HTTPS, persisted ({results[0].cpus} CPUs)",
        f"{'':<{width}}  " + "  ".join(f"{r.backend:>12}" for r in results),
    ]
    for label, cell in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell(r):>12}" for r in results))
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_enroll",
        description="EST enrollments per second against a real garrison server process.",
    )
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES, help="enrollments")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="client connections"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="server processes (--workers)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per backend")
    parser.add_argument(
        "--profile", metavar="FILE", help="sample the server with py-spy (collapsed stacks)"
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.concurrency < 1:
        parser.error("--devices and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        _progress("interrupted; server stopped and benchmark database dropped")
        return 130
    except BenchError as exc:
        _progress(f"failed: {exc}")
        return 1
    if not args.json:
        print(render(results))
    return 1 if any(r.errors or r.enrolled != r.devices for r in results) else 0


def _report_profile(path: Path, backend: str) -> None:
    if not path.exists():
        _progress(f"py-spy wrote no profile to {path}")
        return
    lines = [f"server hotspots ({backend}, py-spy, % of samples): inclusive  self  function"]
    lines += [f"  {inc:6.1f}% {own:6.1f}%  {name}" for inc, own, name in hotspots(path)]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

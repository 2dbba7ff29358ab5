"""Update verification and install throughput on a 100 MB image, beside raw SHA-256.

``python -m benchmarks.bench_update [--size-mb 100]``

Untimed: a fleet (SQLite), three release managers (threshold 2), a published release of a
random image, ``garrison server`` in its own process, one device enrolled over EST with its
TUF root. Then, timed:

* **raw SHA-256** of the image in memory (the limit every figure is compared with);
* **TUF metadata refresh**: cold (an empty metadata cache) and warm (nothing new);
* **download**: the artifact over HTTPS with mutual TLS, streamed to disk and hashed as it
  comes (``UpdateClient.download``);
* **verification**: Garrison's own check of the artifact held on disk — length and every
  hash of its signed target, read in chunks (``UpdateClient.download`` once the file is
  there: :func:`garrison.updates.digests.hash_file`, the loop verified boot and the
  installer's read-back run too); the issue's aim is ≥ 80 % of raw SHA-256 speed;
* **install**: the verified artifact streamed into the inactive A/B slot, hashed while
  written and fsynced (``FileSlotInstaller.install``), without and with the read-back
  verification.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import TargetFile

from benchmarks.bench_enroll import server_process
from garrison.access.roles import Role
from garrison.agent.agent import Agent
from garrison.agent.identity import AgentConfig, StateDir
from garrison.identity.batches import BatchRequest, create_batch
from garrison.identity.fleet import init_fleet, load_fleet
from garrison.identity.principals import create_principal
from garrison.server.embedded import free_port
from garrison.settings import Settings
from garrison.store.database import Database
from garrison.updates.bootenv import SlotInfo
from garrison.updates.client import UpdateClient
from garrison.updates.device_state import fetch_initial_root, provision_updates
from garrison.updates.installer import FileSlotInstaller
from garrison.updates.offline import configure_release_managers
from garrison.updates.releases import ReleaseService, ReleaseSpec
from garrison.updates.simdevice import SimulatedDevice

MB = 1024 * 1024
MODEL = "gw-2"


def _mbps(size: int, seconds: float) -> float:
    return size / MB / seconds


def raw_sha256(data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - start)
    return _mbps(len(data), best)


def held_verify(client: UpdateClient, target: TargetFile) -> float:
    """``UpdateClient.download`` of an artifact already downloaded: no transfer, only the
    device's verification of the file against its signed target (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        client.download(target)
        best = min(best, time.perf_counter() - start)
    return _mbps(target.length, best)


def disk_write(path: Path, data: bytes) -> float:
    """Plain write + fsync of ``data`` in 1 MiB chunks, no hashing: the storage limit."""
    start = time.perf_counter()
    with path.open("wb") as out:
        for offset in range(0, len(data), MB):
            out.write(data[offset : offset + MB])
        out.flush()
        os.fsync(out.fileno())
    return _mbps(len(data), time.perf_counter() - start)


def publish(data_dir: Path, image: Path) -> tuple[str, str]:
    """Publish ``image`` as a 2-of-3 release directly through the release service; return
    its target path and an enrollment token for the benchmark's device."""
    now = dt.datetime.now(dt.UTC)
    fleet = load_fleet(data_dir)
    database = Database(fleet.database_url)
    signers = [CryptoSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(3)]
    configure_release_managers(fleet, database, [s.public_key for s in signers], 2, now)
    service = ReleaseService(
        database,
        fleet.paths.artifacts,
        fleet.snapshot_signer,
        fleet.timestamp_signer,
        lambda: dt.datetime.now(dt.UTC),
    )
    upload = service.upload()
    with image.open("rb") as source:
        while chunk := source.read(MB):
            upload.write(chunk)
    sha256, _ = upload.finish()
    spec = ReleaseSpec("fw", "2.0.0", [MODEL], 1, "image", [["true"]], sha256)
    release = service.propose(spec, "bench")
    payload = service.payload(release.id)
    for signer in signers[:2]:
        signature = signer.sign(payload)
        service.sign(release.id, signature.keyid, signature.signature, "bench")
    with database.write() as conn:
        create_principal(conn, "maker", Role.MANUFACTURER, now)
        batch = create_batch(conn, BatchRequest("b", "maker", MODEL, ["BENCH-1"], None, 1), now)
    database.dispose()
    return release.target_path, batch.tokens[0][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_update")
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args(argv)
    size = args.size_mb * MB
    with tempfile.TemporaryDirectory(prefix="garrison-update-bench-") as tmp:
        work = Path(tmp)
        data = os.urandom(size)
        image = work / "image.bin"
        image.write_bytes(data)
        port = free_port()
        data_dir = work / "fleet"
        settings = Settings(
            public_url=f"https://127.0.0.1:{port}",
            listen=f"127.0.0.1:{port}",
            database_url=f"sqlite:///{work / 'garrison.db'}",
        )
        init_fleet(data_dir, settings, dt.datetime.now(dt.UTC))
        path, token = publish(data_dir, image)
        sha = raw_sha256(data)
        root = data_dir / "pki" / "root-ca.pem"
        with server_process(data_dir, port):
            state = StateDir(work / "device")
            config = AgentConfig(
                serial="BENCH-1", server_url=f"https://127.0.0.1:{port}", hardware=MODEL
            )
            Agent(state).enroll(config, token, root.read_bytes())
            provision_updates(state, config, fetch_initial_root(config.server_url, root))
            with UpdateClient.for_agent(state) as client:
                start = time.perf_counter()
                target = client.check(path)
                cold = time.perf_counter() - start
                start = time.perf_counter()
                client.check(path)
                warm = time.perf_counter() - start
                start = time.perf_counter()
                artifact = client.download(target)
                download = time.perf_counter() - start
                verify = held_verify(client, target)
        info = SlotInfo(
            version="2.0.0", security_version=1, sha256=target.hashes["sha256"], length=size
        )
        disk = disk_write(work / "disk-probe.bin", data)
        installs = {}
        for readback in (False, True):
            device = SimulatedDevice.create(work / f"sim-{readback}", b"factory image", "1.0.0", 0)
            installer = FileSlotInstaller(device, verify_readback=readback)
            start = time.perf_counter()
            with artifact.open("rb") as source:
                installer.install(source, info)
            installs[readback] = _mbps(size, time.perf_counter() - start)

    rows = [
        ("image", f"{args.size_mb} MB"),
        ("raw SHA-256 (in memory, the limit)", f"{sha:,.0f} MB/s"),
        ("TUF refresh, cold (empty cache)", f"{cold * 1000:,.0f} ms"),
        ("TUF refresh, warm (nothing new)", f"{warm * 1000:,.0f} ms"),
        ("download over mTLS, hashed to disk", f"{_mbps(size, download):,.0f} MB/s"),
        ("  ÷ raw SHA-256", f"{_mbps(size, download) / sha:.0%}"),
        ("verification of the held artifact (the device's)", f"{verify:,.0f} MB/s"),
        ("  ÷ raw SHA-256 (aim ≥ 80 %)", f"{verify / sha:.0%}"),
        ("disk write + fsync, no hashing", f"{disk:,.0f} MB/s"),
        ("install into slot, hashed + fsync", f"{installs[False]:,.0f} MB/s"),
        ("  ÷ disk write + fsync", f"{installs[False] / disk:.0%}"),
        ("install + read-back verification", f"{installs[True]:,.0f} MB/s"),
        ("  ÷ raw SHA-256", f"{installs[True] / sha:.0%}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"Update verification and install ({os.cpu_count()} CPUs)")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

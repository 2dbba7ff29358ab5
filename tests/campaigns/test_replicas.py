"""Two real ``garrison server`` processes on one PostgreSQL database, each running its own
scheduler (and three more schedulers ticking back to back in the test process), while many
devices poll and report through both servers at once (every report sent to both at the
same moment, twice over). The campaign must come out exactly as if one
process had run it: no device assigned twice, no report lost or applied twice, one audit
entry per phase transition, phase counts that add up, an intact audit chain."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select

from garrison.fleet.scheduler import tick
from garrison.server.embedded import free_port
from garrison.store.audit_log import verify_stored_chain
from garrison.store.database import Database
from garrison.store.tables import audit_log, campaign_devices, device_history, devices
from garrison.updates.offline import configure_release_managers
from tests.conftest import RunningFleet, fresh_database, make_csr, make_fleet, make_officer

DEVICES = 40
FAILING = {3, 17, 26, 38}  # these devices' health checks fail: they report rolled-back
TARGET = "fw/2.0.0/fw-2.0.0.img"
STEPS = ("downloading", "downloaded", "installing")


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Device:
    serial: str
    cert: Path
    key: Path
    index: int

    def client(self, url: str, root: Path) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(root))
        context.load_cert_chain(str(self.cert), str(self.key))
        return httpx.Client(base_url=url, verify=context, timeout=30)


def start(fleet: RunningFleet, port: int) -> Replica:
    process = subprocess.Popen(
        [sys.executable, "-m", "garrison.cli", "server", "--data-dir",
         str(fleet.fleet.paths.root), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Replica(f"https://127.0.0.1:{port}", process)


def wait_up(fleet: RunningFleet, replica: Replica) -> None:
    context = ssl.create_default_context(cafile=str(fleet.root_ca))
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(replica.url + "/healthz", verify=context).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert replica.process.poll() is None, replica.process.stdout.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[RunningFleet, list[Replica]]]:
    with fresh_database("postgresql", tmp_path) as url:
        fleet = make_fleet(tmp_path / "fleet", url)
        started = [start(fleet, fleet.port), start(fleet, free_port())]
        try:
            for replica in started:
                wait_up(fleet, replica)
            yield fleet, started
        finally:
            for replica in started:
                replica.process.send_signal(signal.SIGTERM)
            for replica in started:
                replica.process.wait(timeout=30)
            fleet.database.dispose()


def enroll(fleet: RunningFleet, replicas: list[Replica], tmp: Path) -> list[Device]:
    officer = make_officer(fleet)
    serials = [f"R-{i:03d}" for i in range(DEVICES)]
    with fleet.api(officer.token) as api:
        made = api.post(
            "/batches",
            json={"name": "replicas", "manufacturer": "acme", "model": "gw-1", "serials": serials},
        )
    assert made.status_code == 201, made.text
    tokens = {t["serial"]: t["token"] for t in made.json()["tokens"]}
    context = ssl.create_default_context(cafile=str(fleet.root_ca))
    enrolled = []
    for index, serial in enumerate(serials):
        key, der = make_csr(serial, ec.generate_private_key(ec.SECP256R1()))
        answer = httpx.post(
            replicas[index % 2].url + "/.well-known/est/simpleenroll",
            content=base64.encodebytes(der),
            headers={"Content-Type": "application/pkcs10"},
            auth=(serial, tokens[serial]),
            verify=context,
        )
        assert answer.status_code == 200, answer.text
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.content))[0]
        cert_path, key_path = tmp / f"{serial}.pem", tmp / f"{serial}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        enrolled.append(Device(serial, cert_path, key_path, index))
    return enrolled


def publish(fleet: RunningFleet) -> None:
    signer = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
    configure_release_managers(
        fleet.fleet, fleet.database, [signer.public_key], 1, dt.datetime.now(dt.UTC)
    )
    with fleet.api() as api:
        rm = api.post("/principals", json={"name": "rm", "role": "release-manager"}).json()
    with fleet.api(rm["token"]) as api:
        stored = api.put("/artifacts", content=b"firmware 2.0.0\n" * 1000).json()
        release = api.post(
            "/releases",
            json={
                "name": "fw",
                "version": "2.0.0",
                "hardware": ["gw-1"],
                "security_version": 0,
                "install": "image",
                "health_checks": [],
                "sha256": stored["sha256"],
            },
        ).json()
        signature = signer.sign(api.get(f"/releases/{release['id']}/payload").content)
        signed = api.post(
            f"/releases/{release['id']}/signatures",
            json={"keyid": signature.keyid, "signature": signature.signature},
        )
    assert signed.json()["state"] == "published", signed.text


def run_device(
    device: Device,
    replicas: list[Replica],
    root: Path,
    done: threading.Event,
    outcomes: dict[str, list[tuple[str, int, str]]],
) -> None:
    """Check in on 1.0.0, poll the directive through either server; once it names the
    campaign, report each step to both servers at once, twice; then check in the result."""
    clients = [device.client(r.url, root) for r in replicas]
    rng = random.Random(device.index)
    inventory = {
        "serial": device.serial,
        "hardware": "gw-1",
        "firmware": "1.0.0",
        "boot": {"slot": "a", "state": "committed", "last_event": "booted a"},
        "apps": {},
        "uptime_seconds": 1,
    }
    sent: list[tuple[str, int, str]] = []
    try:
        checked = clients[device.index % 2].post(
            "/device/v1/checkin", json={"inventory": inventory}
        )
        assert checked.status_code == 200, checked.text
        with ThreadPoolExecutor(4) as pool:
            while not done.is_set():
                response = rng.choice(clients).get("/device/v1/directive")
                assert response.status_code == 200, response.text
                firmware = response.json()["firmware"]
                if firmware is None or firmware["campaign"] is None:
                    time.sleep(rng.uniform(0.05, 0.3))
                    continue
                final = "rolled-back" if device.index in FAILING else "committed"
                for state in (*STEPS, final):
                    body = {"campaign": firmware["campaign"], "target": TARGET, "state": state}
                    answers = list(
                        pool.map(lambda c, b=body: c.post("/device/v1/report", json=b), clients * 2)
                    )
                    for answer in answers:
                        sent.append((state, answer.status_code, answer.text))
                if final == "committed":
                    inventory = {**inventory, "firmware": "2.0.0"}
                    rng.choice(clients).post("/device/v1/checkin", json={"inventory": inventory})
                break
    finally:
        outcomes[device.serial] = sent
        for client in clients:
            client.close()


def hammer(database: Database, done: threading.Event) -> None:
    while not done.is_set():
        tick(database, dt.datetime.now(dt.UTC))


def test_two_replicas_run_one_campaign_exactly_once(
    replicas: tuple[RunningFleet, list[Replica]], tmp_path: Path
) -> None:
    fleet, servers = replicas
    devices_ = enroll(fleet, servers, tmp_path)
    publish(fleet)
    with fleet.api() as api:
        operator = api.post("/principals", json={"name": "olga", "role": "operator"}).json()
    with fleet.api(operator["token"]) as api:
        assert api.post("/groups", json={"name": "plant"}).status_code == 201
        added = api.post("/groups/plant/members", json={"add": [d.serial for d in devices_]})
        assert added.status_code == 200, added.text

    done = threading.Event()
    outcomes: dict[str, list[tuple[str, int, str]]] = {}
    threads = [
        threading.Thread(
            target=run_device, args=(d, servers, fleet.root_ca, done, outcomes), daemon=True
        )
        for d in devices_
    ]
    # three more schedulers in this process, ticking back to back: the campaign row is
    # contended all the time, not only when the two servers' ticks happen to meet
    tickers = [
        threading.Thread(target=hammer, args=(fleet.database, done), daemon=True) for _ in range(3)
    ]
    for thread in [*threads, *tickers]:
        thread.start()
    time.sleep(1)  # every device checked in and polling
    with fleet.api(operator["token"]) as api:
        made = api.post(
            "/campaigns",
            json={
                "name": "two replicas",
                "group": "plant",
                "release": {"name": "fw", "version": "2.0.0"},
                "plan": {"canary": 4, "waves": [50, 100], "failure_threshold": "50%",
                         "max_per_minute": 10_000},
            },
        )  # fmt: skip
        assert made.status_code == 201, made.text
        campaign = made.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            found = api.get(f"/campaigns/{campaign}", params={"limit": 1000}).json()
            if found["state"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    done.set()
    for thread in [*threads, *tickers]:
        thread.join(timeout=30)
    assert found["state"] == "completed", (found["state"], found["counts"], found["reason"])

    # every report was answered 200 (a repeat is accepted and changes nothing) and each
    # device sent its whole sequence
    for serial, sent in outcomes.items():
        assert [code for _, code, _ in sent] == [200] * 16, (serial, sent)
    expected = {d.serial: "rolled-back" if d.index in FAILING else "succeeded" for d in devices_}
    assert {d["serial"]: d["state"] for d in found["devices"]} == expected

    with fleet.database.read() as conn:
        history = conn.execute(
            select(devices.c.serial, device_history.c.summary, device_history.c.details)
            .join(devices, devices.c.id == device_history.c.device_id)
            .where(device_history.c.kind == "campaign")
            .order_by(device_history.c.id)
        ).all()
        places = conn.execute(
            select(devices.c.serial, campaign_devices.c.phase)
            .join(devices, devices.c.id == campaign_devices.c.device_id)
            .where(campaign_devices.c.campaign_id == campaign)
        ).all()
        entries = conn.execute(
            select(audit_log.c.action, audit_log.c.details)
            .where(audit_log.c.target == f"campaign:{campaign}")
            .order_by(audit_log.c.seq)
        ).all()
        verify_stored_chain(conn)
    # no device assigned twice; each transition recorded exactly once
    per_device: dict[str, list[str]] = {}
    for serial, _, details in history:
        per_device.setdefault(serial, []).append(json.loads(details)["state"])
    for d in devices_:
        final = "rolled-back" if d.index in FAILING else "succeeded"
        assert per_device[d.serial] == ["assigned", *STEPS, final], per_device[d.serial]
    # phases: 4 canaries, then up to 50 %, then the rest; counts add up
    phase_of = Counter(phase for _, phase in places)
    assert phase_of == {0: 4, 1: 16, 2: 20}
    progress = found["phase_progress"]
    assert [p["target"] for p in progress] == [4, 20, 40]
    assert [sum(p["states"].values()) for p in progress] == [4, 16, 20]
    assert sum(found["counts"].values()) == DEVICES
    # one audit entry per transition, whichever replica made it
    assert [e.action for e in entries] == [
        "campaign.create",
        "campaign.phase",
        "campaign.phase",
        "campaign.complete",
    ]
    replicas_seen = {json.loads(e.details).get("replica") for e in entries[1:]}
    assert all(r and ":" in r for r in replicas_seen)
    # the update level: the failed ones failed, the rest on target, exactly once each
    with fleet.api(operator["token"]) as api:
        level = api.get("/fleet/level", params={"devices": "true"}).json()
    [plant] = level["groups"]
    assert plant["counts"] == {"on_target": 36, "updating": 0, "failed": 4, "not_reached": 0}
    assert plant["devices"]["failed"] == sorted(f"R-{i:03d}" for i in FAILING)
    for replica in servers:
        assert replica.process.poll() is None  # both still serving

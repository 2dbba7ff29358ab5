"""A fleet that releases software and devices that install it: release managers (2 of 3),
published releases, enrolled devices with their TUF root and simulated A/B device, and an
in-process mirror seeded from the control plane's bytes (for attacks that need one)."""

from __future__ import annotations

import datetime as dt
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select
from tuf.api.exceptions import DownloadHTTPError

from garrison.agent.agent import Agent
from garrison.agent.identity import AgentConfig, StateDir
from garrison.store.tables import releases, tuf_metadata
from garrison.updates.client import UpdateClient
from garrison.updates.device_state import UpdateState, fetch_initial_root, provision_updates
from garrison.updates.fetchers import RangeFetcher
from garrison.updates.offline import configure_release_managers
from garrison.updates.simdevice import SimulatedDevice
from garrison.updates.tufclient import Repo
from tests.conftest import RunningFleet

MODEL = "gw-2"
MIRROR = "https://mirror/"


def image(seed: int, size: int = 256 * 1024) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Released:
    target: str
    image: bytes
    sha256: str


@dataclass
class Device:
    state: StateDir
    config: AgentConfig

    @property
    def updates(self) -> UpdateState:
        return UpdateState.of(self.state, self.config)

    @property
    def sim(self) -> SimulatedDevice:
        return self.updates.device()

    def snapshot(self) -> tuple[bytes, bytes, bytes]:
        """The boot environment and both slots' bytes: 'nothing installed' means equal."""
        sim = self.sim
        slot_b = sim.slot_path("b")
        b = slot_b.read_bytes() if slot_b.exists() else b""
        return sim.env_path.read_bytes(), sim.slot_path("a").read_bytes(), b


@dataclass
class World:
    """A served fleet with three release managers (threshold 2), a security officer and an
    operator."""

    fleet: RunningFleet
    tmp: Path
    signers: list[CryptoSigner]
    tokens: list[str]
    officer: str
    operator: str
    serials: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def publish(
        self,
        name: str = "fw",
        version: str = "1.1.0",
        *,
        hardware: tuple[str, ...] = (MODEL,),
        security_version: int = 1,
        health_checks: tuple[tuple[str, ...], ...] = (("true",),),
        install: str = "image",
        data: bytes | None = None,
        desired: bool = True,
    ) -> Released:
        """Upload, propose and have two of the three release managers sign. An image
        release then becomes (unless ``desired`` is false) the desired firmware of each of
        its hardware models' groups (:meth:`desire`), so devices of those models are offered
        it."""
        data = data if data is not None else image(zlib.crc32(f"{name} {version}".encode()))
        with self.fleet.api(self.tokens[0]) as api:
            stored = api.put("/artifacts", content=data).json()
            created = api.post(
                "/releases",
                json={
                    "name": name,
                    "version": version,
                    "hardware": list(hardware),
                    "security_version": security_version,
                    "install": install,
                    "health_checks": [list(c) for c in health_checks],
                    "sha256": stored["sha256"],
                },
            )
            assert created.status_code == 201, created.text
            release = created.json()
            for signer in self.signers[:2]:
                payload = api.get(f"/releases/{release['id']}/payload").content
                signature = signer.sign(payload)
                signed = api.post(
                    f"/releases/{release['id']}/signatures",
                    json={"keyid": signature.keyid, "signature": signature.signature},
                )
                assert signed.status_code == 200, signed.text
        assert signed.json()["state"] == "published"
        if install == "image" and desired:
            self.desire(name, version, hardware)
        return Released(release["target_path"], data, stored["sha256"])

    def desire(self, name: str, version: str, models: tuple[str, ...] = (MODEL,)) -> None:
        """An operator makes release ``name`` ``version`` the desired firmware of the
        dynamic group ``model-<m>`` (every device of model m) for each of ``models``."""
        with self.fleet.api(self.operator) as api:
            for model in models:
                group = f"model-{model}"
                if api.get(f"/groups/{group}").status_code == 404:
                    created = api.post(
                        "/groups",
                        json={"name": group, "kind": "dynamic", "filter": f'model == "{model}"'},
                    )
                    assert created.status_code == 201, created.text
                wanted = api.put(
                    f"/desired/groups/{group}",
                    json={"firmware": {"name": name, "version": version}},
                )
                assert wanted.status_code == 200, wanted.text

    def enroll(self, *, model: str = MODEL, hardware: str | None = None) -> Device:
        """A device enrolled over EST (its batch says ``model``), with its TUF root fetched
        over the fleet-pinned channel and a fresh simulated device."""
        serial = f"UPD-{next(self.serials)}"
        with self.fleet.api(self.officer) as api:
            batch = api.post(
                "/batches",
                json={
                    "name": f"b-{serial}",
                    "manufacturer": "acme",
                    "model": model,
                    "serials": [serial],
                },
            )
        assert batch.status_code == 201, batch.text
        token = batch.json()["tokens"][0]["token"]
        state = StateDir(self.tmp / serial)
        config = AgentConfig(
            serial=serial,
            server_url=self.fleet.url,
            hardware=model if hardware is None else hardware,
        )
        Agent(state).enroll(config, token, self.fleet.root_ca.read_bytes())
        provision_updates(state, config, fetch_initial_root(self.fleet.url, self.fleet.root_ca))
        return Device(state, config)

    def offline_device(self, *, hardware: str = MODEL, floor: int = 0) -> Device:
        """A device provisioned with the fleet's TUF root but no network (an unreachable
        server URL and no identity); its factory version has security version ``floor``."""
        serial = f"OFF-{next(self.serials)}"
        state = StateDir(self.tmp / serial)
        config = AgentConfig(serial=serial, server_url="https://127.0.0.1:9", hardware=hardware)
        state.save_config(config, self.fleet.root_ca.read_bytes())
        if floor:
            SimulatedDevice.create(state.root / "device", b"factory\n", "factory", floor)
        provision_updates(state, config, self.fleet.fleet.paths.tuf_root.read_bytes())
        return Device(state, config)

    def mirror(self) -> Mirror:
        """A mirror holding every metadata version and artifact the control plane has."""
        mirror = Mirror()
        with self.fleet.database.read() as conn:
            rows = conn.execute(
                select(tuf_metadata.c.role, tuf_metadata.c.version, tuf_metadata.c.data)
            ).all()
            published = conn.execute(
                select(releases.c.target_path, releases.c.sha256).where(
                    releases.c.state == "published"
                )
            ).all()
        newest: dict[str, int] = {}
        for role, version, data in rows:
            mirror.files[f"metadata/{version}.{role}.json"] = bytes(data)
            if version >= newest.get(role, 0):
                newest[role] = version
                if role == "timestamp":
                    mirror.files["metadata/timestamp.json"] = bytes(data)
        for path, sha256 in published:
            directory, _, name = path.rpartition("/")
            artifact = self.fleet.fleet.paths.artifacts / sha256
            mirror.files[f"targets/{directory}/{sha256}.{name}"] = artifact.read_bytes()
        return mirror

    def mirror_client(self, device: Device, mirror: Mirror, **kwargs: object) -> UpdateClient:
        repo = Repo(mirror, f"{MIRROR}metadata/", f"{MIRROR}targets/")
        return UpdateClient(device.updates, repo, hardware=device.config.hardware, **kwargs)  # type: ignore[arg-type]


class Mirror(RangeFetcher):
    """An in-process mirror: path → bytes (or a callable yielding chunks, for endless data).
    Nothing it serves is trusted; it records what was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes | Callable[[], Iterator[bytes]]] = {}
        self.requests: list[tuple[str, int]] = []

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        path = url.removeprefix(MIRROR)
        self.requests.append((path, offset))
        found = self.files.get(path)
        if found is None:
            raise DownloadHTTPError(f"not found: {url}", 404)
        if callable(found):
            return found()
        return iter([found[start : start + 65536] for start in range(offset, len(found), 65536)])


@pytest.fixture
def world(served: RunningFleet, tmp_path: Path) -> World:
    signers = [CryptoSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(3)]
    configure_release_managers(
        served.fleet, served.database, [s.public_key for s in signers], 2, dt.datetime.now(dt.UTC)
    )
    tokens = []
    with served.api() as api:
        for n in range(3):
            made = api.post("/principals", json={"name": f"rm{n}", "role": "release-manager"})
            tokens.append(made.json()["token"])
        officer = api.post("/principals", json={"name": "sofia", "role": "security-officer"})
        api.post("/principals", json={"name": "acme", "role": "manufacturer"})
        operator = api.post("/principals", json={"name": "fleet-operator", "role": "operator"})
    return World(
        served,
        tmp_path / "devices",
        signers,
        tokens,
        officer.json()["token"],
        operator.json()["token"],
    )

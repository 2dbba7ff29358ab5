"""Attacks on the device update client, each refused with a clear error and nothing
installed: the boot environment and both slots are byte for byte what they were.

Against the running control plane: a tampered artifact, tampered metadata in the database,
a release signed by one release manager under 2 of 3 (written straight into the database,
as an attacker holding the control plane and its online keys could), other hardware, a
downgrade below the security floor. Against an in-process mirror seeded from the control
plane's bytes: rollback of timestamp, snapshot and releases versions, frozen (expired)
metadata, mix-and-match, and artifacts longer than declared or endless.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Timestamp

from garrison.store.tables import tuf_metadata
from garrison.updates.bootenv import DowngradeRefused
from garrison.updates.client import UpdateClient
from garrison.updates.download import ArtifactRefused
from garrison.updates.eligibility import NotForThisDevice
from garrison.updates.repository import (
    Repository,
    add_release_signature,
    propose_release,
    refresh_online,
)
from garrison.updates.store import load_repository, save_repository
from garrison.updates.tufclient import MetadataRefused
from tests.updates.conftest import Device, World

NOW = dt.datetime.now(dt.UTC)
# The mirror attacks never reach the database: one backend is enough for them.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def published(world: World) -> tuple[World, Device]:
    """Two releases published (releases metadata v1 and v2) and a fresh gw-2 device."""
    world.publish("fw", "1.1.0", security_version=1)
    world.publish("fw", "1.2.0", security_version=2)
    return world, world.enroll()


def refused_untouched(
    device: Device, client: UpdateClient, target: str, error: type[Exception], match: str
) -> pytest.ExceptionInfo[Exception]:
    """Run a full update of ``target``; it must raise ``error`` and install nothing."""
    before = device.snapshot()
    with pytest.raises(error, match=match) as refused:
        client.update(target)
    assert device.snapshot() == before
    assert not any(device.updates.downloads.glob("*[0-9a-f]"))  # no verified artifact kept
    return refused


# -- against the control plane --------------------------------------------------------


def test_tampered_artifact_on_the_server(published: tuple[World, Device]) -> None:
    world, device = published
    with world.fleet.database.read() as conn:
        sha = (
            load_repository(conn).releases.signed.targets["fw/1.2.0/fw-1.2.0.img"].hashes["sha256"]
        )  # type: ignore[union-attr]
    artifact = world.fleet.fleet.paths.artifacts / sha
    data = bytearray(artifact.read_bytes())
    data[1000] ^= 0x01
    artifact.write_bytes(bytes(data))
    with UpdateClient.for_agent(device.state) as client:
        refused = refused_untouched(
            device, client, "fw/1.2.0/fw-1.2.0.img", ArtifactRefused, "does not have the digest"
        )
    assert "tampered" in refused.value.hint  # type: ignore[attr-defined]
    assert not (device.updates.downloads / f"{sha}.part").exists()


def test_tampered_metadata_in_the_database(published: tuple[World, Device]) -> None:
    world, device = published
    with world.fleet.database.write() as conn:
        row = conn.execute(
            select(tuf_metadata.c.version, tuf_metadata.c.data)
            .where(tuf_metadata.c.role == "releases")
            .order_by(tuf_metadata.c.version.desc())
        ).first()
        assert row is not None
        data = bytes(row.data)
        flipped = re.sub(rb'"security_version":2', b'"security_version":9', data)
        assert flipped != data and len(flipped) == len(data)
        conn.execute(
            update(tuf_metadata)
            .where(tuf_metadata.c.role == "releases", tuf_metadata.c.version == row.version)
            .values(data=flipped)
        )
    with UpdateClient.for_agent(device.state) as client:
        refused = refused_untouched(
            device,
            client,
            "fw/1.2.0/fw-1.2.0.img",
            MetadataRefused,
            "releases was signed by 0/2 keys",
        )
    assert "not signed by enough trusted keys" in refused.value.hint  # type: ignore[attr-defined]


def test_a_release_signed_by_one_manager_written_into_the_database(
    published: tuple[World, Device],
) -> None:
    """An attacker with the control plane's database and online keys, and one release
    manager's key, still cannot ship software."""
    world, device = published
    evil = b"evil firmware" * 1000
    upload = world.fleet.fleet.paths.artifacts
    target = TargetFile.from_data("fw/6.6.6/fw-6.6.6.img", evil, ["sha256"])
    (upload / target.hashes["sha256"]).write_bytes(evil)
    target.unrecognized_fields["custom"] = {
        "garrison": {
            "name": "fw",
            "version": "6.6.6",
            "hardware": ["gw-2"],
            "security_version": 9,
            "install": "image",
            "health_checks": [],
        }
    }
    fleet = world.fleet.fleet
    with world.fleet.database.write() as conn:
        repo = load_repository(conn)
        proposal = propose_release(repo, target, NOW)
        add_release_signature(repo, proposal, world.signers[0].sign(proposal.signed_bytes))
        forced = dataclasses.replace(repo, releases=proposal)
        forced = refresh_online(
            forced, fleet.snapshot_signer, fleet.timestamp_signer, NOW, new_snapshot=True
        )
        save_repository(conn, repo, forced, NOW)
    with UpdateClient.for_agent(device.state) as client:
        refused_untouched(
            device,
            client,
            "fw/6.6.6/fw-6.6.6.img",
            MetadataRefused,
            "releases was signed by 1/2 keys",
        )


@sqlite_only
def test_a_release_for_other_hardware(published: tuple[World, Device]) -> None:
    world, device = published
    other = world.publish("fw-x", "1.0.0", hardware=("gw-9", "gw-10"))
    with UpdateClient.for_agent(device.state) as client:
        refused = refused_untouched(
            device,
            client,
            other.target,
            NotForThisDevice,
            "is for hardware gw-10, gw-9, not this device's gw-2",
        )
    assert "built for this hardware" in refused.value.hint  # type: ignore[attr-defined]
    unknown = world.offline_device(hardware="")
    with pytest.raises(NotForThisDevice, match="no hardware model configured"):
        world.mirror_client(unknown, world.mirror()).update("fw/1.2.0/fw-1.2.0.img")


@sqlite_only
def test_a_downgrade_below_the_security_floor(published: tuple[World, Device]) -> None:
    _, device = published
    with UpdateClient.for_agent(device.state) as client:
        done = client.update("fw/1.2.0/fw-1.2.0.img")  # security version 2: the floor is 2
    assert done is not None and done.outcome == "committed"
    with UpdateClient.for_agent(device.state) as client:
        refused = refused_untouched(
            device,
            client,
            "fw/1.1.0/fw-1.1.0.img",
            DowngradeRefused,
            "security version 1, below this device's anti-rollback floor 2",
        )
    assert "security version 2 or higher" in refused.value.hint  # type: ignore[attr-defined]
    assert device.updates.downloads.exists() and not list(device.updates.downloads.iterdir())


# -- against a mirror ---------------------------------------------------------------------


def _signed_timestamp(world: World, version: int, snapshot_version: int) -> bytes:
    md = Metadata(
        Timestamp(
            version=version,
            expires=NOW + dt.timedelta(days=1),
            snapshot_meta=MetaFile(snapshot_version),
        )
    )
    md.sign(world.fleet.fleet.timestamp_signer)
    return md.to_bytes()


def _current(world: World) -> Repository:
    with world.fleet.database.read() as conn:
        return load_repository(conn)


@sqlite_only
def test_rollback_of_the_timestamp(published: tuple[World, Device]) -> None:
    world, device = published
    mirror = world.mirror()
    client = world.mirror_client(device, mirror)
    client.check("fw/1.2.0/fw-1.2.0.img")  # the device has seen the newest timestamp
    newest = _current(world).timestamp.signed.version
    mirror.files["metadata/timestamp.json"] = mirror.files[f"metadata/{newest - 1}.timestamp.json"]
    refused = refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.2.0/fw-1.2.0.img",
        MetadataRefused,
        f"timestamp version {newest - 1} must be >= {newest}",
    )
    assert "rollback or mix-and-match" in refused.value.hint  # type: ignore[attr-defined]


@sqlite_only
def test_rollback_of_the_snapshot(published: tuple[World, Device]) -> None:
    """Even signed with the online timestamp key: an older snapshot than already seen."""
    world, device = published
    mirror = world.mirror()
    world.mirror_client(device, mirror).check("fw/1.2.0/fw-1.2.0.img")
    repo = _current(world)
    older = repo.snapshot.signed.version - 1
    mirror.files["metadata/timestamp.json"] = _signed_timestamp(
        world, repo.timestamp.signed.version + 1, older
    )
    refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.2.0/fw-1.2.0.img",
        MetadataRefused,
        f"snapshot version must be >= {older + 1}",
    )


@sqlite_only
def test_rollback_of_the_releases_metadata(published: tuple[World, Device]) -> None:
    """A new snapshot (online keys) naming releases v1 after the device saw v2."""
    world, device = published
    mirror = world.mirror()
    world.mirror_client(device, mirror).check("fw/1.2.0/fw-1.2.0.img")
    repo = _current(world)
    snapshot = Metadata(
        Snapshot(
            version=repo.snapshot.signed.version + 1,
            expires=NOW + dt.timedelta(days=7),
            meta={
                "targets.json": MetaFile(repo.targets.signed.version),
                "releases.json": MetaFile(1),
            },
        )
    )
    snapshot.sign(world.fleet.fleet.snapshot_signer)
    mirror.files[f"metadata/{snapshot.signed.version}.snapshot.json"] = snapshot.to_bytes()
    mirror.files["metadata/timestamp.json"] = _signed_timestamp(
        world, repo.timestamp.signed.version + 1, snapshot.signed.version
    )
    refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.1.0/fw-1.1.0.img",
        MetadataRefused,
        "releases.json version",
    )


@sqlite_only
def test_frozen_metadata(published: tuple[World, Device]) -> None:
    """A mirror that keeps serving the same (once valid) metadata: two days later the
    timestamp has expired, and the device refuses to act on it."""
    world, device = published
    mirror = world.mirror()
    assert world.mirror_client(device, mirror).check("fw/1.2.0/fw-1.2.0.img")
    later = world.mirror_client(device, mirror, clock=lambda: NOW + dt.timedelta(days=2))
    refused = refused_untouched(
        device, later, "fw/1.2.0/fw-1.2.0.img", MetadataRefused, "timestamp.json is expired"
    )
    assert "frozen" in refused.value.hint  # type: ignore[attr-defined]
    fresh = world.offline_device()  # never saw anything: the same refusal
    refused_untouched(
        fresh,
        world.mirror_client(fresh, mirror, clock=later.clock),
        "fw/1.2.0/fw-1.2.0.img",
        MetadataRefused,
        "expired",
    )


@sqlite_only
def test_mix_and_match(published: tuple[World, Device]) -> None:
    """Snapshot and timestamp of one state, releases metadata of another."""
    world, device = published
    mirror = world.mirror()
    mirror.files["metadata/2.releases.json"] = mirror.files["metadata/1.releases.json"]
    refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.1.0/fw-1.1.0.img",
        MetadataRefused,
        "Expected releases v2, got v1",
    )


def _artifact_key(world: World, target: str) -> str:
    info = _current(world).releases.signed.targets[target]  # type: ignore[union-attr]
    directory, _, name = target.rpartition("/")
    return f"targets/{directory}/{info.hashes['sha256']}.{name}"


@sqlite_only
def test_an_artifact_longer_than_declared(published: tuple[World, Device]) -> None:
    world, device = published
    mirror = world.mirror()
    key = _artifact_key(world, "fw/1.2.0/fw-1.2.0.img")
    mirror.files[key] = mirror.files[key] + b"\x00trailing payload"  # type: ignore[operator]
    refused = refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.2.0/fw-1.2.0.img",
        ArtifactRefused,
        "longer than the 262144 bytes",
    )
    assert "extra (or endless) data" in refused.value.hint  # type: ignore[attr-defined]


@sqlite_only
def test_endless_data_is_cut_off_at_the_declared_length(published: tuple[World, Device]) -> None:
    world, device = published
    mirror = world.mirror()
    sent = [0]

    def endless() -> Iterator[bytes]:
        while True:
            sent[0] += 1
            yield b"\xff" * 65536

    mirror.files[_artifact_key(world, "fw/1.2.0/fw-1.2.0.img")] = endless
    refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.2.0/fw-1.2.0.img",
        ArtifactRefused,
        "longer than",
    )
    assert sent[0] == 262144 // 65536 + 1  # not one chunk read past the refusal


@sqlite_only
def test_metadata_longer_than_allowed(published: tuple[World, Device]) -> None:
    world, device = published
    mirror = world.mirror()

    def endless() -> Iterator[bytes]:
        while True:
            yield b" " * 65536

    mirror.files["metadata/timestamp.json"] = endless
    refused_untouched(
        device,
        world.mirror_client(device, mirror),
        "fw/1.2.0/fw-1.2.0.img",
        MetadataRefused,
        "longer than allowed",
    )

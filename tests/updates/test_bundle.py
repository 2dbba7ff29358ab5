"""Offline updates: 'release export' writes one file that a device with no network verifies
against its own TUF trust and installs; tampered or stale bundles are refused."""

from __future__ import annotations

import datetime as dt
import io
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from garrison.updates.bundle import INDEX, MAX_INDEX_BYTES, Bundle, BundleInvalid
from garrison.updates.client import UpdateClient
from garrison.updates.download import ArtifactRefused
from garrison.updates.export import export_bundle
from garrison.updates.fetchers import HttpsFetcher
from garrison.updates.tufclient import MetadataRefused, Repo
from tests.updates.conftest import Device, World


def export(world: World, target: str, out: Path) -> Path:
    fetcher = HttpsFetcher.pinned(world.fleet.root_ca)
    base = f"{world.fleet.url}/tuf/"
    repo = Repo(fetcher, base + "metadata/", base + "targets/")
    initial = world.fleet.fleet.paths.tuf_root.read_bytes()
    try:
        export_bundle(repo, initial, target, out, dt.datetime.now(dt.UTC))
    finally:
        fetcher.close()
    return out


def rewrite(bundle: Path, out: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of ``bundle`` with every member's bytes passed through ``change``."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as copy:
        for member in source.getmembers():
            stream = source.extractfile(member)
            assert stream is not None
            data = change(member.name, stream.read())
            member.size = len(data)
            copy.addfile(member, io.BytesIO(data))
    return out


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def install(device: Device, bundle: Path, **kwargs: object) -> str:
    with UpdateClient.for_bundle(device.state, bundle, **kwargs) as client:  # type: ignore[arg-type]
        result = client.update()
    assert result is not None
    return result.outcome


def test_export_then_install_without_network(world: World, tmp_path: Path) -> None:
    release = world.publish("fw", "2.0.0", security_version=2)
    bundle = export(world, release.target, tmp_path / "fw.bundle")
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    assert {
        "garrison-bundle.json",
        "metadata/1.root.json",
        "metadata/timestamp.json",
        "metadata/1.releases.json",
        f"targets/fw/2.0.0/{release.sha256}.fw-2.0.0.img",
    } <= names
    device = world.offline_device()  # its server URL does not answer
    assert install(device, bundle) == "committed"
    assert device.sim.boot().version == "2.0.0" and device.sim.load_env().security_floor == 2
    assert install(device, bundle) == "current"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tampered_bundles_are_refused(world: World, tmp_path: Path) -> None:
    release = world.publish("fw", "2.0.0", security_version=2)
    bundle = export(world, release.target, tmp_path / "fw.bundle")
    device = world.offline_device()
    before = device.snapshot()

    def corrupt(name: str, data: bytes) -> bytes:
        return flip(data, 5000) if name.startswith("targets/") else data

    bad_artifact = rewrite(bundle, tmp_path / "a.bundle", corrupt)
    with pytest.raises(ArtifactRefused, match="does not have the digest"):
        install(device, bad_artifact)

    def forge(name: str, data: bytes) -> bytes:
        if name.endswith(".releases.json"):
            return data.replace(b'"security_version":2', b'"security_version":7')
        return data

    fresh = world.offline_device()  # (the first device keeps the releases it verified)
    fresh_before = fresh.snapshot()
    with pytest.raises(MetadataRefused, match="releases was signed by 0/2 keys"):
        install(fresh, rewrite(bundle, tmp_path / "m.bundle", forge))
    assert fresh.snapshot() == fresh_before
    not_a_bundle = tmp_path / "junk.bundle"
    not_a_bundle.write_bytes(b"\x00" * 4096)
    with pytest.raises(BundleInvalid, match="not an update bundle"):
        install(device, not_a_bundle)
    assert device.snapshot() == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bundles_are_judged_at_their_freshness_and_never_go_back(
    world: World, tmp_path: Path
) -> None:
    first = export(world, world.publish("fw", "2.0.0").target, tmp_path / "1.bundle")
    second = export(world, world.publish("fw", "2.1.0").target, tmp_path / "2.bundle")
    now = dt.datetime.now(dt.UTC)
    late = world.offline_device()  # carried to the site: its timestamp has expired by now
    assert install(late, first, clock=lambda: now + dt.timedelta(days=3)) == "committed"
    stale = world.offline_device()
    with pytest.raises(BundleInvalid, match="more than 30 days ago"):
        install(stale, first, clock=lambda: now + dt.timedelta(days=40))

    device = world.offline_device()
    assert install(device, second) == "committed"
    before = device.snapshot()
    with pytest.raises(MetadataRefused, match="must be >=") as refused:
        install(device, first)  # older metadata than the device has already seen
    assert "rollback" in refused.value.hint and device.snapshot() == before


def handmade(out: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """A tar of ``(name, bytes)`` regular files and ``(name, "-> target")`` symlinks."""
    with tarfile.open(out, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("-> ")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out


GOOD_INDEX = b'{"format": 1, "target": "fw/2.0.0/fw-2.0.0.img"}'


@pytest.fixture
def opened_tars(monkeypatch: pytest.MonkeyPatch) -> list[tarfile.TarFile]:
    """Every tar file opened during the test, to check that refusals close theirs."""
    opened: list[tarfile.TarFile] = []
    original = tarfile.open

    def recording(*args: object, **kwargs: object) -> tarfile.TarFile:
        tar = original(*args, **kwargs)  # type: ignore[call-overload]
        opened.append(tar)
        return tar  # type: ignore[no-any-return]

    monkeypatch.setattr(tarfile, "open", recording)
    return opened


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([(INDEX, b"[1, 2]")], f"{INDEX} is not a JSON object"),
        ([(INDEX, b'"fw"')], f"{INDEX} is not a JSON object"),
        ([(INDEX, b"null")], f"{INDEX} is not a JSON object"),
        ([(INDEX, b"{not json")], f"{INDEX} is not JSON"),
        ([(INDEX, b'{"format": 2, "target": "fw"}')], "unknown bundle format 2"),
        ([(INDEX, b'{"target": "fw"}')], "unknown bundle format None"),
        ([(INDEX, b'{"format": 1}')], f"{INDEX} names no target"),
        ([(INDEX, b'{"format": 1, "target": ""}')], f"{INDEX} names no target"),
        ([(INDEX, b'{"format": 1, "target": 7}')], f"{INDEX} names no target"),
        ([(INDEX, b" " * MAX_INDEX_BYTES + GOOD_INDEX)], f"{INDEX} is larger than"),
        ([("metadata/timestamp.json", b"{}")], f"it holds no {INDEX}"),
        ([(INDEX, GOOD_INDEX), ("metadata/1.root.json", "-> /etc/passwd")], "not a regular file"),
        ([(INDEX, GOOD_INDEX), (INDEX, b'{"format": 1, "target": "evil"}')], "appears twice"),
    ],
)
def test_malformed_bundles_are_refused_and_closed(
    tmp_path: Path,
    opened_tars: list[tarfile.TarFile],
    members: list[tuple[str, bytes | str]],
    reason: str,
) -> None:
    path = handmade(tmp_path / "bad.bundle", members)
    opened_tars.clear()
    with pytest.raises(BundleInvalid, match="is not an update bundle") as refused:
        Bundle(path)
    assert reason in str(refused.value)
    assert [tar.closed for tar in opened_tars] == [True]


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (None, "holds no metadata/timestamp.json"),
        (b"{not json", "metadata/timestamp.json is not TUF metadata"),
        (b'{"signed": {}, "signatures": []}', "metadata/timestamp.json is not TUF metadata"),
        (b"[]", "metadata/timestamp.json is not TUF metadata"),
        (b"x" * (64 * 1024 + 1), "is larger than"),
    ],
)
def test_bundles_without_a_readable_timestamp_are_refused(
    tmp_path: Path, timestamp: bytes | None, reason: str
) -> None:
    members: list[tuple[str, bytes | str]] = [(INDEX, GOOD_INDEX)]
    if timestamp is not None:
        members.append(("metadata/timestamp.json", timestamp))
    bundle = Bundle(handmade(tmp_path / "bad.bundle", members))
    try:
        with pytest.raises(BundleInvalid, match=re.escape(reason)):
            bundle.timestamp_expires()
    finally:
        bundle.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_bundle_whose_timestamp_is_another_role_is_refused(world: World, tmp_path: Path) -> None:
    root = world.fleet.fleet.paths.tuf_root.read_bytes()
    path = handmade(
        tmp_path / "bad.bundle", [(INDEX, GOOD_INDEX), ("metadata/timestamp.json", root)]
    )
    device = world.offline_device()
    with pytest.raises(BundleInvalid, match=r"metadata/timestamp\.json is not a timestamp"):
        install(device, path)

"""The control plane's release rules (:mod:`garrison.updates.releases`), checked without a
server: what a release manager may declare, and that a device accepts whatever the control
plane lets through."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from garrison.errors import InvalidRequest
from garrison.updates import apps, releases
from garrison.updates.releases import ReleaseService, ReleaseSpec
from garrison.updates.store import metadata_file
from tests.conftest import Clock, RunningFleet

SHA = "0" * 64
FILES = {"bin/app": b"app\n"}


def spec(**changes: object) -> ReleaseSpec:
    fields: dict[str, object] = {
        "name": "pump",
        "version": "1.0",
        "hardware": ["gw-2"],
        "security_version": 1,
        "install": "app",
        "health_checks": [["true"]],
        "sha256": SHA,
    }
    fields.update(changes)
    return ReleaseSpec(**fields)  # type: ignore[arg-type]


def accepted_by_control_plane(release: ReleaseSpec) -> bool:
    try:
        release.validate()
    except InvalidRequest:
        return False
    return True


def accepted_by_device(root: Path, release: ReleaseSpec) -> bool:
    try:
        apps.install_app(root, release.name, release.version, FILES, apps.files_digest(FILES))
    except apps.AppInstallError:
        return False
    return True


@pytest.mark.parametrize(
    "version",
    ["1.0", "1.0~rc1", "2.0+build.7", "1.0-beta", "V1", "1.0_beta", "current", "previous",
     ".1", "-1", "a" * 64, "a" * 65, "1 0", "1/0", ""],
)  # fmt: skip
def test_device_accepts_exactly_the_versions_the_control_plane_does(
    tmp_path: Path, version: str
) -> None:
    release = spec(version=version)
    assert accepted_by_device(tmp_path, release) == accepted_by_control_plane(release)


@pytest.mark.parametrize(
    "name", ["pump", "pump-2.x_y", "Pump", "current", "previous", ".pump", "a" * 64, "a" * 65]
)
def test_device_accepts_exactly_the_app_names_the_control_plane_does(
    tmp_path: Path, name: str
) -> None:
    release = spec(name=name)
    assert accepted_by_device(tmp_path, release) == accepted_by_control_plane(release)


def service(fleet: RunningFleet, clock: Clock) -> ReleaseService:
    paths = fleet.fleet.paths
    signers = fleet.fleet.snapshot_signer, fleet.fleet.timestamp_signer
    return ReleaseService(fleet.database, paths.artifacts, *signers, clock)


def test_serving_a_fresh_timestamp_reads_only_the_online_roles(
    fleet: RunningFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    releases_service = service(fleet, Clock())
    with fleet.database.read() as conn:
        stored = metadata_file(conn, "timestamp", None)

    def load_repository(*_: object) -> None:
        raise AssertionError("the whole repository was loaded to serve a fresh timestamp")

    monkeypatch.setattr(releases, "load_repository", load_repository)
    served = releases_service.metadata("timestamp", None)
    assert served is not None and served == stored
    assert Metadata.from_bytes(served).signed.version == 1

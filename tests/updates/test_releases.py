"""The control plane's release service (:mod:`garrison.updates.releases`), checked without a
server: what a release manager may declare (and that a device accepts whatever the control
plane lets through), artifact uploads, signature input, and the online roles kept fresh."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Snapshot, Timestamp

from garrison.errors import InvalidRequest, PolicyError
from garrison.updates import apps, releases
from garrison.updates.offline import configure_release_managers
from garrison.updates.releases import ReleaseService, ReleaseSpec
from garrison.updates.store import load_online, metadata_file
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


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"name": "Pump"}, "release name 'Pump' is not valid"),
        ({"version": "1 0"}, "version '1 0' is not valid"),
        ({"hardware": []}, "hardware must list at least one"),
        ({"hardware": ["gw-2", "GW 3"]}, "hardware must list at least one"),
        ({"security_version": -1}, "security_version must be between"),
        ({"security_version": 2**31}, "security_version must be between"),
        ({"install": "rpm"}, "install must be one of image, app"),
        ({"health_checks": [["true"]] * 17}, "at most 16 health checks"),
        ({"health_checks": [[]]}, "at most 16 health checks"),
        ({"health_checks": [["x"] * 33]}, "at most 16 health checks"),
        ({"sha256": "A" * 64}, "sha256 must be 64 lower-case hex digits"),
        ({"sha256": "0" * 63}, "sha256 must be 64 lower-case hex digits"),
    ],
)
def test_release_spec_refusals(changes: dict[str, object], refusal: str) -> None:
    spec().validate()
    with pytest.raises(InvalidRequest, match=refusal):
        spec(**changes).validate()


# -- artifacts -------------------------------------------------------------------------


def test_an_empty_artifact_is_refused(fleet: RunningFleet) -> None:
    upload = service(fleet, Clock()).upload()
    with pytest.raises(InvalidRequest, match="empty artifact"):
        upload.finish()
    upload.abort()
    assert list(fleet.fleet.paths.artifacts.iterdir()) == []


def test_an_oversize_artifact_is_refused(
    fleet: RunningFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(releases, "MAX_ARTIFACT_BYTES", 10)
    releases_service = service(fleet, Clock())
    upload = releases_service.upload()
    upload.write(b"12345")
    upload.write(b"67890")  # exactly the limit
    with pytest.raises(InvalidRequest, match="larger than 10 bytes"):
        upload.write(b"!")
    upload.abort()
    assert list(fleet.fleet.paths.artifacts.iterdir()) == []
    fitting = releases_service.upload()
    fitting.write(b"1234567890")
    sha256, length = fitting.finish()
    assert length == 10 and releases_service.artifact_path(sha256) is not None


# -- signatures ------------------------------------------------------------------------


def proposed(fleet: RunningFleet) -> tuple[ReleaseService, int, CryptoSigner]:
    """A release of a small image awaiting the signature of the one release manager."""
    clock = Clock()
    manager = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
    configure_release_managers(fleet.fleet, fleet.database, [manager.public_key], 1, clock())
    releases_service = service(fleet, clock)
    upload = releases_service.upload()
    upload.write(b"firmware")
    sha256, _ = upload.finish()
    release = releases_service.propose(spec(install="image", sha256=sha256), "rm")
    return releases_service, release.id, manager


@pytest.mark.parametrize(
    ("keyid", "signature"),
    [
        ("k", "not hex"),
        ("k", "ABCD"),  # hex, but not as keys sign: lower case only
        ("k", ""),
        ("k", "a" * 1025),
        ("k" * 129, "abcd"),
    ],
)
def test_sign_refuses_malformed_input(fleet: RunningFleet, keyid: str, signature: str) -> None:
    releases_service, release_id, _ = proposed(fleet)
    with pytest.raises(InvalidRequest, match="signature must be hex and keyid at most 128"):
        releases_service.sign(release_id, keyid, signature, "rm")
    assert releases_service.list()[0].state == "pending"


def test_sign_refuses_unknown_and_published_releases(fleet: RunningFleet) -> None:
    releases_service, release_id, manager = proposed(fleet)
    signature = manager.sign(releases_service.payload(release_id))
    with pytest.raises(LookupError, match="no release 999"):
        releases_service.sign(999, signature.keyid, signature.signature, "rm")
    published = releases_service.sign(release_id, signature.keyid, signature.signature, "rm")
    assert published.state == "published"
    with pytest.raises(PolicyError, match="is published, not awaiting signatures"):
        releases_service.sign(release_id, signature.keyid, signature.signature, "rm")


# -- the online roles ------------------------------------------------------------------


def online(fleet: RunningFleet) -> tuple[Metadata[Snapshot], Metadata[Timestamp]]:
    with fleet.database.read() as conn:
        return load_online(conn)


def test_online_roles_are_re_signed_past_half_their_validity(fleet: RunningFleet) -> None:
    clock = Clock()
    releases_service = service(fleet, clock)
    snapshot, timestamp = online(fleet)

    clock.advance(dt.timedelta(hours=11))  # timestamp (1 day): more than half left
    releases_service.metadata("timestamp", None)
    assert [md.signed.version for md in online(fleet)] == [
        snapshot.signed.version,
        timestamp.signed.version,
    ]

    clock.advance(dt.timedelta(hours=2))  # 13 h: the timestamp is due, the snapshot is not
    served = releases_service.metadata("timestamp", None)
    assert served is not None
    fresh = Metadata[Timestamp].from_bytes(served).signed
    assert fresh.version == timestamp.signed.version + 1
    assert fresh.expires > clock() + dt.timedelta(hours=23)
    assert fresh.snapshot_meta.version == snapshot.signed.version
    assert online(fleet)[0].signed.version == snapshot.signed.version

    clock.advance(dt.timedelta(days=3, hours=12))  # 3.5 days: the snapshot is due too
    releases_service.refresh()
    new_snapshot, new_timestamp = online(fleet)
    assert new_snapshot.signed.version == snapshot.signed.version + 1
    assert new_snapshot.signed.expires > clock() + dt.timedelta(days=6)
    assert new_timestamp.signed.snapshot_meta.version == new_snapshot.signed.version

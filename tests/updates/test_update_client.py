"""The device update client against the running control plane, end to end: a device enrolls,
release managers publish (2 of 3), the device is offered the release, verifies it through
TUF over mutual TLS, downloads it (resumably), installs it into its inactive slot, boots it,
checks its health and commits, or returns to the previous version by itself."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import pytest

from garrison.updates import apps
from garrison.updates.bootenv import DowngradeRefused, RollbackUnavailable, UpdateStateError
from garrison.updates.client import UpdateClient, rollback_device
from garrison.updates.download import DownloadInterrupted
from garrison.updates.eligibility import NotForThisDevice, PreviouslyRejected
from garrison.updates.fetchers import HttpsFetcher, RangeFetcher, device_channel
from garrison.updates.tufclient import Repo
from tests.updates.conftest import Device, World


def running(device: Device) -> str:
    return device.sim.boot().version


def test_update_commit_self_rollback_and_operator_rollback(world: World) -> None:
    device = world.enroll()
    with UpdateClient.for_agent(device.state) as client:
        assert client.update() is None  # nothing published yet: 204
    v11 = world.publish("fw", "1.1.0", security_version=1)

    with UpdateClient.for_agent(device.state) as client:
        assert client.offered() == v11.target
        result = client.update()
    assert result is not None and result.outcome == "committed", result
    assert result.version == "1.1.0" and result.health == "healthy"
    env = device.sim.load_env()
    assert env.active == "b" and env.security_floor == 1 and env.slots["b"].state == "good"  # type: ignore[union-attr]
    assert device.sim.slot_path("b").read_bytes() == v11.image
    assert running(device) == "1.1.0"
    assert not list(device.updates.downloads.iterdir())  # the download is gone once installed

    with UpdateClient.for_agent(device.state) as client:
        again = client.update()
    assert again is not None and again.outcome == "current"

    # The factory version is below the floor the commit raised: no operator rollback to it.
    with pytest.raises(DowngradeRefused, match="security floor 1"):
        rollback_device(device.updates)

    world.publish("fw", "1.2.0", security_version=1, health_checks=(("false",),))
    with UpdateClient.for_agent(device.state) as client:
        failed = client.update()
    assert failed is not None and failed.outcome == "rolled-back", failed
    assert failed.version == "1.1.0" and "rejected" in failed.event
    assert "false: exit status 1" in failed.health
    assert running(device) == "1.1.0"
    with UpdateClient.for_agent(device.state) as client, pytest.raises(PreviouslyRejected):
        client.update()

    world.publish("fw", "1.3.0", security_version=1)
    with UpdateClient.for_agent(device.state) as client:
        fixed = client.update()
    assert fixed is not None and fixed.outcome == "committed" and running(device) == "1.3.0"

    back = rollback_device(device.updates)  # the operator's way back, no network
    assert back.outcome == "committed" and back.version == "1.1.0", back
    assert back.event.startswith("committed: slot") and running(device) == "1.1.0"
    with pytest.raises(RollbackUnavailable, match="no previous good version") as refused:
        rollback_device(world.enroll().updates)  # a new device has nowhere to go back to
    assert "install the wanted release" in refused.value.hint


def test_the_control_plane_offers_only_releases_for_the_devices_hardware(world: World) -> None:
    """Each model's group desires its newest release (World.publish); a release desired for
    a device of another model is never offered to it."""
    gw2 = world.publish("fw", "1.0.0")
    gw3_release = world.publish("fw3", "1.0.0", hardware=("gw-3",))
    world.publish("fw3", "1.0.1", hardware=("gw-3", "gw-4"))
    newest_gw2 = world.publish("fw", "1.0.1")
    gw2_device, gw3_device = world.enroll(), world.enroll(model="gw-3")
    other = world.enroll(model="gw-9")
    with UpdateClient.for_agent(gw2_device.state) as client:
        assert client.offered() == newest_gw2.target != gw2.target
    with UpdateClient.for_agent(gw3_device.state) as client:
        assert client.offered() == "fw3/1.0.1/fw3-1.0.1.img" != gw3_release.target
    with UpdateClient.for_agent(other.state) as client:
        assert client.offered() is None
    with world.fleet.api(world.operator) as api:
        serial = other.config.serial  # a gw-9 device told to run a gw-2 release: not offered
        pinned = api.put(
            f"/desired/devices/{serial}", json={"firmware": {"name": "fw", "version": "1.0.1"}}
        )
        assert pinned.status_code == 200, pinned.text
    with UpdateClient.for_agent(other.state) as client:
        assert client.offered() is None
    with world.fleet.client() as anonymous:  # the device is its certificate: none, no answer
        refused = anonymous.get("/device/v1/update")
    assert refused.status_code == 403 and "client certificate is required" in refused.text


def test_only_checked_targets_can_be_downloaded_or_installed(world: World) -> None:
    release = world.publish()
    device = world.enroll()
    with UpdateClient.for_agent(device.state) as client:
        target = client.check(release.target)
        forged = type(target)(
            target.length, {"sha256": "0" * 64}, target.path, target.unrecognized_fields
        )
        with pytest.raises(UpdateStateError, match="was not verified"):
            client.download(forged)
        with pytest.raises(UpdateStateError, match="not been downloaded"):
            client.install(target)


class Interrupting(RangeFetcher):
    """Passes through to ``inner``; the first artifact download breaks off after ``cut``
    bytes, as a dropped connection would. Records (offset, bytes delivered) per artifact
    request."""

    def __init__(self, inner: RangeFetcher, cut: int) -> None:
        self.inner, self.cut = inner, cut
        self.artifact_requests: list[list[int]] = []

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        chunks = self.inner.fetch_from(url, offset)
        if "/tuf/targets/" not in url:
            return chunks
        record = [offset, 0]
        self.artifact_requests.append(record)
        return self._count(chunks, record, cut=len(self.artifact_requests) == 1)

    def _count(self, chunks: Iterator[bytes], record: list[int], *, cut: bool) -> Iterator[bytes]:
        for chunk in chunks:
            if cut and record[1] + len(chunk) > self.cut:
                yield chunk[: self.cut - record[1]]
                raise ConnectionResetError("connection reset by peer")
            record[1] += len(chunk)
            yield chunk


def test_an_interrupted_download_resumes_from_the_partial_file(world: World) -> None:
    release = world.publish(data=bytes(range(256)) * 4096 * 3)  # 3 MiB
    device = world.enroll()
    # The server's artifact route answers ranges (Starlette's FileResponse): 206.
    with world.fleet.client() as http:
        ranged = http.get(
            f"/tuf/targets/fw/1.1.0/{release.sha256}.fw-1.1.0.img", headers={"Range": "bytes=1000-"}
        )
    assert ranged.status_code == 206 and ranged.content == release.image[1000:]

    http = device_channel(device.state, device.config)
    fetcher = Interrupting(HttpsFetcher(http, chunk_size=64 * 1024), cut=1_000_000)
    base = f"{world.fleet.url}/tuf/"
    client = UpdateClient(
        device.updates,
        Repo(fetcher, base + "metadata/", base + "targets/"),
        hardware=device.config.hardware,
        closer=http.close,
    )
    with client:
        target = client.check(release.target)
        with pytest.raises(DownloadInterrupted, match="broke off after 1000000 of") as cut:
            client.download(target)
        assert "resumes" in cut.value.hint
        part = device.updates.downloads / f"{release.sha256}.part"
        assert part.stat().st_size == 1_000_000
        assert device.snapshot()[1] != release.image  # nothing installed

        seen: list[int] = []
        path = client.download(target, progress=lambda done, total: seen.append(done))
        assert path.read_bytes() == release.image and not part.exists()
        assert fetcher.artifact_requests[1] == [1_000_000, len(release.image) - 1_000_000]
        assert seen[0] == 1_000_000 and seen[-1] == len(release.image)
        result = client.install(target)
    assert result.outcome == "committed" and running(device) == "1.1.0"


class PowerCut(Exception):
    pass


def test_the_next_run_finishes_an_update_a_power_cut_interrupted(world: World) -> None:
    release = world.publish("fw", "1.1.0", health_checks=(("true",),))
    device = world.enroll()

    def cut(name: str) -> None:
        if name == "after-switch":
            raise PowerCut(name)

    with UpdateClient.for_agent(device.state) as client:
        client.checkpoint = cut
        with pytest.raises(PowerCut):
            client.update(release.target)
    assert device.sim.load_env().trying == "b"  # switched, never booted: on trial
    with UpdateClient.for_agent(device.state) as client:
        result = client.update()  # boots the trial, checks its health, commits
    assert result is not None and result.outcome == "current", result
    env = device.sim.load_env()
    assert env.trying is None and env.active == "b" and running(device) == "1.1.0"


def test_application_packages_install_and_fall_back(world: World) -> None:
    def package(version: str) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            data = f"app {version}\n".encode()
            info = tarfile.TarInfo("bin/app")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    app = world.publish("app", "1.0", install="app", data=package("1.0"))
    device = world.enroll()
    with UpdateClient.for_agent(device.state) as client:
        assert client.offered() is None  # the update offer is firmware; apps come by directive
        first = client.update(app.target)
    assert first is not None and first.outcome == "committed"
    root = device.sim.root
    assert (root / "apps/app/current/bin/app").read_text() == "app 1.0\n"
    broken = world.publish(
        "app", "2.0", install="app", data=package("2.0"), health_checks=(("false",),)
    )
    with UpdateClient.for_agent(device.state) as client:
        second = client.update(broken.target)
    assert second is not None and second.outcome == "rolled-back" and second.version == "1.0"
    assert apps.current_version(root, "app") == "1.0"
    with UpdateClient.for_agent(device.state) as client:
        only_images = UpdateClient(client.state, client.repo, hardware="gw-2", supported=("image",))
        with pytest.raises(NotForThisDevice, match="installs as 'app'"):
            only_images.check(broken.target)


def test_an_app_release_with_any_accepted_version_installs(world: World) -> None:
    """The control plane and the device share one version rule: '1.0~rc1' is published, so
    it installs (it was once refused by every device after the download)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("bin/app")
        tar.addfile(info, io.BytesIO(b""))
    app = world.publish("app", "1.0~rc1", install="app", data=buffer.getvalue())
    device = world.enroll()
    with UpdateClient.for_agent(device.state) as client:
        result = client.update(app.target)
    assert result is not None and result.outcome == "committed", result
    assert apps.current_version(device.sim.root, "app") == "1.0~rc1"

"""A/B installation on a simulated device, health checks, operator rollback, app packages."""

from __future__ import annotations

import io
import itertools
import json
import random
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.errors import InvalidRequest
from garrison.updates import apps, bootenv
from garrison.updates.bootenv import (
    DowngradeRefused,
    ImageVerificationFailed,
    RollbackUnavailable,
    SlotInfo,
    SlotNotBootable,
    UpdateStateError,
)
from garrison.updates.installer import (
    CommandCheck,
    FileSlotInstaller,
    apply_rollback,
    apply_update,
    resume,
    run_health_checks,
)
from garrison.updates.simdevice import SimulatedDevice

MIB = 1 << 20
PY = sys.executable


def image(seed: int, size: int = MIB) -> bytes:
    return random.Random(seed).randbytes(size)


V1 = image(1)
V2 = image(2)
INFO_V1 = SlotInfo.of(V1, "1.0", 1)
INFO_V2 = SlotInfo.of(V2, "2.0", 2)


@pytest.fixture
def device(tmp_path: Path) -> SimulatedDevice:
    return SimulatedDevice.create(tmp_path / "dev", V1, "1.0", 1)


def chunks(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_runs(device: SimulatedDevice, version: str, data: bytes) -> None:
    """A fresh boot comes up on ``version``, whose slot holds exactly ``data``."""
    booted = SimulatedDevice(device.root).boot()
    assert booted.version == version
    assert device.slot_path(booted.slot).read_bytes() == data
    env = device.load_env()
    assert env.trying is None and env.active == booted.slot


# --- the device ------------------------------------------------------------------------


def test_create_lays_out_a_factory_device(device: SimulatedDevice) -> None:
    assert device.slot_path("a").read_bytes() == V1
    assert (device.root / "apps").is_dir()
    env = device.load_env()
    assert env.slots["a"] == bootenv.replace(INFO_V1, state="good")
    assert env.security_floor == 1
    assert device.boot().slot == "a"
    with pytest.raises(UpdateStateError):
        SimulatedDevice.create(device.root, V1, "1.0", 1)


def test_bootenv_json_is_checksummed_and_replaced_atomically(device: SimulatedDevice) -> None:
    doc = json.loads(device.env_path.read_bytes())
    assert doc["active"] == "a" and len(doc["checksum"]) == 64
    device.save_env(device.load_env())
    assert not (device.root / "bootenv.json.tmp").exists()


def test_missing_bootenv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(bootenv.BootEnvCorrupt) as info:
        SimulatedDevice(tmp_path).boot()
    assert "SimulatedDevice.create" in info.value.hint


# --- happy path ------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True])
def test_update_commits_a_healthy_version(device: SimulatedDevice, as_file: bool) -> None:
    seen: list[str] = []
    installer = FileSlotInstaller(device, seen.append, chunk_size=256 * 1024)
    source = io.BytesIO(V2) if as_file else chunks(V2)
    report = apply_update(device, installer, source, INFO_V2, [[PY, "-c", "pass"]])
    assert report.outcome == "committed"
    assert report.booted.slot == "b" and report.booted.version == "2.0"
    assert report.event.startswith("committed: slot b version 2.0")
    env = device.load_env()
    assert env.active == env.last_good == "b" and env.security_floor == 2
    assert env.slots["a"] is not None and env.slots["a"].state == "good"  # the way back
    assert_runs(device, "2.0", V2)
    writes = seen.count("slot-write-chunk")
    assert writes == (4 if as_file else 11)
    assert [s for s in seen if s != "slot-write-chunk"] == [
        "slot-write-begin",
        "slot-written",
        "before-switch",
        "after-switch",
        "before-commit",
        "after-commit",
    ]


def test_second_update_overwrites_the_older_slot(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    apply_update(device, installer, chunks(V2), INFO_V2)
    v3 = image(3, 2 * MIB)
    report = apply_update(device, installer, chunks(v3), SlotInfo.of(v3, "3.0", 3))
    assert report.outcome == "committed" and report.booted.slot == "a"
    assert device.load_env().security_floor == 3
    assert_runs(device, "3.0", v3)


# --- refusals: nothing unverified is switched to ----------------------------------------


def _endless() -> Iterator[bytes]:
    yield V2
    yield from itertools.repeat(b"\0" * 65536)


TAMPERED = {
    "wrong hash": lambda: chunks(V2[:1000] + b"X" + V2[1001:]),
    "too long": lambda: chunks(V2 + b"extra"),
    "endless": _endless,
    "too short": lambda: chunks(V2[:-1]),
    "empty": lambda: iter(()),
}


@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_stream_is_refused(device: SimulatedDevice, kind: str) -> None:
    installer = FileSlotInstaller(device)
    with pytest.raises(ImageVerificationFailed) as info:
        apply_update(device, installer, TAMPERED[kind](), INFO_V2)
    assert info.value.hint
    env = device.load_env()
    assert env.slots["b"] is None and env.trying is None
    assert env.last_event.startswith("install refused:")
    assert device.slot_path("b").stat().st_size == 0  # no unverified bytes left behind
    with pytest.raises(SlotNotBootable):
        installer.switch("b")
    assert_runs(device, "1.0", V1)


def test_too_long_stream_is_cut_off_at_the_declared_length(device: SimulatedDevice) -> None:
    with pytest.raises(ImageVerificationFailed, match="longer"):
        FileSlotInstaller(device).install(_endless(), INFO_V2)


def test_readback_mismatch_is_refused(
    device: SimulatedDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimulatedDevice, "slot_verifies", lambda self, slot, info: False)
    with pytest.raises(ImageVerificationFailed, match="read back"):
        FileSlotInstaller(device).install(chunks(V2), INFO_V2)
    assert device.load_env().slots["b"] is None


def test_downgrade_is_refused_before_anything_is_written(device: SimulatedDevice) -> None:
    old = image(9)
    before = device.env_path.read_bytes()
    with pytest.raises(DowngradeRefused) as info:
        FileSlotInstaller(device).install(chunks(old), SlotInfo.of(old, "0.9", 0))
    assert "security version 1 or higher" in info.value.hint
    assert device.env_path.read_bytes() == before
    assert not device.slot_path("b").exists()


def test_bad_sources_are_refused(device: SimulatedDevice) -> None:
    with pytest.raises(InvalidRequest):
        FileSlotInstaller(device).install(iter(["text"]), INFO_V2)  # type: ignore[list-item]
    with pytest.raises(InvalidRequest):
        FileSlotInstaller(device, chunk_size=0)


# --- fallback by itself -----------------------------------------------------------------


def test_unhealthy_version_is_rejected_and_the_device_returns(device: SimulatedDevice) -> None:
    check = [PY, "-c", "import sys; sys.exit('service did not start')"]
    report = apply_update(device, FileSlotInstaller(device), chunks(V2), INFO_V2, [check])
    assert report.outcome == "rolled-back"
    assert report.booted.slot == "a" and report.booted.version == "1.0"
    assert report.health is not None and not report.health.healthy
    assert "service did not start" in report.event
    env = device.load_env()
    assert env.slots["b"] is not None and env.slots["b"].state == "bad"
    assert env.security_floor == 1  # a rejected version never raises the floor
    assert_runs(device, "1.0", V1)


def test_health_checks_run_in_the_device_directory(device: SimulatedDevice) -> None:
    """A check judges the device it runs for: a fault marker in one device's directory
    fails that device's trial, and only that device's."""
    check = ["sh", "-c", "test ! -e FAULT || { echo 'fault marker present' >&2; exit 1; }"]
    (device.root / "FAULT").write_text("injected\n")
    report = apply_update(device, FileSlotInstaller(device), chunks(V2), INFO_V2, [check])
    assert report.outcome == "rolled-back"
    assert "fault marker present" in report.event
    assert_runs(device, "1.0", V1)
    (device.root / "FAULT").unlink()
    report = apply_update(device, FileSlotInstaller(device), chunks(V2), INFO_V2, [check])
    assert report.outcome == "committed"


def test_boot_limit_returns_to_the_last_good_version(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    installer.switch(installer.install(chunks(V2), INFO_V2), attempts=3)
    for left in (2, 1, 0):  # the new version hangs before its health checks, three times
        booted = device.boot()
        assert booted.slot == "b" and device.load_env().attempts_left == left
    booted = device.boot()
    assert booted.slot == "a" and booted.event == "rolled-back: boot limit"
    with pytest.raises(UpdateStateError):
        installer.commit()
    assert_runs(device, "1.0", V1)


def test_verified_boot_refuses_a_modified_trial_slot(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    installer.switch(installer.install(chunks(V2), INFO_V2))
    with device.slot_path("b").open("r+b") as f:
        f.write(b"evil")
    report = resume(device)
    assert report.booted.slot == "a" and report.action == "none"
    assert report.booted.event == "rolled-back: failed verification"
    assert device.load_env().slots["b"].state == "bad"  # type: ignore[union-attr]


def test_verified_boot_falls_back_when_the_active_slot_rots(device: SimulatedDevice) -> None:
    v1_1 = image(11)
    apply_update(device, FileSlotInstaller(device), chunks(v1_1), SlotInfo.of(v1_1, "1.1", 1))
    device.slot_path("b").write_bytes(b"rotten")
    booted = device.boot()
    assert booted.slot == "a" and booted.version == "1.0"
    assert booted.event.startswith("fell back: slot b failed verification")


def test_no_verified_slot_left_is_reported(device: SimulatedDevice) -> None:
    device.slot_path("a").write_bytes(b"rotten")
    with pytest.raises(bootenv.NoBootableSlot) as info:
        device.boot()
    assert "recover" in info.value.hint


# --- operator rollback ------------------------------------------------------------------


def test_operator_rollback_to_the_previous_version(device: SimulatedDevice) -> None:
    v1_1 = image(11)
    installer = FileSlotInstaller(device)
    apply_update(device, installer, chunks(v1_1), SlotInfo.of(v1_1, "1.1", 1))
    report = apply_rollback(device, installer, [lambda: True])
    assert report.outcome == "committed" and report.booted.version == "1.0"
    assert_runs(device, "1.0", V1)


def test_operator_rollback_of_an_unhealthy_old_version_stays(device: SimulatedDevice) -> None:
    v1_1 = image(11)
    installer = FileSlotInstaller(device)
    apply_update(device, installer, chunks(v1_1), SlotInfo.of(v1_1, "1.1", 1))
    report = apply_rollback(device, installer, [lambda: False])
    assert report.outcome == "rolled-back" and report.booted.version == "1.1"
    assert_runs(device, "1.1", v1_1)


def test_operator_rollback_below_the_floor_is_refused(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    apply_update(device, installer, chunks(V2), INFO_V2)
    before = device.env_path.read_bytes()
    with pytest.raises(DowngradeRefused) as info:
        apply_rollback(device, installer)
    assert "roll forward" in info.value.hint
    assert device.env_path.read_bytes() == before
    assert_runs(device, "2.0", V2)


def test_operator_rollback_without_a_previous_version(device: SimulatedDevice) -> None:
    with pytest.raises(RollbackUnavailable):
        FileSlotInstaller(device).rollback()


# --- resume -----------------------------------------------------------------------------


def test_resume_commits_a_healthy_trial(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    installer.switch(installer.install(chunks(V2), INFO_V2))
    report = resume(device, [lambda: None])
    assert report.action == "committed" and report.final.version == "2.0"
    assert_runs(device, "2.0", V2)


def test_resume_rejects_an_unhealthy_trial(device: SimulatedDevice) -> None:
    installer = FileSlotInstaller(device)
    installer.switch(installer.install(chunks(V2), INFO_V2))
    report = resume(device, [lambda: False])
    assert report.action == "rejected" and report.booted.slot == "b"
    assert report.final.slot == "a" and report.final.event.startswith("rejected:")


def test_resume_reports_and_leaves_idle_slots(device: SimulatedDevice) -> None:
    report = resume(device)
    assert report.action == "none" and report.unwritten_slots == ("b",)
    FileSlotInstaller(device).install(chunks(V2), INFO_V2)
    report = resume(device)
    assert report.action == "none" and report.written_slots == ("b",)
    assert report.final.version == "1.0"


# --- health checks ----------------------------------------------------------------------


def _boom() -> bool:
    raise RuntimeError("sensor offline")


@pytest.mark.parametrize(
    ("check", "healthy", "reason"),
    [
        ([PY, "-c", "pass"], True, "healthy"),
        ([PY, "-c", "import sys; sys.exit(3)"], False, "exit status 3"),
        (CommandCheck((PY, "-c", "import time; time.sleep(5)"), timeout=0.3), False, "0.3 s"),
        (["/nonexistent/garrison-check"], False, "cannot run"),
        (lambda: True, True, "healthy"),
        (lambda: None, True, "healthy"),
        (lambda: False, False, "reported unhealthy"),
        (lambda: 0, False, "reported unhealthy"),
        (_boom, False, "_boom raised RuntimeError: sensor offline"),
    ],
)
def test_health_check(check: object, healthy: bool, reason: str) -> None:
    result = run_health_checks([check])  # type: ignore[list-item]
    assert result.healthy is healthy and result.checked == 1
    assert reason in result.reason


def test_health_checks_report_every_failure() -> None:
    result = run_health_checks(
        [lambda: False, [PY, "-c", "pass"], [PY, "-c", "raise SystemExit(2)"]]
    )
    assert not result.healthy and len(result.failures) == 2


def test_no_health_checks_is_healthy() -> None:
    assert run_health_checks([]).healthy


def test_a_command_as_a_string_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        run_health_checks(["true"])  # type: ignore[list-item]


# --- application packages ---------------------------------------------------------------

FILES_1 = {"bin/app": b"#!/bin/sh\necho 1\n", "etc/app.conf": b"level=1\n"}
FILES_2 = {"bin/app": b"#!/bin/sh\necho 2\n", "etc/app.conf": b"level=2\n", "README": b"v2"}


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def test_app_install_and_rollback(tmp_path: Path) -> None:
    base = tmp_path / "apps" / "pump"
    first = apps.install_app(tmp_path, "pump", "1.0", FILES_1, apps.files_digest(FILES_1))
    assert first == base / "1.0"
    assert (base / "current").is_symlink() and str((base / "current").readlink()) == "1.0"
    assert (base / "current" / "etc" / "app.conf").read_bytes() == b"level=1\n"

    archive = tar_bytes(FILES_2)
    apps.install_app(tmp_path, "pump", "2.0", archive, apps.package_digest(archive))
    assert apps.current_version(tmp_path, "pump") == "2.0"
    assert apps.previous_version(tmp_path, "pump") == "1.0"
    assert (base / "current" / "README").read_bytes() == b"v2"

    assert apps.rollback_app(tmp_path, "pump") == "1.0"
    assert apps.current_version(tmp_path, "pump") == "1.0"
    assert apps.previous_version(tmp_path, "pump") == "2.0"
    assert (base / "current" / "bin" / "app").read_bytes() == FILES_1["bin/app"]
    assert not list(base.glob(".*tmp*"))  # no staging leftovers


def test_app_reinstall_of_current_changes_nothing(tmp_path: Path) -> None:
    info = apps.files_digest(FILES_1)
    apps.install_app(tmp_path, "pump", "1.0", FILES_1, info)
    apps.install_app(tmp_path, "pump", "1.0", FILES_1, info)
    assert apps.previous_version(tmp_path, "pump") is None
    with pytest.raises(RollbackUnavailable):
        apps.rollback_app(tmp_path, "pump")


@pytest.mark.parametrize(
    "content",
    [
        {**FILES_1, "etc/app.conf": b"level=9\n"},
        {**FILES_1, "extra": b""},
        {"bin/app": FILES_1["bin/app"]},
    ],
)
def test_tampered_app_is_refused_and_nothing_installed(
    tmp_path: Path, content: dict[str, bytes]
) -> None:
    with pytest.raises(ImageVerificationFailed):
        apps.install_app(tmp_path, "pump", "1.0", content, apps.files_digest(FILES_1))
    assert not (tmp_path / "apps" / "pump").exists()


def test_app_archive_from_a_file(tmp_path: Path) -> None:
    archive = tmp_path / "pump-2.0.tar"
    archive.write_bytes(tar_bytes(FILES_2))
    info = apps.package_digest(archive)
    assert info == apps.package_digest(archive.read_bytes())
    apps.install_app(tmp_path / "dev", "pump", "2.0", archive, info)
    assert (tmp_path / "dev" / "apps" / "pump" / "current" / "README").read_bytes() == b"v2"
    archive.write_bytes(archive.read_bytes()[:-1] + b"\1")
    with pytest.raises(ImageVerificationFailed):
        apps.install_app(tmp_path / "dev", "pump", "3.0", archive, info)
    assert apps.current_version(tmp_path / "dev", "pump") == "2.0"


def test_tampered_archive_is_refused(tmp_path: Path) -> None:
    archive = tar_bytes(FILES_1)
    info = apps.package_digest(archive)
    with pytest.raises(ImageVerificationFailed):
        apps.install_app(tmp_path, "pump", "1.0", archive + b"\0", info)
    with pytest.raises(ImageVerificationFailed):
        apps.install_app(tmp_path, "pump", "1.0", archive[:-1] + b"\1", info)


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a//b", "./a", ""])
def test_app_file_paths_must_stay_inside(path: str) -> None:
    with pytest.raises(apps.AppInstallError):
        apps.files_digest({path: b"x"})


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        member = tarfile.TarInfo(name)
        member.type = kind
        member.linkname = link
        tar.addfile(member, io.BytesIO(b""))
    return buf.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        _tar_member("../evil"),
        _tar_member("link", tarfile.SYMTYPE, "/etc/passwd"),
        _tar_member("link", tarfile.SYMTYPE, "../../evil"),
        _tar_member("dev", tarfile.CHRTYPE),
        b"not a tar archive",
    ],
)
def test_archives_that_escape_are_refused(tmp_path: Path, archive: bytes) -> None:
    with pytest.raises(apps.AppInstallError):
        apps.install_app(tmp_path, "pump", "1.0", archive, apps.package_digest(archive))
    assert apps.current_version(tmp_path, "pump") is None
    assert list((tmp_path / "apps" / "pump").iterdir()) == []  # staging removed
    assert not (tmp_path / "evil").exists() and not (tmp_path / "apps" / "evil").exists()


@pytest.mark.parametrize("name", ["current", "previous", "..", ".hidden", "a/b", ""])
def test_app_names_are_checked(tmp_path: Path, name: str) -> None:
    info = apps.files_digest(FILES_1)
    with pytest.raises(apps.AppInstallError):
        apps.install_app(tmp_path, name, "1.0", FILES_1, info)
    with pytest.raises(apps.AppInstallError):
        apps.install_app(tmp_path, "pump", name, FILES_1, info)


def test_prune_never_deletes_current_or_previous(tmp_path: Path) -> None:
    for n in range(1, 5):
        files = {"v": str(n).encode()}
        apps.install_app(tmp_path, "pump", f"{n}.0", files, apps.files_digest(files))
    apps.rollback_app(tmp_path, "pump")  # current 3.0, previous 4.0
    (tmp_path / "apps" / "pump" / ".tmp-9.0-dead").mkdir()
    assert apps.prune_app(tmp_path, "pump") == ["1.0", "2.0"]
    assert sorted(p.name for p in (tmp_path / "apps" / "pump").iterdir()) == [
        "3.0",
        "4.0",
        "current",
        "previous",
    ]
    assert (tmp_path / "apps" / "pump" / "current" / "v").read_bytes() == b"3"


class PowerCut(BaseException):
    pass


def test_app_power_cut_leaves_a_complete_current_version(tmp_path: Path) -> None:
    apps.install_app(tmp_path, "pump", "1.0", FILES_1, apps.files_digest(FILES_1))
    names = ["app-written", "app-after-switch"]
    for cut in names:
        root = tmp_path / cut
        apps.install_app(root, "pump", "1.0", FILES_1, apps.files_digest(FILES_1))

        def checkpoint(name: str, cut: str = cut) -> None:
            if name == cut:
                raise PowerCut(name)

        with pytest.raises(PowerCut):
            apps.install_app(
                root, "pump", "2.0", FILES_2, apps.files_digest(FILES_2), checkpoint=checkpoint
            )
        current = apps.current_version(root, "pump")
        expected = FILES_1 if current == "1.0" else FILES_2
        assert (root / "apps" / "pump" / "current" / "etc" / "app.conf").read_bytes() == (
            expected["etc/app.conf"]
        )
        apps.install_app(root, "pump", "2.0", FILES_2, apps.files_digest(FILES_2))
        assert apps.current_version(root, "pump") == "2.0"

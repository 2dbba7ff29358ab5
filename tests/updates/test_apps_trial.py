"""An app switch is a trial: recorded with its health checks before anything is written,
judged (committed, rolled back, or unhealthy without an earlier version), and finished after
a power cut at any point — an unhealthy version never stays current because its checks did
not run. And a verified package that cannot be unpacked is refused for good
(:class:`PackageUnusable`), with nothing switched."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from garrison.updates import apps
from garrison.updates.client import app_result, judge_app_trial

V1 = {"bin/pump": b"#!/bin/sh\necho 1\n"}
V2 = {"bin/pump": b"#!/bin/sh\necho 2\n"}
HEALTHY = (("true",),)
UNHEALTHY = (("false",),)


class PowerCut(BaseException):
    pass


def cut_at(point: str, occurrence: int = 1):  # type: ignore[no-untyped-def]
    """A checkpoint that loses power the ``occurrence``-th time ``point`` is reached."""
    seen = [0]

    def checkpoint(name: str) -> None:
        if name == point:
            seen[0] += 1
            if seen[0] == occurrence:
                raise PowerCut(name)

    return checkpoint


def install(
    root: Path,
    version: str,
    files: dict[str, bytes],
    checks: tuple[tuple[str, ...], ...] | None = None,
) -> None:
    apps.install_app(root, "pump", version, files, apps.files_digest(files), health_checks=checks)


def cut_install(root: Path, point: str, checks: tuple[tuple[str, ...], ...]) -> None:
    """Install pump 2 as a trial and judge it, losing power at ``point`` (its first time)."""
    cut = cut_at(point)
    with pytest.raises(PowerCut):
        info = apps.files_digest(V2)
        apps.install_app(root, "pump", "2", V2, info, checkpoint=cut, health_checks=checks)
        judge_app_trial(root, "pump", cut)


def test_the_trial_is_recorded_before_the_switch_with_its_checks(tmp_path: Path) -> None:
    install(tmp_path, "1", V1)
    assert apps.read_trial(tmp_path, "pump") is None  # no checks given: no trial
    cut_install(tmp_path, "app-written", UNHEALTHY)  # written, not switched
    trial = apps.read_trial(tmp_path, "pump")
    assert trial == apps.AppTrial("2", UNHEALTHY, "switching")
    assert apps.current_version(tmp_path, "pump") == "1"
    assert apps.open_trials(tmp_path) == ["pump"]
    # the switch never happened: nothing ran, the trial is forgotten
    assert judge_app_trial(tmp_path, "pump") is None
    assert apps.read_trial(tmp_path, "pump") is None and apps.open_trials(tmp_path) == []
    assert apps.current_version(tmp_path, "pump") == "1"


@pytest.mark.parametrize("point", ["app-after-switch", "app-after-health"])
def test_a_cut_between_switch_and_verdict_runs_the_checks_and_rolls_back(
    tmp_path: Path, point: str
) -> None:
    install(tmp_path, "1", V1)
    cut_install(tmp_path, point, UNHEALTHY)
    assert apps.current_version(tmp_path, "pump") == "2"  # the unchecked version runs
    assert apps.read_trial(tmp_path, "pump") == apps.AppTrial("2", UNHEALTHY, "switching")
    trial = judge_app_trial(tmp_path, "pump")
    assert trial is not None and trial.stage == "rolled-back" and trial.running == "1"
    assert trial.health == "false: exit status 1"
    assert apps.current_version(tmp_path, "pump") == "1"
    assert apps.read_trial(tmp_path, "pump") == trial  # the verdict stays recorded
    assert judge_app_trial(tmp_path, "pump") == trial  # and is not judged again
    result = app_result("pump-2.tar", trial)
    assert (result.outcome, result.version) == ("rolled-back", "1")


def test_a_cut_of_a_healthy_switch_commits_after_the_checks(tmp_path: Path) -> None:
    install(tmp_path, "1", V1)
    cut_install(tmp_path, "app-after-switch", HEALTHY)
    trial = judge_app_trial(tmp_path, "pump")
    assert trial is not None and (trial.stage, trial.running) == ("committed", "2")
    assert apps.current_version(tmp_path, "pump") == "2"
    assert app_result("t", trial).outcome == "committed"


def test_a_cut_unhealthy_first_install_is_unhealthy_as_without_the_cut(tmp_path: Path) -> None:
    """No earlier version to return to: it stays current and is recorded ``unhealthy`` —
    what an uninterrupted install does."""
    cut_install(tmp_path, "app-after-switch", UNHEALTHY)
    trial = judge_app_trial(tmp_path, "pump")
    assert trial is not None and (trial.stage, trial.running) == ("unhealthy", "2")
    assert "has no earlier version" in trial.event
    assert app_result("t", trial).outcome == "unhealthy"


def test_a_cut_in_the_switch_back_finishes_it_without_judging_again(tmp_path: Path) -> None:
    """The verdict ``rolling-back`` is recorded before the switch back: after a cut there,
    the switch back is finished even if the checks would now pass."""
    ok = tmp_path / "ok"
    checks = (("test", "-e", str(ok)),)
    install(tmp_path, "1", V1)
    info = apps.files_digest(V2)
    apps.install_app(tmp_path, "pump", "2", V2, info, health_checks=checks)
    with pytest.raises(PowerCut):  # the second app-after-switch: inside rollback_app
        judge_app_trial(tmp_path, "pump", cut_at("app-after-switch"))
    trial = apps.read_trial(tmp_path, "pump")
    assert trial is not None and trial.stage == "rolling-back"
    assert apps.current_version(tmp_path, "pump") == "1"  # switched back, links half-done
    ok.touch()  # the checks would pass now: they are not asked again
    done = judge_app_trial(tmp_path, "pump")
    assert done is not None and (done.stage, done.running) == ("rolled-back", "1")
    assert apps.current_version(tmp_path, "pump") == "1"


def test_a_cut_before_the_switch_back_switches_back(tmp_path: Path) -> None:
    install(tmp_path, "1", V1)
    install(tmp_path, "2", V2, UNHEALTHY)
    # as if the power went after "rolling-back" was recorded, before the switch back
    trial = apps.AppTrial("2", UNHEALTHY, "rolling-back", health="false: exit status 1")
    apps.write_trial(tmp_path, "pump", trial)
    done = judge_app_trial(tmp_path, "pump")
    assert done is not None and (done.stage, done.running) == ("rolled-back", "1")
    assert apps.current_version(tmp_path, "pump") == "1"


def test_a_damaged_trial_record_is_an_error_with_a_hint(tmp_path: Path) -> None:
    install(tmp_path, "1", V1, HEALTHY)
    (tmp_path / "apps" / "pump" / apps.TRIAL_FILE).write_bytes(b'{"stage": "switching"}')
    with pytest.raises(apps.AppInstallError, match="is damaged") as caught:
        judge_app_trial(tmp_path, "pump")
    assert "by hand" in caught.value.hint


def test_the_trial_record_is_no_version_and_survives_pruning(tmp_path: Path) -> None:
    install(tmp_path, "1", V1, HEALTHY)
    judge_app_trial(tmp_path, "pump")
    install(tmp_path, "2", V2, HEALTHY)
    judge_app_trial(tmp_path, "pump")
    apps.prune_app(tmp_path, "pump")
    assert apps.installed_apps(tmp_path) == {"pump": "2"}
    trial = apps.read_trial(tmp_path, "pump")
    assert trial is not None and trial.stage == "committed"
    assert apps.remove_app(tmp_path, "pump") and apps.read_trial(tmp_path, "pump") is None


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    "package",
    [
        pytest.param(b"this is not a tar archive" * 10, id="not-an-archive"),
        pytest.param(_tar_gz(V1)[:-40], id="truncated-gzip"),
        pytest.param(gzip.compress(b"\x00" * 100 + b"junk" * 200), id="gzip-of-junk"),
        pytest.param(_tar_gz({"../escape": b"x"}), id="path-out-of-the-app"),
    ],
)
def test_a_verified_package_that_cannot_be_unpacked_is_unusable(
    tmp_path: Path, package: bytes
) -> None:
    install(tmp_path, "1", V1)
    before = sorted(p.name for p in (tmp_path / "apps" / "pump").iterdir())
    info = apps.package_digest(package)  # the digest verifies: the package is the release's
    with pytest.raises(apps.PackageUnusable, match="cannot unpack"):
        apps.install_app(tmp_path, "pump", "2", package, info, health_checks=UNHEALTHY)
    assert apps.current_version(tmp_path, "pump") == "1"
    assert sorted(p.name for p in (tmp_path / "apps" / "pump").iterdir()) == before
    assert apps.read_trial(tmp_path, "pump") is None  # nothing switched: no trial


def test_a_files_package_with_a_bad_path_is_unusable(tmp_path: Path) -> None:
    with pytest.raises(apps.PackageUnusable, match="not a plain relative path"):
        apps.files_digest({"/etc/passwd": b"x"})

"""App packages for convergence: listing, removal (crash-safe), and configuration written
atomically in a canonical encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garrison.updates import apps

FILES_1 = {"bin/app": b"#!/bin/sh\necho 1\n", "etc/app.conf": b"level=1\n"}
FILES_2 = {"bin/app": b"#!/bin/sh\necho 2\n", "etc/app.conf": b"level=2\n"}


class PowerCut(BaseException):
    pass


def cut_at(point: str):  # type: ignore[no-untyped-def]
    def checkpoint(name: str) -> None:
        if name == point:
            raise PowerCut(name)

    return checkpoint


def install(root: Path, name: str, version: str, files: dict[str, bytes] = FILES_1) -> None:
    apps.install_app(root, name, version, files, apps.files_digest(files))


def test_installed_apps_lists_names_and_running_versions(tmp_path: Path) -> None:
    assert apps.installed_apps(tmp_path) == {}
    install(tmp_path, "pump", "1.0")
    install(tmp_path, "pump", "2.0", FILES_2)
    install(tmp_path, "logger", "0.9")
    apps.write_config(tmp_path, "configured-only", {"a": 1})
    (tmp_path / "apps" / ".removed-old-1234").mkdir()
    (tmp_path / "apps" / "stray-file").write_bytes(b"")
    assert apps.installed_apps(tmp_path) == {
        "configured-only": None,
        "logger": "0.9",
        "pump": "2.0",
    }


def test_remove_app_takes_every_version_and_the_configuration(tmp_path: Path) -> None:
    install(tmp_path, "pump", "1.0")
    install(tmp_path, "pump", "2.0", FILES_2)
    apps.write_config(tmp_path, "pump", {"port": 502})
    install(tmp_path, "logger", "0.9")
    assert apps.remove_app(tmp_path, "pump") is True
    assert not (tmp_path / "apps" / "pump").exists()
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["logger"]
    assert apps.current_version(tmp_path, "logger") == "0.9"
    assert apps.remove_app(tmp_path, "pump") is False  # nothing left: nothing to do


def test_remove_app_checks_the_name(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "victim").mkdir()
    for name in ("..", "../victim", "current", ".removed-x", ""):
        with pytest.raises(apps.AppInstallError):
            apps.remove_app(tmp_path, name)
    assert (tmp_path / "victim").is_dir()


def test_remove_app_refuses_a_link_in_place_of_the_app(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "apps" / "pump").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(apps.AppInstallError, match="not an app directory"):
        apps.remove_app(tmp_path, "pump")
    assert (tmp_path / "elsewhere").is_dir()


def test_a_power_cut_during_removal_leaves_the_app_gone_and_a_leftover_deleted_later(
    tmp_path: Path,
) -> None:
    install(tmp_path, "pump", "1.0")
    apps.write_config(tmp_path, "pump", {"port": 502})
    with pytest.raises(PowerCut):
        apps.remove_app(tmp_path, "pump", checkpoint=cut_at("app-removed"))
    # after the rename the app is gone as a whole; its bytes sit in a leftover
    assert "pump" not in apps.installed_apps(tmp_path)
    assert apps.current_version(tmp_path, "pump") is None
    leftovers = [p.name for p in (tmp_path / "apps").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".removed-pump-")
    # the app can come back at once; the leftover is never read and is cleaned up
    install(tmp_path, "pump", "1.0")
    assert apps.read_config(tmp_path, "pump") is None  # the removed configuration stays gone
    assert apps.remove_leftovers(tmp_path) == leftovers
    assert sorted(p.name for p in (tmp_path / "apps").iterdir()) == ["pump"]
    assert apps.remove_leftovers(tmp_path) == []


def test_configuration_is_canonical_and_its_digest_matches(tmp_path: Path) -> None:
    config = {"port": 502, "name": "Pumpe Süd", "nested": {"b": [1, 2], "a": None}}
    apps.write_config(tmp_path, "pump", config)
    path = tmp_path / "apps" / "pump" / "config.json"
    assert path.read_bytes() == (
        b'{"name":"Pumpe S\xc3\xbcd","nested":{"a":null,"b":[1,2]},"port":502}\n'
    )
    assert apps.stored_config_digest(tmp_path, "pump") == apps.config_digest(config)
    assert apps.config_digest(dict(reversed(config.items()))) == apps.config_digest(config)
    assert apps.read_config(tmp_path, "pump") == config
    assert path.stat().st_mode & 0o007 == 0  # not readable by others


def test_configuration_none_removes_it(tmp_path: Path) -> None:
    assert apps.stored_config_digest(tmp_path, "pump") is None
    apps.write_config(tmp_path, "pump", None)  # nothing there: nothing to do
    apps.write_config(tmp_path, "pump", {"a": 1})
    apps.write_config(tmp_path, "pump", None)
    assert apps.stored_config_digest(tmp_path, "pump") is None
    assert apps.config_digest(None) is None


def test_configuration_survives_installs_rollbacks_and_pruning(tmp_path: Path) -> None:
    install(tmp_path, "pump", "1.0")
    apps.write_config(tmp_path, "pump", {"port": 502})
    for n in range(2, 5):
        install(tmp_path, "pump", f"{n}.0", {"v": str(n).encode()})
    apps.rollback_app(tmp_path, "pump")
    assert apps.prune_app(tmp_path, "pump") == ["1.0", "2.0"]
    assert apps.read_config(tmp_path, "pump") == {"port": 502}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"x": float("inf")}, "plain JSON"),
        ({"x": object()}, "plain JSON"),
        ({"x": "y" * apps.MAX_CONFIG_BYTES}, "larger than"),
    ],
)
def test_bad_configurations_are_refused_and_nothing_written(
    tmp_path: Path, config: object, message: str
) -> None:
    apps.write_config(tmp_path, "pump", {"port": 502})
    with pytest.raises(apps.AppInstallError, match=message):
        apps.write_config(tmp_path, "pump", config)  # type: ignore[arg-type]
    assert apps.read_config(tmp_path, "pump") == {"port": 502}


def test_a_power_cut_while_writing_keeps_the_old_configuration_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps.write_config(tmp_path, "pump", {"port": 502})

    def cut(self: Path, target: Path) -> None:
        raise PowerCut("before the rename")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "replace", cut)
        with pytest.raises(PowerCut):
            apps.write_config(tmp_path, "pump", {"port": 503})
    assert apps.read_config(tmp_path, "pump") == {"port": 502}
    assert (tmp_path / "apps" / "pump" / "config.json.tmp").exists()  # never read
    assert "config.json.tmp" not in apps.installed_apps(tmp_path)
    apps.write_config(tmp_path, "pump", {"port": 503})
    assert apps.read_config(tmp_path, "pump") == {"port": 503}
    assert not (tmp_path / "apps" / "pump" / "config.json.tmp").exists()


def test_a_damaged_configuration_reads_as_an_error_and_is_rewritten(tmp_path: Path) -> None:
    apps.write_config(tmp_path, "pump", {"port": 502})
    (tmp_path / "apps" / "pump" / "config.json").write_bytes(b"{not json")
    with pytest.raises(apps.AppInstallError, match="not JSON"):
        apps.read_config(tmp_path, "pump")
    assert apps.stored_config_digest(tmp_path, "pump") != apps.config_digest({"port": 502})
    apps.write_config(tmp_path, "pump", {"port": 502})
    assert json.loads((tmp_path / "apps" / "pump" / "config.json").read_bytes()) == {"port": 502}


def test_a_version_cannot_be_named_like_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(apps.AppInstallError, match=r"config\.json"):
        install(tmp_path, "pump", "config.json")

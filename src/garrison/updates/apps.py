"""Application packages: versioned directories and an atomically switched ``current`` link.

Layout, under a device's ``apps/`` directory::

    apps/<name>/<version>/     one complete, verified package per version (immutable)
    apps/<name>/current  ->    <version>   the version that runs
    apps/<name>/previous ->    <version>   the version ``current`` pointed at before
    apps/<name>/config.json    the app's configuration (canonical JSON), if it has one

Guarantees:

* :func:`install_app` verifies the package (length and SHA-256) *before* writing anything,
  writes it into a temporary directory, fsyncs every file and directory, checks the files
  on disk, renames the directory to ``<version>``, and only then switches ``current``
  with one ``os.replace`` of a fresh symlink. After a crash at any instant ``current``
  points at a complete, verified version — the old or the new one.
* :func:`rollback_app` points ``current`` back at ``previous`` in one step.
* **A switch is a trial.** Given the release's health checks, :func:`install_app` first
  records the trial (:class:`AppTrial`, stage ``switching``, with the checks) in
  ``apps/<name>/.trial.json``, before anything is written; the client
  (:func:`garrison.updates.client.judge_app_trial`) then runs the checks and records the
  verdict (``rolling-back`` before it switches back; ``committed``, ``rolled-back`` or
  ``unhealthy`` once decided). A power cut between the switch and the verdict therefore
  leaves an open trial that the next start finishes: an unhealthy version never stays
  current because its checks did not run.
* Nothing here ever deletes the version ``current`` points to; :func:`prune_app` removes
  only versions that are neither current nor previous, and crash leftovers.
* :func:`write_config` replaces ``config.json`` atomically (the old or the new file, whole),
  always in the canonical encoding of :func:`config_bytes`, so that its SHA-256
  (:func:`stored_config_digest`) equals :func:`config_digest` of the same configuration.
* A release that cannot be installed as an app however often it is tried — an archive
  that cannot be unpacked, a path that is not plain and relative, a version that cannot
  name a directory — raises :class:`PackageUnusable`; trouble of the device's storage
  (``OSError`` with an ``errno``: disk full, I/O error) raises plain
  :class:`AppInstallError`, which may pass.
* :func:`remove_app` takes the whole ``apps/<name>`` directory (every version, the links
  and the configuration) out of ``apps/`` with one ``rename`` to ``apps/.removed-…`` and
  only then deletes it: after a crash at any instant the app is either complete and
  current or absent; a leftover ``.removed-*`` is never read and the next
  :func:`remove_leftovers` deletes it.

A package is either a tar archive (``bytes``, or the ``Path`` of a file, read in chunks and
never whole; any compression ``tarfile`` reads, extracted with the ``data`` filter: no
absolute paths, no ``..``, no devices, no links out) whose length and SHA-256 are the
release's, or a mapping of relative paths to file contents whose digest is
:func:`files_digest` — a ``sha256sum`` manifest (``<hex>  <path>`` lines sorted by path)
hashed with SHA-256, its length the sum of the file sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from garrison.atomicfile import atomic_symlink, atomic_write, fsync_dir
from garrison.updates.bootenv import ImageVerificationFailed, RollbackUnavailable, UpdateError
from garrison.updates.digests import hash_file
from garrison.updates.eligibility import RESERVED, valid_name, valid_version
from garrison.updates.installer import Checkpoint, no_checkpoint

PackageContent = bytes | Path | Mapping[str, bytes]
CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 64 * 1024
REMOVED_PREFIX = ".removed-"
TRIAL_FILE = ".trial.json"
OPEN_STAGES = ("switching", "rolling-back")
DECIDED_STAGES = ("committed", "rolled-back", "unhealthy")


class AppInstallError(UpdateError):
    """An application package cannot be installed or switched."""


class PackageUnusable(AppInstallError):
    """A verified release that can never be installed as an app here: its archive cannot be
    unpacked, it holds a path that is not plain and relative, or its version cannot name a
    directory. Trying again cannot change that: the target fails for good."""


@dataclass(frozen=True)
class AppTrial:
    """The trial of one app switch, kept in ``apps/<name>/.trial.json``.

    ``stage``: ``switching`` (recorded before the switch; the checks have not run),
    ``rolling-back`` (the checks failed, ``health`` says why; the switch back may not have
    happened yet), or a verdict: ``committed``, ``rolled-back``, ``unhealthy`` (failed its
    checks with no earlier version to return to; it stays current). ``running`` is the
    version current once decided; ``event`` says what happened, for people."""

    version: str
    health_checks: tuple[tuple[str, ...], ...]
    stage: str = "switching"
    running: str | None = None
    event: str = ""
    health: str = ""

    @property
    def decided(self) -> bool:
        return self.stage in DECIDED_STAGES

    def decide(self, stage: str, running: str | None, event: str, health: str) -> AppTrial:
        return replace(self, stage=stage, running=running, event=event, health=health)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "health_checks": [list(check) for check in self.health_checks],
            "stage": self.stage,
            "running": self.running,
            "event": self.event,
            "health": self.health,
        }

    @classmethod
    def from_json(cls, data: Any) -> AppTrial:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checks = data["health_checks"]
        if not isinstance(checks, list) or not all(
            isinstance(c, list) and c and all(isinstance(a, str) for a in c) for c in checks
        ):
            raise ValueError("health_checks must be a list of argv lists")
        stage, version, running = data["stage"], data["version"], data.get("running")
        if stage not in OPEN_STAGES + DECIDED_STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if not isinstance(version, str) or not (running is None or isinstance(running, str)):
            raise ValueError("version and running must be strings")
        return cls(
            version,
            tuple(tuple(c) for c in checks),
            stage,
            running,
            str(data.get("event", "")),
            str(data.get("health", "")),
        )


@dataclass(frozen=True)
class AppInfo:
    """What the release says about a package: its SHA-256 and length (see module doc)."""

    sha256: str
    length: int


def files_digest(files: Mapping[str, bytes]) -> AppInfo:
    """The digest of a files mapping: SHA-256 of its sorted ``sha256sum`` manifest."""
    for path in files:
        _check_relative(path)
    return AppInfo(_manifest_sha256(files), sum(len(data) for data in files.values()))


def package_digest(content: PackageContent) -> AppInfo:
    """The :class:`AppInfo` of an archive (its bytes or its file) or of a files mapping."""
    if isinstance(content, bytes):
        return AppInfo(hashlib.sha256(content).hexdigest(), len(content))
    if isinstance(content, Path):
        digest = hashlib.sha256()
        length = hash_file(content, [digest])
        return AppInfo(digest.hexdigest(), length)
    return files_digest(content)


def app_dir(root: Path, name: str) -> Path:
    """``root/apps/<name>`` for a device directory ``root``."""
    _check_name(name)
    return Path(root) / "apps" / name


def current_version(root: Path, name: str) -> str | None:
    """The version ``current`` points to, or None if the app is not installed."""
    return _link(app_dir(root, name) / "current")


def previous_version(root: Path, name: str) -> str | None:
    """The version ``current`` pointed to before the last switch, or None."""
    return _link(app_dir(root, name) / "previous")


def install_app(
    root: Path,
    name: str,
    version: str,
    content: PackageContent,
    info: AppInfo,
    *,
    checkpoint: Checkpoint = no_checkpoint,
    health_checks: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Install ``content`` as ``name`` ``version`` and make it current; return its directory.

    Refuses (:class:`ImageVerificationFailed`) a package whose length or SHA-256 is not
    ``info``'s, before writing anything; :class:`PackageUnusable` for one that verifies but
    cannot be unpacked (nothing is switched). An archive given as a ``Path`` is read twice
    (hashed, then unpacked): it must be a file only this device writes, as the client's
    downloads. Installing the version that is already current changes nothing. With
    ``health_checks`` the switch is a trial (module docstring): it is recorded, stage
    ``switching``, before anything is written, and stays open for the caller to judge.
    Checkpoints: ``app-written``, ``app-after-switch``.
    """
    _check_version(version)
    base = app_dir(root, name)
    _verify(name, version, content, info)
    current = current_version(root, name)
    target = base / version
    if current == version and target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(base)
    if health_checks is not None:
        checks = tuple(tuple(check) for check in health_checks)
        write_trial(root, name, AppTrial(version, checks))
    staging = base / f".tmp-{version}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _stage(name, version, content, info, staging)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        if health_checks is not None:
            clear_trial(root, name)  # nothing was switched: no trial
        raise
    if target.exists():  # a complete, non-current copy: replaced by the fresh one
        shutil.rmtree(target)
    staging.rename(target)
    fsync_dir(base)
    checkpoint("app-written")
    if current is not None:
        atomic_symlink(base / "previous", current)
    atomic_symlink(base / "current", version)
    checkpoint("app-after-switch")
    return target


def rollback_app(root: Path, name: str, *, checkpoint: Checkpoint = no_checkpoint) -> str:
    """Point ``current`` back at ``previous``; return the version now current.

    :class:`RollbackUnavailable` if there is no previous version different from the
    current one, or its directory is gone. Checkpoint: ``app-after-switch``.
    """
    base = app_dir(root, name)
    current = current_version(root, name)
    previous = previous_version(root, name)
    if current is None:
        raise AppInstallError(f"app {name} is not installed")
    if previous is None or previous == current or not (base / previous).is_dir():
        raise RollbackUnavailable(
            f"app {name} has no previous version to return to",
            hint="install the wanted version instead",
        )
    atomic_symlink(base / "current", previous)
    checkpoint("app-after-switch")
    atomic_symlink(base / "previous", current)
    return previous


def read_trial(root: Path, name: str) -> AppTrial | None:
    """The trial recorded for app ``name`` (None: none). :class:`AppInstallError` when the
    record is unreadable: an open trial cannot be judged without its checks."""
    path = app_dir(root, name) / TRIAL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AppInstallError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return AppTrial.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise AppInstallError(
            f"the trial record {path} is damaged: {exc}",
            hint=f"check app {name} by hand, then delete the file",
        ) from exc


def write_trial(root: Path, name: str, trial: AppTrial) -> None:
    """Record ``trial`` for app ``name``, atomically and durably."""
    data = (json.dumps(trial.to_json(), sort_keys=True) + "\n").encode()
    atomic_write(app_dir(root, name) / TRIAL_FILE, data, mode=0o640)


def clear_trial(root: Path, name: str) -> None:
    """Forget the trial recorded for app ``name`` (durably)."""
    base = app_dir(root, name)
    try:
        (base / TRIAL_FILE).unlink()
    except FileNotFoundError:
        return
    fsync_dir(base)


def open_trials(root: Path) -> list[str]:
    """The apps whose last switch is a trial without a verdict."""
    found = []
    for name in installed_apps(root):
        trial = read_trial(root, name)
        if trial is not None and not trial.decided:
            found.append(name)
    return found


def prune_app(root: Path, name: str) -> list[str]:
    """Delete versions that are neither current nor previous, and crash leftovers."""
    base = app_dir(root, name)
    if not base.is_dir():
        return []
    keep = {v for v in (current_version(root, name), previous_version(root, name)) if v}
    _remove_leftovers(base)
    removed = []
    for entry in sorted(base.iterdir()):
        if entry.name in RESERVED or entry.name in keep or entry.is_symlink():
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
            removed.append(entry.name)
    fsync_dir(base)
    return removed


def installed_apps(root: Path) -> dict[str, str | None]:
    """Every app directory under ``root/apps``: name → current version (None when the
    directory holds no current version, e.g. only a configuration). Crash leftovers and
    entries that are not app names are not listed."""
    base = Path(root) / "apps"
    if not base.is_dir():
        return {}
    found: dict[str, str | None] = {}
    for entry in sorted(base.iterdir()):
        if valid_name(entry.name) and entry.is_dir() and not entry.is_symlink():
            found[entry.name] = current_version(root, entry.name)
    return found


def remove_app(root: Path, name: str, *, checkpoint: Checkpoint = no_checkpoint) -> bool:
    """Remove app ``name``: every version, its links and its configuration. Returns whether
    there was anything to remove.

    One ``rename`` takes ``apps/<name>`` out of ``apps/`` (to ``apps/.removed-<name>-<hex>``,
    made durable with an fsync of ``apps/``) before anything is deleted, so a crash leaves
    the app whole or gone. Checkpoint: ``app-removed`` (renamed, not yet deleted).
    """
    base = app_dir(root, name)
    if not base.exists() and not base.is_symlink():
        remove_leftovers(root)
        return False
    if base.is_symlink() or not base.is_dir():
        raise AppInstallError(f"{base} is not an app directory", hint="remove it by hand")
    parent = base.parent
    doomed = parent / f"{REMOVED_PREFIX}{name}-{secrets.token_hex(4)}"
    base.rename(doomed)
    fsync_dir(parent)
    checkpoint("app-removed")
    remove_leftovers(root)
    return True


def remove_leftovers(root: Path) -> list[str]:
    """Delete what an interrupted :func:`remove_app` left in ``root/apps`` (``.removed-*``);
    return the names deleted."""
    base = Path(root) / "apps"
    if not base.is_dir():
        return []
    gone = sorted(p.name for p in base.glob(f"{REMOVED_PREFIX}*"))
    for name in gone:
        shutil.rmtree(base / name, ignore_errors=True)
    if gone:
        fsync_dir(base)
    return gone


def config_bytes(config: Mapping[str, object]) -> bytes:
    """The canonical encoding of an app configuration: a JSON object with sorted keys, no
    insignificant whitespace, UTF-8, a final newline. :class:`AppInstallError` for anything
    that is not a JSON object of at most :data:`MAX_CONFIG_BYTES`."""
    if not isinstance(config, Mapping):
        raise AppInstallError("an app configuration must be a JSON object")
    try:
        data = json.dumps(
            config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise AppInstallError(f"an app configuration must be plain JSON: {exc}") from exc
    if len(data) + 1 > MAX_CONFIG_BYTES:
        raise AppInstallError(
            f"an app configuration of {len(data) + 1} bytes is larger than the "
            f"{MAX_CONFIG_BYTES} allowed"
        )
    return data + b"\n"


def config_digest(config: Mapping[str, object] | None) -> str | None:
    """The SHA-256 of :func:`config_bytes` (None: no configuration)."""
    return None if config is None else hashlib.sha256(config_bytes(config)).hexdigest()


def stored_config_digest(root: Path, name: str) -> str | None:
    """The SHA-256 of ``apps/<name>/config.json`` as stored (None if there is none)."""
    try:
        return hashlib.sha256((app_dir(root, name) / CONFIG_FILE).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AppInstallError(f"cannot read the configuration of {name}: {exc.strerror}") from exc


def read_config(root: Path, name: str) -> dict[str, object] | None:
    """The stored configuration of ``name`` (None if there is none)."""
    try:
        data = (app_dir(root, name) / CONFIG_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise AppInstallError(f"the configuration of {name} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AppInstallError(f"the configuration of {name} is not a JSON object")
    return config


def write_config(root: Path, name: str, config: Mapping[str, object] | None) -> None:
    """Replace ``apps/<name>/config.json`` atomically with ``config`` (canonical encoding);
    ``None`` removes it (durably). The app's directory is created if needed; no version is
    touched."""
    base = app_dir(root, name)
    path = base / CONFIG_FILE
    if config is None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(base)
        return
    data = config_bytes(config)
    base.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode=0o640)


# --- helpers -----------------------------------------------------------------------------


def _check_name(value: str) -> None:
    if not valid_name(value):
        raise AppInstallError(
            f"app name {value!r} is not allowed",
            hint="a release name: 1-64 of a-z 0-9 . _ - starting with a letter or digit, "
            "not 'current' or 'previous'",
        )


def _check_version(value: str) -> None:
    if not valid_version(value) or value == CONFIG_FILE:
        raise PackageUnusable(
            f"version {value!r} is not allowed",
            hint="a release version: 1-64 of A-Z a-z 0-9 . + ~ - starting with a letter or "
            "digit, not 'current', 'previous' or 'config.json'",
        )


def _check_relative(path: str) -> PurePosixPath:
    pure = PurePosixPath(path)
    if (
        not path
        or "\n" in path
        or "\0" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise PackageUnusable(f"package path {path!r} is not a plain relative path")
    return pure


def _manifest_sha256(files: Mapping[str, bytes]) -> str:
    lines = "".join(f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _verify(name: str, version: str, content: PackageContent, info: AppInfo) -> None:
    actual = package_digest(content)
    if actual.length != info.length:
        raise ImageVerificationFailed(
            f"{name} {version} has {actual.length} bytes, not the declared {info.length}",
            hint="the package is not the release; nothing was installed",
        )
    if actual.sha256 != info.sha256:
        raise ImageVerificationFailed(
            f"{name} {version} does not have the declared SHA-256",
            hint="the package was tampered with or corrupted; nothing was installed",
        )


def _stage(name: str, version: str, content: PackageContent, info: AppInfo, dest: Path) -> None:
    if isinstance(content, bytes | Path):
        _extract(content, dest)
    else:
        _write_files(content, dest)
        if _manifest_sha256(_read_tree(dest)) != info.sha256:
            raise ImageVerificationFailed(
                f"{name} {version} does not read back as written",
                hint="the storage may be failing",
            )
    _fsync_tree(dest)


def _extract(archive: bytes | Path, dest: Path) -> None:
    try:
        with (
            tarfile.open(archive, mode="r:*")
            if isinstance(archive, Path)
            else tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
        ) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise PackageUnusable(f"cannot unpack the package: {exc}") from exc
    except OSError as exc:
        if exc.errno is None:  # a decompressor's complaint about the data (bz2, gzip)
            raise PackageUnusable(f"cannot unpack the package: {exc}") from exc
        raise AppInstallError(
            f"cannot unpack the package: {exc}", hint="check the device's storage (space, errors)"
        ) from exc


def _write_files(files: Mapping[str, bytes], dest: Path) -> None:
    for path, data in files.items():
        target = dest.joinpath(*_check_relative(path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _read_tree(top: Path) -> dict[str, bytes]:
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in top.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, files in os.walk(top):
        for file in files:
            path = Path(dirpath) / file
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _remove_leftovers(base: Path) -> None:
    for entry in base.glob(".tmp-*"):
        shutil.rmtree(entry, ignore_errors=True)


def _link(path: Path) -> str | None:
    try:
        target = str(path.readlink())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AppInstallError(f"{path} is not a version link: {exc.strerror}") from exc
    if not valid_version(target):
        raise AppInstallError(f"{path} points outside its app: {target!r}")
    return target

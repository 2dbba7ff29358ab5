"""Offline update bundles: one file holding a target, its artifact and the TUF metadata
that proves it, for sites without a network.

Layout (an uncompressed tar; regular files only)::

    garrison-bundle.json             {"format": 1, "target": "<target path>"}
    metadata/<N>.root.json           every root version, 1 to the newest
    metadata/timestamp.json
    metadata/<N>.snapshot.json       and <N>.targets.json, <N>.releases.json
    targets/<dir>/<sha256>.<name>    the artifact, named as the repository serves it

Nothing in a bundle is trusted. ``garrison agent install`` runs the same python-tuf client
over it (through :class:`BundleFetcher`, which serves the tar's files as a repository
would) that it runs against the control plane, from the device's own TUF root and
metadata cache; the index only names the target to look up. The tar is read member by
member by exact name, never extracted.

**Freshness offline.** A bundle cannot be fresher than its signed timestamp, which the
control plane keeps valid for a day. :func:`bundle_reference_time` therefore judges a
bundle's metadata at the device's clock while its timestamp is valid, and after that at
the last instant it was: whoever carries the bundle to the site stands in for the freshness
a network would give. Signatures and thresholds, versions never going back from what the
device has already seen, and the anti-rollback floor still apply in full; and a bundle whose
timestamp expired more than :data:`OFFLINE_MAX_AGE` ago is refused.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, Timestamp
from tuf.api.serialization import DeserializationError

from garrison.atomicfile import fsync_dir, tmp_path
from garrison.updates.bootenv import UpdateError
from garrison.updates.digests import CHUNK
from garrison.updates.fetchers import RangeFetcher

FORMAT = 1
INDEX = "garrison-bundle.json"
BASE_URL = "bundle:///"
METADATA_URL = f"{BASE_URL}metadata/"
TARGETS_URL = f"{BASE_URL}targets/"
OFFLINE_MAX_AGE = dt.timedelta(days=30)
MAX_INDEX_BYTES = 64 * 1024
TIMESTAMP = "metadata/timestamp.json"
MAX_TIMESTAMP_BYTES = 64 * 1024


class BundleInvalid(UpdateError):
    """The file is not an update bundle, or its metadata is too old to be judged."""


def bundle_reference_time(now: dt.datetime, timestamp_expires: dt.datetime) -> dt.datetime:
    """The time a bundle's metadata is judged at (see the module docstring)."""
    if now < timestamp_expires:
        return now
    if now - timestamp_expires > OFFLINE_MAX_AGE:
        raise BundleInvalid(
            f"the bundle's metadata expired on {timestamp_expires:%Y-%m-%d %H:%M} UTC, more "
            f"than {OFFLINE_MAX_AGE.days} days ago",
            hint="export a fresh bundle with 'garrison release export'",
        )
    return timestamp_expires - dt.timedelta(seconds=1)


class Bundle:
    """An update bundle opened for reading (release it with :meth:`close`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by close())
        except (OSError, tarfile.TarError) as exc:
            raise BundleInvalid(f"{path} is not an update bundle: {exc}") from exc
        try:
            self._members = _index_members(self._tar)
            if INDEX not in self._members:
                raise ValueError(f"it holds no {INDEX}")
            self.target: str = _parse_index(self._read(INDEX, MAX_INDEX_BYTES))
        except (ValueError, OSError, tarfile.TarError) as exc:
            self._tar.close()
            raise BundleInvalid(f"{path} is not an update bundle: {exc}") from exc
        except BaseException:
            self._tar.close()
            raise

    def timestamp_expires(self) -> dt.datetime:
        """When the bundle's timestamp expires, read *unverified* (only to pick the time
        its verification is judged at)."""
        if TIMESTAMP not in self._members:
            raise BundleInvalid(f"{self.path} holds no {TIMESTAMP}")
        try:
            data = self._read(TIMESTAMP, MAX_TIMESTAMP_BYTES)
            signed = Metadata[Timestamp].from_bytes(data).signed
        except (ValueError, OSError, tarfile.TarError) as exc:
            raise BundleInvalid(f"{self.path}: cannot read {TIMESTAMP}: {exc}") from exc
        except DeserializationError as exc:
            raise BundleInvalid(f"{self.path}: {TIMESTAMP} is not TUF metadata: {exc}") from exc
        if not isinstance(signed, Timestamp):
            raise BundleInvalid(f"{self.path}: {TIMESTAMP} is not a timestamp")
        return signed.expires

    def open_member(self, name: str) -> IO[bytes]:
        """A regular file of the bundle (``KeyError`` if there is none by that name)."""
        member = self._members[name]
        stream = self._tar.extractfile(member)
        if stream is None:
            raise KeyError(name)
        return stream

    def _read(self, name: str, limit: int) -> bytes:
        with self.open_member(name) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{name} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        self._tar.close()


def _parse_index(data: bytes) -> str:
    """The target path an index names (``ValueError`` if it is not a bundle index)."""
    try:
        index = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{INDEX} is not JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise ValueError(f"{INDEX} is not a JSON object")
    if index.get("format") != FORMAT:
        raise ValueError(f"unknown bundle format {index.get('format')!r}")
    target = index.get("target")
    if not isinstance(target, str) or not target:
        raise ValueError(f"{INDEX} names no target")
    return target


def _index_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        if not member.isreg():
            raise ValueError(f"{member.name!r} is not a regular file")
        if member.name in members:
            raise ValueError(f"{member.name!r} appears twice")
        members[member.name] = member
    return members


class BundleFetcher(RangeFetcher):
    """Serves a bundle's files at ``bundle:///metadata/…`` and ``bundle:///targets/…``;
    anything else is a 404, as a repository would answer."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        name = url.removeprefix(BASE_URL) if url.startswith(BASE_URL) else ""
        try:
            stream = self.bundle.open_member(name)
        except KeyError:
            raise DownloadHTTPError(f"{url}: not in the bundle", 404) from None
        return self._chunks(stream, offset)

    def _chunks(self, stream: IO[bytes], offset: int) -> Iterator[bytes]:
        with stream:
            stream.seek(offset)
            while chunk := stream.read(CHUNK):
                yield chunk


def write_bundle(
    out: Path, target: str, metadata: Mapping[str, bytes], artifact_name: str, artifact: Path
) -> None:
    """Write a bundle to ``out`` (replaced atomically once complete).

    ``metadata`` maps file names (``2.root.json``, ``timestamp.json``…) to their bytes;
    ``artifact_name`` is the artifact's path under ``targets/``.
    """
    tmp = tmp_path(out)
    tmp.unlink(missing_ok=True)
    with tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, INDEX, json.dumps({"format": FORMAT, "target": target}).encode())
        for name in sorted(metadata):
            _add_bytes(tar, f"metadata/{name}", metadata[name])
        info = tar.gettarinfo(str(artifact), arcname=f"targets/{artifact_name}")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o644
        with artifact.open("rb") as source:
            tar.addfile(info, source)
    with tmp.open("rb") as written:
        os.fsync(written.fileno())
    tmp.replace(out)
    fsync_dir(out.parent)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

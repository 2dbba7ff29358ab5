"""Streaming an artifact to disk, resumable, verified before anyone may use it.

:func:`fetch_artifact` downloads into ``DIR/<sha256>.part`` while hashing, and only a file
whose length and every hash equal those of its signed TUF target is renamed to
``DIR/<sha256>`` — the one name the installer is given. Guarantees:

* never more than the declared length is accepted: a longer (or endless) stream is refused
  the moment it exceeds, and its partial file deleted;
* a broken transfer keeps the ``.part`` file (fsynced) and raises
  :class:`DownloadInterrupted`; the next call resumes from its end (``Range``), re-hashing
  what is already on disk, so the final check covers every byte;
* a wrong digest deletes the partial file (:class:`ArtifactRefused`): the next attempt
  starts from scratch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuf.api.exceptions import DownloadError, DownloadHTTPError

from garrison.atomicfile import fsync_dir
from garrison.updates.bootenv import ImageVerificationFailed, UpdateError
from garrison.updates.digests import SHA256_HEX, hash_file
from garrison.updates.fetchers import RangeFetcher

if TYPE_CHECKING:
    from hashlib import _Hash as Hasher  # the type of hashlib's objects, named only in stubs

Progress = Callable[[int, int], None]  # (bytes held, declared length)


class ArtifactRefused(ImageVerificationFailed):
    """The artifact is longer than declared or does not have the signed digest."""


class DownloadInterrupted(UpdateError):
    """The transfer broke off; what arrived is kept and the next attempt resumes."""


@dataclass(frozen=True)
class Expected:
    """What the signed target says about the artifact."""

    length: int
    hashes: Mapping[str, str]  # algorithm → lower-case hex digest

    def __post_init__(self) -> None:
        if not SHA256_HEX.fullmatch(self.hashes.get("sha256", "")) or self.length < 0:
            raise ArtifactRefused(
                "the target declares no valid SHA-256 and length; this device needs both"
            )

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    def hashers(self) -> dict[str, Hasher]:
        try:
            return {name: hashlib.new(name) for name in self.hashes}
        except ValueError as exc:
            raise ArtifactRefused(
                f"the target lists a hash this device cannot check: {exc}"
            ) from exc


def no_progress(done: int, total: int) -> None:
    """The default progress callback: does nothing."""


def fetch_artifact(
    fetcher: RangeFetcher,
    url: str,
    expected: Expected,
    directory: Path,
    *,
    progress: Progress = no_progress,
) -> Path:
    """The verified artifact at ``directory/<sha256>``, downloading (or resuming) it."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / expected.sha256
    part = directory / f"{expected.sha256}.part"
    if final.exists():
        hashers = expected.hashers()
        if _digest_ok(hashers, expected, hash_file(final, hashers.values())):
            progress(expected.length, expected.length)
            return final
        final.unlink()
    held = part.stat().st_size if part.exists() else 0
    if held > expected.length:
        part.unlink()
        held = 0
    hashers = expected.hashers()
    if held:
        hash_file(part, hashers.values())
    progress(held, expected.length)
    if held < expected.length:
        held = _receive(fetcher, url, expected, part, held, hashers, progress)
    if held < expected.length:
        raise DownloadInterrupted(
            f"the download of {url} ended after {held} of {expected.length} bytes",
            hint="run the update again: it resumes where it stopped",
        )
    if not _digest_ok(hashers, expected, held):
        part.unlink()
        raise ArtifactRefused(
            f"the artifact from {url} does not have the digest its signed release declares",
            hint="the repository (server, mirror or bundle) holds a tampered or corrupted "
            "file; nothing was installed and the partial download was discarded",
        )
    part.replace(final)
    fsync_dir(directory)
    return final


def _receive(
    fetcher: RangeFetcher,
    url: str,
    expected: Expected,
    part: Path,
    held: int,
    hashers: dict[str, Hasher],
    progress: Progress,
) -> int:
    """Append the rest of ``url`` to ``part``; return the number of bytes now held."""
    chunks: Iterator[bytes] = iter(())
    too_long = False
    try:
        chunks = fetcher.fetch_from(url, held)
        with part.open("ab") as out:
            try:
                for chunk in chunks:
                    if held + len(chunk) > expected.length:
                        too_long = True
                        break
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    out.write(chunk)
                    held += len(chunk)
                    progress(held, expected.length)
            finally:
                out.flush()
                os.fsync(out.fileno())
    except DownloadHTTPError as exc:
        raise DownloadInterrupted(
            f"the repository answered HTTP {exc.status_code} for {url}",
            hint="the artifact is missing there; try again later, or another mirror",
        ) from exc
    except DownloadError as exc:
        raise DownloadInterrupted(
            f"the download broke off after {held} of {expected.length} bytes: {exc}",
            hint="run the update again: it resumes where it stopped",
        ) from exc
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()  # stop reading: an endless stream ends here
    if too_long:
        part.unlink()
        raise ArtifactRefused(
            f"the artifact from {url} is longer than the {expected.length} bytes its signed "
            "release declares",
            hint="the repository (server, mirror or bundle) sends extra (or endless) data; "
            "nothing was installed",
        )
    return held


def _digest_ok(hashers: Mapping[str, Hasher], expected: Expected, length: int) -> bool:
    return length == expected.length and all(
        hashers[name].hexdigest() == digest for name, digest in expected.hashes.items()
    )

"""``garrison release export``: one target, its artifact and the TUF metadata that proves
it, in one file (:mod:`.bundle`).

The exporter is itself a TUF client. It refreshes from the repository (the control plane
or any mirror) starting at the fleet's TUF root, keeps every metadata file the client
fetched, downloads and verifies the artifact, and only then writes the bundle: a bundle
verifies when it is written, and the device verifies it again against its own trust.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from garrison.updates.bundle import write_bundle
from garrison.updates.device_state import check_tuf_root
from garrison.updates.download import Expected, fetch_artifact
from garrison.updates.fetchers import RangeFetcher
from garrison.updates.tufclient import Repo, refresh_target


class RecordingFetcher(RangeFetcher):
    """Passes requests to ``inner`` and keeps the complete bodies of URLs under ``prefix``."""

    def __init__(self, inner: RangeFetcher, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.records: dict[str, bytes] = {}

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        chunks = self.inner.fetch_from(url, offset)
        if offset or not url.startswith(self.prefix):
            return chunks
        return self._record(url, chunks)

    def _record(self, url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        received: list[bytes] = []
        for chunk in chunks:
            received.append(chunk)
            yield chunk
        self.records[url.removeprefix(self.prefix)] = b"".join(received)


@dataclass(frozen=True)
class Exported:
    target: str
    length: int
    metadata_files: int


def export_bundle(
    repo: Repo, initial_root: bytes, target_path: str, out: Path, now: dt.datetime
) -> Exported:
    """Verify ``target_path`` from ``repo`` as a device would, then write the bundle."""
    recorder = RecordingFetcher(repo.fetcher, repo.metadata_url)
    recording = Repo(recorder, repo.metadata_url, repo.targets_url)
    with tempfile.TemporaryDirectory(prefix="garrison-export-") as work:
        verified = refresh_target(
            recording, Path(work) / "metadata", initial_root, target_path, now
        )
        target = verified.target
        expected = Expected(target.length, dict(target.hashes))
        artifact = fetch_artifact(repo.fetcher, verified.url, expected, Path(work) / "artifact")
        first = check_tuf_root(initial_root).signed.version
        metadata = {f"{first}.root.json": initial_root, **recorder.records}
        name = verified.url.removeprefix(repo.targets_url.rstrip("/") + "/")
        write_bundle(out, target.path, metadata, name, artifact)
    return Exported(target.path, target.length, len(metadata))

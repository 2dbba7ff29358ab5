"""The verified, resumable download on its own: in-memory fetchers and an httpx mock
transport, no sockets. Only a file that verified ever gets the artifact's name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.api.exceptions import DownloadError, DownloadHTTPError

from garrison.updates.download import (
    ArtifactRefused,
    DownloadInterrupted,
    Expected,
    fetch_artifact,
)
from garrison.updates.fetchers import HttpsFetcher, RangeFetcher

DATA = bytes(range(256)) * 1000
EXPECTED = Expected(len(DATA), {"sha256": hashlib.sha256(DATA).hexdigest()})
URL = "https://repo/targets/x"


class Source(RangeFetcher):
    """Serves ``data`` in 10,000-byte chunks; breaks off after ``cut`` bytes if given."""

    def __init__(self, data: bytes, cut: int | None = None) -> None:
        self.data, self.cut = data, cut
        self.offsets: list[int] = []

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        self.offsets.append(offset)
        return self._chunks(offset)

    def _chunks(self, offset: int) -> Iterator[bytes]:
        for start in range(offset, len(self.data), 10_000):
            if self.cut is not None and start >= self.cut:
                raise OSError("connection reset")
            yield self.data[start : start + 10_000]


def test_download_verifies_and_names_the_file_by_its_hash(tmp_path: Path) -> None:
    path = fetch_artifact(Source(DATA), URL, EXPECTED, tmp_path)
    assert path == tmp_path / EXPECTED.sha256 and path.read_bytes() == DATA
    again = Source(DATA)
    assert fetch_artifact(again, URL, EXPECTED, tmp_path) == path and again.offsets == []


def test_resume_after_a_broken_transfer(tmp_path: Path) -> None:
    with pytest.raises(DownloadInterrupted, match="broke off after 100000 of 256000"):
        fetch_artifact(Source(DATA, cut=100_000), URL, EXPECTED, tmp_path)
    assert (tmp_path / f"{EXPECTED.sha256}.part").stat().st_size == 100_000
    assert not (tmp_path / EXPECTED.sha256).exists()
    source = Source(DATA)
    assert fetch_artifact(source, URL, EXPECTED, tmp_path).read_bytes() == DATA
    assert source.offsets == [100_000]


def test_a_corrupted_partial_file_is_caught_at_the_end(tmp_path: Path) -> None:
    (tmp_path / f"{EXPECTED.sha256}.part").write_bytes(b"\x00" * 50_000)
    with pytest.raises(ArtifactRefused, match="does not have the digest"):
        fetch_artifact(Source(DATA), URL, EXPECTED, tmp_path)
    assert list(tmp_path.iterdir()) == []  # discarded: the next attempt starts afresh
    assert fetch_artifact(Source(DATA), URL, EXPECTED, tmp_path).read_bytes() == DATA


def test_a_short_stream_is_an_interruption(tmp_path: Path) -> None:
    with pytest.raises(DownloadInterrupted, match="ended after 255999 of 256000"):
        fetch_artifact(Source(DATA[:-1]), URL, EXPECTED, tmp_path)


def test_longer_than_declared_is_refused_and_discarded(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRefused, match="longer than the 256000 bytes"):
        fetch_artifact(Source(DATA + b"x"), URL, EXPECTED, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_every_listed_hash_is_checked(tmp_path: Path) -> None:
    both = Expected(len(DATA), {**EXPECTED.hashes, "sha512": "0" * 128})
    with pytest.raises(ArtifactRefused, match="does not have the digest"):
        fetch_artifact(Source(DATA), URL, both, tmp_path)
    with pytest.raises(ArtifactRefused, match="cannot check"):
        fetch_artifact(
            Source(DATA), URL, Expected(1, {**EXPECTED.hashes, "nohash": "00"}), tmp_path
        )
    with pytest.raises(ArtifactRefused, match="no valid SHA-256"):
        Expected(1, {"sha256": "../../etc/passwd"})


def _mock(handler: object) -> HttpsFetcher:
    return HttpsFetcher(httpx.Client(transport=httpx.MockTransport(handler)), chunk_size=7_000)  # type: ignore[arg-type]


def test_https_fetcher_ranges(tmp_path: Path) -> None:
    asked: list[str | None] = []

    def ranged(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("range"))
        start = int(request.headers["range"][6:-1]) if "range" in request.headers else 0
        if not start:
            return httpx.Response(200, content=DATA)
        headers = {"content-range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"}
        return httpx.Response(206, content=DATA[start:], headers=headers)

    assert b"".join(_mock(ranged).fetch_from(URL, 0)) == DATA
    assert b"".join(_mock(ranged).fetch_from(URL, 1234)) == DATA[1234:]
    assert asked == [None, "bytes=1234-"]

    def ignores_range(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DATA)

    assert b"".join(_mock(ignores_range).fetch_from(URL, 9_999)) == DATA[9_999:]

    def wrong_range(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, content=DATA, headers={"content-range": "bytes 0-9/10"})

    with pytest.raises(DownloadError, match="another range"):
        _mock(wrong_range).fetch_from(URL, 5)

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    with pytest.raises(DownloadHTTPError) as not_found:
        _mock(missing).fetch_from(URL, 0)
    assert not_found.value.status_code == 404

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(DownloadError, match="cannot reach"):
        _mock(broken).fetch_from(URL, 0)


def test_a_missing_artifact_is_reported_as_such(tmp_path: Path) -> None:
    class Empty(RangeFetcher):
        def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
            raise DownloadHTTPError("gone", 404)

    with pytest.raises(DownloadInterrupted, match="answered HTTP 404") as missing:
        fetch_artifact(Empty(), URL, EXPECTED, tmp_path)
    assert "another mirror" in missing.value.hint

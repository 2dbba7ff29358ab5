"""How the update client reaches a repository: the one seam between it and the network.

* :class:`RangeFetcher` — python-tuf's ``FetcherInterface`` plus :meth:`fetch_from`, which
  starts a download at a byte offset (to resume one). Whatever it returns is untrusted:
  python-tuf verifies metadata, :mod:`.download` verifies artifacts.
* :class:`HttpsFetcher` — over ``httpx``: the control plane or any mirror, with TLS pinned
  to the fleet root and, on a device, the device's certificate (mutual TLS).
* :func:`device_channel` — the device's mutual-TLS ``httpx`` client, built from the agent
  state directory.

Errors follow python-tuf's contract: ``DownloadHTTPError`` for an HTTP error status,
``DownloadError`` for anything else that breaks a transfer.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient.fetcher import FetcherInterface

from garrison.agent.channel import device_client
from garrison.agent.est_client import tls_context
from garrison.agent.identity import AgentConfig, StateDir
from garrison.updates.digests import CHUNK

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RangeFetcher(FetcherInterface):
    """A fetcher that can also resume: :meth:`fetch_from` starts at a byte offset."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.fetch_from(url, 0)

    @abc.abstractmethod
    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        """The bytes of ``url`` from ``offset`` on (``DownloadHTTPError`` on HTTP errors)."""

    def fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        """The bytes of ``url`` from ``offset`` on. Only ``DownloadError`` escapes, whether
        the request fails or the transfer breaks off midway."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        try:
            chunks = self._fetch_from(url, offset)
        except DownloadError:
            raise
        except Exception as exc:
            raise DownloadError(f"failed to download {url}: {exc}") from exc
        return _wrapped(url, chunks)


def _wrapped(url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, with any error during the transfer raised as a ``DownloadError``
    (closing this generator closes ``chunks``: a stream is never read further)."""
    try:
        yield from chunks
    except DownloadError:
        raise
    except Exception as exc:
        raise DownloadError(f"the download of {url} broke off: {exc}") from exc


class HttpsFetcher(RangeFetcher):
    """Downloads over an ``httpx.Client`` (which holds the TLS trust and identity).

    A resumed download asks for ``Range: bytes=OFFSET-``; a server that ignores the range
    and sends the whole file is handled by skipping the bytes already held.
    """

    def __init__(self, client: httpx.Client, chunk_size: int = CHUNK) -> None:
        self.client = client
        self.chunk_size = chunk_size

    @classmethod
    def pinned(cls, fleet_root_pem: Path, timeout: float = 60.0) -> HttpsFetcher:
        """A fetcher trusting only the fleet root, presenting no certificate."""
        context = tls_context(str(fleet_root_pem))
        return cls(httpx.Client(verify=context, timeout=timeout))

    def close(self) -> None:
        self.client.close()

    def _fetch_from(self, url: str, offset: int) -> Iterator[bytes]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self.client.build_request("GET", url, headers=headers)
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot reach {url}: {exc}") from exc
        status = response.status_code
        if status not in (200, 206) or (status == 206 and not offset):
            response.close()
            raise DownloadHTTPError(f"{url}: HTTP {status}", status)
        skip = offset if status == 200 else 0
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != offset:
                response.close()
                raise DownloadError(f"{url}: the server answered another range than asked")
        return self._chunks(url, response, skip)

    def _chunks(self, url: str, response: httpx.Response, skip: int) -> Iterator[bytes]:
        try:
            for chunk in response.iter_bytes(self.chunk_size):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise DownloadError(f"the download of {url} broke off: {exc}") from exc
        finally:
            response.close()


def device_channel(state: StateDir, config: AgentConfig, timeout: float = 60.0) -> httpx.Client:
    """The device's ``httpx`` client: TLS pinned to the fleet root, presenting the device's
    current certificate and (encrypted) key — the same channel as check-in."""
    return device_client(state, config, state.require_current(), timeout=timeout)

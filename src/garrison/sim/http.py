"""A lean HTTP/1.1 client connection on asyncio: one TLS connection, one request at a time,
kept alive. It is what lets one process speak for thousands of devices (httpx costs several
times more CPU per request, and a thread per device does not scale).

Guarantees:

* A response is returned only when it is complete: status line, headers, and a body of
  exactly ``Content-Length`` bytes or a complete chunked body. Anything else (a malformed
  status line or header, a body over :data:`MAX_BODY_BYTES`, the server closing mid-response)
  raises :class:`HttpProtocolError` and closes the connection.
* One request is in flight per connection; a second concurrent :meth:`HttpConnection.request`
  raises instead of interleaving.
* TLS is whatever ``ssl_context`` says; the simulator passes a context that trusts only the
  fleet root and presents the device's certificate (mutual TLS).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast

from garrison.errors import GarrisonError

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024


class HttpProtocolError(GarrisonError):
    """The connection failed or the server's answer is not valid HTTP/1.1."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def build_request(
    method: str,
    path: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    close: bool = False,
) -> bytes:
    """The bytes of one HTTP/1.1 request (``Content-Length`` always set for bodies)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ResponseParser:
    """Incremental parser for one response at a time."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_done = False
        self._length: int | None = None
        self._chunked = False
        self._body = bytearray()

    def reset(self) -> None:
        self.status = 0
        self.headers = {}
        self._head_done = False
        self._length = None
        self._chunked = False
        self._body = bytearray()

    def feed(self, data: bytes, head_only: bool) -> HttpResponse | None:
        """Add ``data``; return the response once it is complete (``head_only``: the
        answer to a HEAD request, or any 1xx/204/304, has no body)."""
        self.buffer += data
        if not self._head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise HttpProtocolError("response head too large")
                return None
            self._parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            if head_only or self.status in (204, 304) or 100 <= self.status < 200:
                self._length = 0
        if self._chunked:
            return self._feed_chunked()
        length = self._length or 0
        if len(self.buffer) < length:
            return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return HttpResponse(self.status, self.headers, body)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError(f"malformed status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpProtocolError(f"malformed header line {line[:80]!r}")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self._head_done = True
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._chunked = True
            return
        declared = self.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            raise HttpProtocolError(f"bad or too large Content-Length {declared[:20]!r}")
        self._length = int(declared)

    def _feed_chunked(self) -> HttpResponse | None:
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return None
            size_text = bytes(self.buffer[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(f"malformed chunk size {size_text[:20]!r}") from None
            if len(self._body) + size > MAX_BODY_BYTES:
                raise HttpProtocolError("chunked body too large")
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", end)  # after any trailers
                if trailer_end < 0:
                    return None
                del self.buffer[: trailer_end + 4]
                return HttpResponse(self.status, self.headers, bytes(self._body))
            if len(self.buffer) < end + 2 + size + 2:
                return None
            self._body += self.buffer[end + 2 : end + 2 + size]
            del self.buffer[: end + 2 + size + 2]


class HttpConnection(asyncio.Protocol):
    """One client connection. Create it with :meth:`open`."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._transport: asyncio.Transport | None = None
        self._parser = _ResponseParser()
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._head_only = False
        self._closed: BaseException | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        timeout: float = 30.0,
    ) -> HttpConnection:
        """Connect (and complete the TLS handshake) within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _transport, protocol = await loop.create_connection(
                    lambda: cls(host),
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise HttpProtocolError(f"cannot connect to {host}:{port}: {exc!r}") from exc
        return protocol

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._closed is None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            if data:
                self._fail(HttpProtocolError("unsolicited data from the server"))
            return
        try:
            response = self._parser.feed(data, self._head_only)
        except HttpProtocolError as exc:
            self._fail(exc)
            return
        if response is not None:
            waiter, self._waiter = self._waiter, None
            self._parser.reset()
            if response.header("connection").lower() == "close":
                self.close()
            if not waiter.done():
                waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                HttpProtocolError(f"connection lost mid-response: {self._closed!r}")
            )
        self._waiter = None

    def _fail(self, exc: HttpProtocolError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None
        self.close()

    # -- requests ----------------------------------------------------------------------

    async def send(
        self, raw: bytes, *, head_only: bool = False, timeout: float | None = None
    ) -> HttpResponse:
        """Send a pre-built request (:func:`build_request`) and wait for its response
        (at most ``timeout`` seconds: then the connection is closed and this raises)."""
        if self._waiter is not None:
            raise HttpProtocolError("a request is already in flight on this connection")
        if not self.is_open:
            raise HttpProtocolError(f"connection is closed ({self._closed!r})")
        assert self._transport is not None
        waiter: asyncio.Future[HttpResponse] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._head_only = head_only
        self._transport.write(raw)
        if timeout is None:
            return await waiter
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel (3.11)
                return await waiter
        except TimeoutError:
            self._waiter = None
            self.close()
            raise HttpProtocolError(f"no response within {timeout}s") from None

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        raw = build_request(method, path, self.host, headers, body)
        return await self.send(raw, head_only=method == "HEAD", timeout=timeout)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

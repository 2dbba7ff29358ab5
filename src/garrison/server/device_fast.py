"""The idle directive poll, served straight from the application's entry point.

Most device requests are ``GET /device/v1/directive`` with ``If-None-Match`` naming the
directive the device already holds; almost all of them end in ``304 Not Modified``.
:meth:`NotModifiedPath.serve` answers exactly those, before routing, middleware and
dependency solving, from one prepared query: the client certificates joined with their
devices and the devices' stored directives.

The query is batched: the requests that arrive together, or while a lookup is running, are
looked up at once by the next one (one statement; on PostgreSQL one round trip, made on a
thread of its own so that the event loop keeps reading requests meanwhile). Under load a
lookup serves dozens of requests; alone, a request waits only for its own.

Guarantees:

* The security rule of the device API holds on every request, kept-alive connection or not:
  the certificate must be one this fleet issued, still valid (not revoked or superseded, not
  expired) and its device active, checked by a lookup that starts after the request
  arrived, in the same statement that reads the ETag. Revoking a device or a certificate
  takes effect on its next request.
* The fast path answers only a request it is certain of: a ``GET`` with a client
  certificate that authenticates, a single (strong or weak) entity tag in ``If-None-Match``,
  and a stored directive with exactly that ETag. It then sends the same ``304`` as the
  FastAPI route (``ETag``, ``Garrison-Poll`` and ``Cache-Control`` headers, no body) and
  records the device as seen (:mod:`garrison.fleet.last_seen`). Anything else — no or
  another ETag, ``*`` or a list, no directive yet, any refusal, a database error — returns
  ``False`` having sent nothing, and the FastAPI route serves the request with all of its
  checks, answers and audited refusals.
* It never writes to the database itself (last-seen times are written in batches).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import sqlite3
import ssl
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography import x509
from sqlalchemy import String, any_, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Scope, Send

from garrison.identity.certificates import VALID
from garrison.server.context import ControlPlane
from garrison.server.tls import TLS_EXTENSION
from garrison.store.tables import certificates, device_directives, devices

log = logging.getLogger("garrison.server.device_fast")

DIRECTIVE_PATH = "/device/v1/directive"

# The certificates among :fingerprints that are valid and whose device is active, with the
# device's stored directive. (The certificate's expiry is checked from the certificate
# itself: the row records the same ``not_after``.)
_BASE = (
    select(
        certificates.c.fingerprint,
        certificates.c.device_id,
        device_directives.c.etag,
        device_directives.c.body,
    )
    .join(devices, devices.c.id == certificates.c.device_id)
    .join(device_directives, device_directives.c.device_id == certificates.c.device_id)
    .where(certificates.c.status == VALID, devices.c.status == "active")
)
_BY_ARRAY = _BASE.where(  # PostgreSQL: one statement text for any number of fingerprints
    certificates.c.fingerprint
    == any_(func.string_to_array(bindparam("fingerprints", type_=String), ","))
)  # (hex fingerprints joined by commas: cheaper to send than an array parameter)
_BY_JSON = _BASE.where(  # SQLite: the same, the list passed as one JSON array
    certificates.c.fingerprint.in_(
        select(func.json_each(bindparam("fingerprints", type_=String)).table_valued("value"))
    )
)
MAX_BATCH = 512

_PEER_KEY = "garrison.peer"  # cached in the connection's TLS extension dict
_POLL_CACHE_LIMIT = 4096
_DB_ERRORS = (SQLAlchemyError, sqlite3.Error, psycopg.Error, OSError)


def requested_etag(header: bytes) -> str | None:
    """The one entity tag of an ``If-None-Match`` value (``"x"`` or ``W/"x"``), or None for
    anything else (``*``, a list, malformed): those are left to the FastAPI route."""
    value = header.strip()
    if value.startswith(b"W/"):
        value = value[2:]
    if len(value) < 3 or value[:1] != b'"' or value[-1:] != b'"':
        return None
    inner = value[1:-1]
    if b'"' in inner or b"," in inner or not inner.isascii():
        return None
    return inner.decode("ascii")


def poll_header(poll_seconds: int, jitter_seconds: int) -> str:
    """The ``Garrison-Poll`` value the route and this path send: ``<seconds>;jitter=<s>``."""
    return f"{poll_seconds};jitter={jitter_seconds}"


@dataclass(frozen=True)
class Peer:
    """The verified client certificate of one TLS connection, as the fast path needs it."""

    fingerprint: str
    not_after: dt.datetime


def peer(scope: Scope) -> Peer | None:
    """The connection's client certificate (fingerprint and expiry), computed once per TLS
    connection and kept in its TLS extension dict (the certificate cannot change on it)."""
    tls: dict[str, Any] | None = (scope.get("extensions") or {}).get(TLS_EXTENSION)
    if not tls:
        return None
    cached = tls.get(_PEER_KEY)
    if cached is None:
        chain = tls.get("client_cert_chain")
        if not chain:
            return None
        der = ssl.PEM_cert_to_DER_cert(chain[0])
        cert = x509.load_der_x509_certificate(der)
        cached = Peer(hashlib.sha256(der).hexdigest(), cert.not_valid_after_utc)
        tls[_PEER_KEY] = cached
    assert isinstance(cached, Peer)
    return cached


@dataclass(frozen=True)
class Found:
    """A certificate that authenticates an active device, and its stored directive."""

    device_id: int
    etag: str
    body: str


class _Lookup:
    """The prepared query on one database connection held for this path (DB-API level: the
    statement is compiled once; SQLite runs it in autocommit, PostgreSQL in autocommit on a
    connection of its own, so every execution sees the latest committed state). Used from
    one thread only."""

    def __init__(self, plane: ControlPlane) -> None:
        self._stack = ExitStack()
        conn = self._stack.enter_context(plane.database.read())
        dbapi: Any = conn.connection.dbapi_connection
        self._dbapi = dbapi
        self._postgres = conn.dialect.name == "postgresql"
        compiled = (_BY_ARRAY if self._postgres else _BY_JSON).compile(dialect=conn.dialect)
        self._sql = compiled.string
        self._static = compiled.construct_params({"fingerprints": None})
        self._positions = compiled.positiontup
        if self._postgres:
            self._dbapi.autocommit = True
        self._cursor: Any = self._dbapi.cursor()

    def run(self, fingerprints: list[str]) -> dict[str, Found]:
        if self._positions is not None:
            params = {**self._static, "fingerprints": json.dumps(fingerprints)}
            self._cursor.execute(self._sql, [params[name] for name in self._positions])
        else:
            joined = ",".join(fingerprints)
            self._cursor.execute(self._sql, {**self._static, "fingerprints": joined})
        return {
            str(fingerprint): Found(int(device_id), str(etag), str(body))
            for fingerprint, device_id, etag, body in self._cursor.fetchall()
        }

    def close(self) -> None:
        try:
            self._cursor.close()
            if self._postgres:
                self._dbapi.autocommit = False
        finally:
            self._stack.close()


class _Batcher:
    """Looks fingerprints up in batches: a request waits for the lookup that starts after it
    arrived; lookups never overlap (one connection)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._lookup: _Lookup | None = None
        self._queue: list[tuple[str, asyncio.Future[Found | None]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="garrison-fastpath")
        # SQLite answers an indexed read in microseconds: on the event loop's thread, a
        # hop to another thread would cost more than the read. PostgreSQL is a round trip:
        # on the thread, while the event loop reads the next requests.
        self._inline = plane.database.dialect == "sqlite"
        self.batches = 0
        self.requests = 0

    async def find(self, fingerprint: str) -> Found | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Found | None] = loop.create_future()
        self._queue.append((fingerprint, waiter))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await waiter

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[tuple[str, asyncio.Future[Found | None]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                wanted = sorted({fingerprint for fingerprint, _ in batch})
                if self._inline:
                    found = self._run(wanted)
                else:
                    found = await loop.run_in_executor(self._thread, self._run, wanted)
                self.batches += 1
                self.requests += len(batch)
                for fingerprint, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(found.get(fingerprint))
        finally:
            self._running = False
            for _, waiter in [*batch, *self._queue]:  # after an error or at shutdown: the
                if not waiter.done():  # route serves (or the server is stopping anyway)
                    waiter.set_result(None)
            self._queue = []

    def _run(self, fingerprints: list[str]) -> dict[str, Found]:
        """One lookup. A database error drops the connection and finds nothing: those
        requests go to the route (which reports the error); it never yields a 304."""
        try:
            if self._lookup is None:
                self._lookup = _Lookup(self.plane)
            return self._lookup.run(fingerprints)
        except _DB_ERRORS as exc:
            log.warning("directive fast path: database error, left to the route: %s", exc)
            self._drop()
            return {}

    def _drop(self) -> None:
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            try:
                lookup.close()
            except _DB_ERRORS:
                log.debug("closing the fast path's connection failed", exc_info=True)

    def close(self) -> None:
        """Give the held database connection back and stop the thread."""
        self._thread.submit(self._drop).result()
        self._thread.shutdown(wait=True)


class NotModifiedPath:
    """The fast path of one application process: its batched lookup (one database
    connection, opened on first use, replaced after an error) and the ``Garrison-Poll``
    value per ETag (an ETag names one exact body, so that value never goes stale)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.lookup = _Batcher(plane)
        self._poll_by_etag: dict[str, bytes] = {}

    async def serve(self, scope: Scope, send: Send) -> bool:
        """Send the ``304`` and return True, or return False having sent nothing."""
        etag = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                etag = requested_etag(value)
                break
        if etag is None:
            return False
        client = peer(scope)
        now = self.plane.now()
        if client is None or client.not_after <= now:
            return False
        found = await self.lookup.find(client.fingerprint)
        if found is None or found.etag != etag:
            return False
        poll = self._poll_by_etag.get(etag)
        if poll is None:
            poll = self._remember(etag, found.body)
        self.plane.last_seen.record(found.device_id, now)
        await send(
            {
                "type": "http.response.start",
                "status": 304,
                "headers": [
                    (b"etag", b'"' + etag.encode() + b'"'),
                    (b"garrison-poll", poll),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return True

    def close(self) -> None:
        """Give the held database connection back (at shutdown)."""
        self.lookup.close()

    def _remember(self, etag: str, body: str) -> bytes:
        doc = json.loads(body)
        value = poll_header(int(doc["poll_seconds"]), int(doc["jitter_seconds"])).encode()
        if len(self._poll_by_etag) >= _POLL_CACHE_LIMIT:
            self._poll_by_etag.clear()
        self._poll_by_etag[etag] = value
        return value

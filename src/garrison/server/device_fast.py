"""The idle directive poll, served straight from the application's entry point.

Most device requests are ``GET /device/v1/directive`` with ``If-None-Match`` naming the
directive the device already holds; almost all of them end in ``304 Not Modified``.
:meth:`NotModifiedPath.serve` answers exactly those, before routing, middleware and
dependency solving, from one prepared query: the client certificate joined with its device
and the device's stored directive.

Guarantees:

* The security rule of the device API holds on every request, kept-alive connection or not:
  the certificate must be one this fleet issued, still valid (not revoked or superseded, not
  expired) and its device active, checked in the same query that reads the ETag. Revoking a
  device or a certificate takes effect on its next request.
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

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import ssl
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography import x509
from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Scope, Send

from garrison.identity.certificates import VALID
from garrison.server.context import ControlPlane
from garrison.server.tls import TLS_EXTENSION
from garrison.store.tables import certificates, device_directives, devices

log = logging.getLogger("garrison.server.device_fast")

DIRECTIVE_PATH = "/device/v1/directive"
POLL_HEADER = "garrison-poll"

# One row iff the certificate is valid, its device active and the device's stored directive
# has the ETag the device sent; the row gives what the 304 needs. (The certificate's expiry
# is checked from the certificate itself: the row records the same ``not_after``.)
_NOT_MODIFIED = (
    select(certificates.c.device_id, device_directives.c.body)
    .join(devices, devices.c.id == certificates.c.device_id)
    .join(device_directives, device_directives.c.device_id == certificates.c.device_id)
    .where(
        certificates.c.fingerprint == bindparam("fingerprint"),
        certificates.c.status == VALID,
        devices.c.status == "active",
        device_directives.c.etag == bindparam("etag"),
    )
)

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


class _Lookup:
    """The prepared query on one database connection held for this path (DB-API level: the
    statement is compiled once; SQLite runs it in autocommit, PostgreSQL in autocommit on a
    connection of its own, so every execution sees the latest committed state)."""

    def __init__(self, plane: ControlPlane) -> None:
        self._stack = ExitStack()
        conn = self._stack.enter_context(plane.database.read())
        dbapi: Any = conn.connection.dbapi_connection
        self._dbapi = dbapi
        compiled = _NOT_MODIFIED.compile(dialect=conn.dialect)
        self._sql = compiled.string
        self._static = compiled.construct_params({"fingerprint": "", "etag": ""})
        self._positions = compiled.positiontup
        self._postgres = conn.dialect.name == "postgresql"
        if self._postgres:
            self._dbapi.autocommit = True
        self._cursor: Any = self._dbapi.cursor()

    def run(self, fingerprint: str, etag: str) -> tuple[int, str] | None:
        params = {**self._static, "fingerprint": fingerprint, "etag": etag}
        if self._positions is not None:
            self._cursor.execute(self._sql, [params[name] for name in self._positions])
        else:
            self._cursor.execute(self._sql, params)
        row = self._cursor.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        try:
            self._cursor.close()
            if self._postgres:
                self._dbapi.autocommit = False
        finally:
            self._stack.close()


class NotModifiedPath:
    """The fast path of one application process. It holds one database connection for its
    query (opened on first use, replaced after an error) and the ``Garrison-Poll`` value per
    ETag (an ETag names one exact body, so that value never goes stale)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._lookup: _Lookup | None = None
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
        if client is None:
            return False
        now = self.plane.now()
        if client.not_after <= now:
            return False
        row = self._find(client.fingerprint, etag)
        if row is None:
            return False
        device_id, body = row
        poll = self._poll_by_etag.get(etag)
        if poll is None:
            poll = self._remember(etag, body)
        self.plane.last_seen.record(device_id, now)
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

    def _find(self, fingerprint: str, etag: str) -> tuple[int, str] | None:
        """The query, on the event loop's thread: one indexed read, shorter than a hop to
        a worker thread. A database error drops the connection and leaves the request to
        the route (which reports it); it never yields a 304."""
        try:
            if self._lookup is None:
                self._lookup = _Lookup(self.plane)
            return self._lookup.run(fingerprint, etag)
        except _DB_ERRORS as exc:
            log.warning("directive fast path: database error, left to the route: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        """Give the held database connection back (at shutdown, or after an error)."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            try:
                lookup.close()
            except _DB_ERRORS:
                log.debug("closing the fast path's connection failed", exc_info=True)

    def _remember(self, etag: str, body: str) -> bytes:
        doc = json.loads(body)
        value = poll_header(int(doc["poll_seconds"]), int(doc["jitter_seconds"])).encode()
        if len(self._poll_by_etag) >= _POLL_CACHE_LIMIT:
            self._poll_by_etag.clear()
        self._poll_by_etag[etag] = value
        return value

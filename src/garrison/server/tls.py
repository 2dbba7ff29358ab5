"""TLS for the control plane, and the one seam where the verified client certificate
reaches the application.

uvicorn does not implement the ASGI TLS extension, so :class:`TlsScopeProtocol` (a small
subclass of uvicorn's httptools protocol) adds ``scope["extensions"]["tls"]`` with the
peer's certificate, as the extension specifies (``client_cert_chain``: PEM strings, leaf
first). Python's ssl module exposes only the leaf before 3.13; devices present only their
leaf, so that is all we need. The certificate in the scope has been verified by the TLS
handshake against the fleet CAs; the application additionally checks that it is a
certificate this fleet issued and has not revoked.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TLS_EXTENSION = "tls"


def server_ssl_context(
    cert_chain: Path, key: Path, key_password: bytes | None, client_cas: Path
) -> ssl.SSLContext:
    """TLS 1.2+ server context; client certificates are requested and, if sent, verified.

    Client certificates are optional at the TLS layer because factory enrollment (EST with
    HTTP Basic) comes before a device has one; every device endpoint requires one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # no client-initiated renegotiation (CPU DoS)
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.load_cert_chain(cert_chain, key, password=key_password)
    context.load_verify_locations(cafile=client_cas)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def peer_certificate_der(transport: asyncio.BaseTransport) -> bytes | None:
    """The DER client certificate verified on this connection, if any."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


class TlsScopeProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol plus the ASGI TLS extension in every request scope."""

    _tls_extension: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if transport.get_extra_info("ssl_object") is None:
            self._tls_extension = None
            return
        der = peer_certificate_der(transport)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        self._tls_extension = {
            "server_cert": None,
            "client_cert_chain": chain,
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_extension is not None:
            scope: dict[str, Any] = self.scope  # type: ignore[assignment]
            scope["extensions"] = {TLS_EXTENSION: self._tls_extension}


def client_certificate(scope: dict[str, Any] | Any) -> bytes | None:
    """The verified client certificate (DER) of a request scope, or ``None``."""
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION)
    if not tls or not tls.get("client_cert_chain"):
        return None
    return ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0])

"""Simulated devices' identities: a key made in this process, a certificate from real EST
enrollment (HTTP Basic serial:token, PKCS#10), and the mutual-TLS context that presents it.

Guarantees:

* Each device has its own P-256 key, generated here; only its CSR leaves the process.
* :func:`enroll` accepts the answer only if it is a certificate for this serial's key
  issued under the fleet (chain checked up to the pinned root, as the real agent does):
  anything else raises :class:`garrison.agent.est_client.EnrollmentFailed`.
* The certificate and key are written to one file readable only by this user (Python's
  ``ssl`` loads client certificates only from files); :func:`device_context` trusts only the
  fleet root.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from garrison.agent.est_client import EnrollmentFailed, build_csr, parse_certs_only
from garrison.agent.identity import verify_issued
from garrison.sim.http import HttpConnection, HttpProtocolError

ENROLL_PATH = "/.well-known/est/simpleenroll"
CACERTS_PATH = "/.well-known/est/cacerts"


@dataclass(frozen=True)
class SimIdentity:
    """One enrolled simulated device: its serial and the file holding certificate + key."""

    serial: str
    pem_path: Path
    certificate: x509.Certificate

    @property
    def certificate_serial(self) -> str:
        return format(self.certificate.serial_number, "x")


def server_context(root_ca: Path) -> ssl.SSLContext:
    """TLS that trusts only the fleet root (for enrollment, before a device has a cert)."""
    context = ssl.create_default_context(cafile=str(root_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def device_context(root_ca: Path, identity: SimIdentity) -> ssl.SSLContext:
    """Mutual TLS for one device: trust the fleet root, present the device's certificate."""
    context = server_context(root_ca)
    context.load_cert_chain(str(identity.pem_path))
    return context


async def fetch_intermediates(
    connection: HttpConnection, root: x509.Certificate
) -> list[x509.Certificate]:
    """The fleet's CA certificates other than the root (``/cacerts``)."""
    response = await connection.request("GET", CACERTS_PATH, timeout=30)
    if response.status != 200:
        raise EnrollmentFailed(f"EST /cacerts refused ({response.status})")
    return [c for c in parse_certs_only(response.body) if c != root]


async def enroll(
    connection: HttpConnection,
    serial: str,
    token: str,
    directory: Path,
    root: x509.Certificate,
    intermediates: list[x509.Certificate],
) -> SimIdentity:
    """Enroll ``serial`` with its factory ``token`` over ``connection`` (kept alive, no
    client certificate) and store the identity under ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = base64.encodebytes(build_csr(key, serial))
    basic = base64.b64encode(f"{serial}:{token}".encode()).decode()
    headers = {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/pkcs10",
        "Content-Transfer-Encoding": "base64",
    }
    try:
        response = await connection.request("POST", ENROLL_PATH, headers, csr, timeout=60)
    except HttpProtocolError as exc:
        raise EnrollmentFailed(f"{serial}: cannot reach the EST server: {exc}") from exc
    if response.status != 200:
        text = response.body.decode(errors="replace").strip()[:300]
        raise EnrollmentFailed(f"{serial}: EST enrollment refused ({response.status}): {text}")
    leaf = parse_certs_only(response.body)[0]
    verify_issued(leaf, intermediates, root, key)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *intermediates])
    pem += key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / f"{serial}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return SimIdentity(serial, path, leaf)


async def enroll_many(
    host: str,
    port: int,
    root_ca: Path,
    tokens: list[tuple[str, str]],
    directory: Path,
    *,
    connections: int = 8,
) -> list[SimIdentity]:
    """Enroll every ``(serial, token)`` over ``connections`` kept-alive connections; return
    the identities in the order of ``tokens``. The first refusal raises."""
    root = x509.load_pem_x509_certificate(root_ca.read_bytes())
    context = server_context(root_ca)
    directory.mkdir(parents=True, exist_ok=True)
    results: list[SimIdentity | None] = [None] * len(tokens)
    queue = list(enumerate(tokens))
    queue.reverse()

    async def worker() -> None:
        connection = await HttpConnection.open(host, port, context)
        try:
            intermediates = await fetch_intermediates(connection, root)
            while queue:
                index, (serial, token) = queue.pop()
                results[index] = await enroll(
                    connection, serial, token, directory, root, intermediates
                )
        finally:
            connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(connections, len(tokens))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return [identity for identity in results if identity is not None]

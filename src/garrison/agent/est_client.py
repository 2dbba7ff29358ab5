"""A small RFC 7030 client: what the agent uses to enroll and re-enroll."""

from __future__ import annotations

import base64
import binascii
import ssl

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from garrison.errors import ConfigError, GarrisonError
from garrison.keys import SigningKey
from garrison.pki.authority import signature_hash
from garrison.pki.profile import device_uri

EST_PATH = "/.well-known/est"


class EnrollmentFailed(GarrisonError):
    """The EST server refused or could not be reached."""


def build_csr(key: SigningKey, serial: str) -> bytes:
    """A DER PKCS#10 request naming the device ``serial``, signed by ``key``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(device_uri(serial))]), False
        )
        .sign(key, signature_hash(key))
    )
    return csr.public_bytes(serialization.Encoding.DER)


def parse_certs_only(body: bytes) -> list[x509.Certificate]:
    """Certificates from an EST base64 PKCS#7 certs-only body."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except (binascii.Error, ValueError) as exc:
        raise EnrollmentFailed(
            "EST server answered with something that is not PKCS#7 certs-only"
        ) from exc
    if not certs:
        raise EnrollmentFailed("EST server answered with no certificate")
    return certs


def _post(
    client: httpx.Client, path: str, csr_der: bytes, auth: httpx.Auth | None
) -> list[x509.Certificate]:
    try:
        response = client.post(
            EST_PATH + path,
            content=base64.encodebytes(csr_der),
            headers={"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"},
            auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.HTTPError as exc:
        raise EnrollmentFailed(
            f"cannot reach the EST server: {exc}", hint="check the server URL and network"
        ) from exc
    if response.status_code != 200:
        raise EnrollmentFailed(
            f"EST {path} refused ({response.status_code}): {response.text.strip()[:300]}"
        )
    return parse_certs_only(response.content)


def enroll(client: httpx.Client, serial: str, token: str, csr_der: bytes) -> list[x509.Certificate]:
    """``/simpleenroll`` with the factory token as HTTP Basic."""
    return _post(client, "/simpleenroll", csr_der, httpx.BasicAuth(serial, token))


def reenroll(client: httpx.Client, csr_der: bytes) -> list[x509.Certificate]:
    """``/simplereenroll``; ``client`` must present the current certificate."""
    return _post(client, "/simplereenroll", csr_der, None)


def fetch_cacerts(client: httpx.Client) -> list[x509.Certificate]:
    try:
        response = client.get(EST_PATH + "/cacerts")
    except httpx.HTTPError as exc:
        raise EnrollmentFailed(f"cannot reach the EST server: {exc}") from exc
    if response.status_code != 200:
        raise EnrollmentFailed(f"EST /cacerts failed ({response.status_code})")
    return parse_certs_only(response.content)


def tls_context(
    fleet_root_pem: str,
    cert_file: str | None = None,
    key_file: str | None = None,
    key_password: bytes | None = None,
) -> ssl.SSLContext:
    """A TLS 1.2+ client context pinned to the fleet root, optionally with our certificate.

    A file that cannot be read or used is a :class:`ConfigError` naming it (``ssl`` itself
    does not say which file it failed on)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=fleet_root_pem)
    except OSError as exc:
        raise ConfigError(f"cannot use the fleet root {fleet_root_pem}: {_reason(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file, password=key_password)
        except OSError as exc:
            names = cert_file if key_file is None else f"{cert_file} and {key_file}"
            raise ConfigError(f"cannot use the TLS identity {names}: {_reason(exc)}") from exc
    return context


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__

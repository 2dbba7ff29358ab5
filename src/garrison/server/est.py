"""EST (RFC 7030) under ``/.well-known/est/``: exactly the RFC's media types and encodings."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from garrison.errors import GarrisonError
from garrison.identity.certificates import fingerprint
from garrison.pki.csr import MAX_CSR_BYTES
from garrison.server.context import (
    ControlPlane,
    CurrentDevice,
    Plane,
    basic_credentials,
    read_body,
)
from garrison.server.errors import HttpError, garrison_error_handler
from garrison.server.tls import client_certificate

ENROLL_PATH = "/.well-known/est/simpleenroll"

router = APIRouter(prefix="/.well-known/est", tags=["EST (RFC 7030)"])

PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return b"\x06" + bytes([len(body)]) + bytes(body)


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


# CsrAttrs (RFC 7030 section 4.5.2): sign with ecdsa-with-SHA256; use an EC key on P-256.
CSR_ATTRS_DER = _tlv(
    0x30,
    _oid("1.2.840.10045.4.3.2")
    + _tlv(0x30, _oid("1.2.840.10045.2.1") + _tlv(0x31, _oid("1.2.840.10045.3.1.7"))),
)


def _base64_response(der: bytes, media_type: str) -> Response:
    return Response(
        content=base64.encodebytes(der),
        media_type=media_type,
        headers={"Content-Transfer-Encoding": "base64"},
    )


def _require_pkcs10(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/pkcs10":
        raise HttpError(
            415,
            f"content type must be application/pkcs10, not {media or 'none'!r}",
            hint="send the base64-encoded DER CSR with Content-Type: application/pkcs10",
        )


@router.get("/cacerts", summary="CA certificates (PKCS#7 certs-only, base64)", name="est.cacerts")
async def cacerts(cp: Plane) -> Response:
    return _base64_response(cp.enrollment.cacerts(), "application/pkcs7-mime")


@router.get(
    "/csrattrs",
    summary="CSR attributes the server wants (base64 DER CsrAttrs)",
    name="est.csrattrs",
)
async def csrattrs() -> Response:
    return _base64_response(CSR_ATTRS_DER, "application/csrattrs")


@router.post(
    "/simpleenroll",
    summary="Factory enrollment: HTTP Basic serial/token + PKCS#10",
    name="est.enroll",
)
async def simpleenroll(request: Request, cp: Plane) -> Response:
    return await _enroll(request, cp)


async def _enroll(request: Request, cp: ControlPlane) -> Response:
    """The body of ``/simpleenroll``, shared by the FastAPI route (which documents it) and
    :func:`serve_simpleenroll` (which serves it)."""
    idevid = client_certificate(request.scope)
    if idevid is not None and "authorization" not in request.headers:
        # A manufacturer-issued IDevID (RFC 7030 section 3.3.2 client certificate).
        request.state.actor = f"idevid:{fingerprint(idevid)[:16]}"
        _require_pkcs10(request)
        body = await read_body(request, MAX_CSR_BYTES)
        issued = await run_in_threadpool(cp.enrollment.enroll_idevid, idevid, body)
    else:
        serial, token = basic_credentials(request)
        _require_pkcs10(request)
        body = await read_body(request, MAX_CSR_BYTES)
        issued = await cp.enrollment.enroll_async(serial, token, body)
    der = pkcs7.serialize_certificates([issued.certificate], serialization.Encoding.DER)
    return _base64_response(der, PKCS7_CERTS_ONLY)


async def serve_simpleenroll(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /simpleenroll`` straight from the application's entry point: no middleware,
    routing or dependency solving; refusals go through the same error boundary."""
    request = Request(scope, receive)
    request.state.audit_action = "est.enroll"
    cp = scope["app"].state.control_plane
    try:
        response = await _enroll(request, cp)
    except GarrisonError as exc:
        response = await garrison_error_handler(request, exc)
    await response(scope, receive, send)


@router.post(
    "/simplereenroll",
    summary="Re-enrollment authenticated by the current certificate",
    name="est.reenroll",
)
async def simplereenroll(request: Request, cp: Plane, device: CurrentDevice) -> Response:
    _require_pkcs10(request)
    body = await read_body(request, MAX_CSR_BYTES)
    issued = await run_in_threadpool(cp.enrollment.reenroll, device, body)
    der = pkcs7.serialize_certificates([issued.certificate], serialization.Encoding.DER)
    return _base64_response(der, PKCS7_CERTS_ONLY)

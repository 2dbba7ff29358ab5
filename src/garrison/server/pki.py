"""Revocation publication: CRL (RFC 5280) and OCSP responder (RFC 6960), plus the CA files."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from garrison.identity.revocation import certificate_status, current_crl, fresh_or_publish_crl
from garrison.pki.revocation import MAX_OCSP_REQUEST_BYTES, answer_ocsp
from garrison.server.context import ControlPlane, Plane, read_body

router = APIRouter(prefix="/pki", tags=["PKI"])

OCSP_RESPONSE = "application/ocsp-response"


def crl_der(cp: ControlPlane) -> bytes:
    """The current CRL, re-signed first if it is due."""
    with cp.database.read() as conn:
        der = current_crl(conn, cp.now())
    if der is not None:
        return der
    with cp.database.write() as conn:
        return fresh_or_publish_crl(conn, cp.fleet.issuing, cp.now())


@router.get("/crl", summary="Current CRL of the device issuing CA (DER)")
async def crl(cp: Plane) -> Response:
    der = await run_in_threadpool(crl_der, cp)
    return Response(der, media_type="application/pkix-crl")


@router.get("/ca.pem", summary="Fleet CA chain (issuing CA, then root), PEM")
async def ca_chain(cp: Plane) -> Response:
    pem = cp.fleet.issuing.certificate.public_bytes(serialization.Encoding.PEM)
    pem += cp.fleet.root_certificate.public_bytes(serialization.Encoding.PEM)
    return Response(pem, media_type="application/x-pem-file")


def _answer(cp: ControlPlane, request_der: bytes) -> bytes:
    with cp.database.read() as conn:
        return answer_ocsp(
            cp.fleet.issuing, request_der, lambda serial: certificate_status(conn, serial), cp.now()
        )


@router.post("/ocsp", summary="OCSP responder (RFC 6960, POST)", name="ocsp.request")
async def ocsp_post(request: Request, cp: Plane) -> Response:
    body = await read_body(request, MAX_OCSP_REQUEST_BYTES)
    return Response(await run_in_threadpool(_answer, cp, body), media_type=OCSP_RESPONSE)


@router.get("/ocsp/{encoded:path}", summary="OCSP responder (RFC 6960, GET)", name="ocsp.request")
async def ocsp_get(encoded: str, cp: Plane) -> Response:
    try:
        der = base64.b64decode(urllib.parse.unquote(encoded), validate=True)
    except (binascii.Error, ValueError):
        der = b""
    return Response(await run_in_threadpool(_answer, cp, der), media_type=OCSP_RESPONSE)

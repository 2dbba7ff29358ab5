"""Interoperability: stock ``curl`` and ``openssl`` against a served control plane.

No Garrison client code is in the loop: every key, request, certificate, CRL and OCSP
exchange below is produced and checked by the command-line tools a third party would use,
speaking RFC 7030 (EST), RFC 5280 (CRL) and RFC 6960 (OCSP) over real HTTPS.

``openssl ocsp -url https://...`` (OpenSSL 3.0) does not verify the responder's TLS
certificate: ``-CAfile`` only verifies the signed response. The response is
self-authenticating, so that is still sound; :func:`ocsp_over_verified_tls` additionally
shows the fully verified path (request built by openssl, carried by ``curl --cacert``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import Officer, RunningFleet, create_batch

if not (shutil.which("curl") and shutil.which("openssl") and shutil.which("base64")):
    if os.environ.get("CI"):
        raise RuntimeError("the interop tests need curl, openssl and base64 on PATH")
    pytest.skip("curl, openssl or base64 is not installed", allow_module_level=True)

SERIALS = ["SN-1", "SN-2", "SN-3"]


def run_raw(*args: str | Path, stdin: bytes | None = None, merge: bool = False) -> bytes:
    """Run a command; return its stdout (with stderr if ``merge``), or raise with stderr."""
    proc = subprocess.run(
        [str(a) for a in args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stdout if merge else proc.stderr
        raise AssertionError(f"{args[0]} exited {proc.returncode}: {detail.decode()}")
    return proc.stdout


def run(*args: str | Path, stdin: bytes | None = None, merge: bool = False) -> str:
    return run_raw(*args, stdin=stdin, merge=merge).decode()


def run_failing(*args: str | Path) -> str:
    """Run a command that must fail; return its stdout and stderr together."""
    proc = subprocess.run(
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0, f"{args[0]} unexpectedly succeeded: {proc.stdout.decode()}"
    return proc.stdout.decode()


def serial_text(cert: Path) -> str:
    """The serial as openssl prints it everywhere (hex byte pairs, upper case)."""
    return run("openssl", "x509", "-in", cert, "-noout", "-serial").strip().split("=")[1]


def serial_of(cert: Path) -> int:
    return int(serial_text(cert), 16)


def print_certs(est_body: bytes) -> str:
    """PEM certificates inside a base64 PKCS#7 certs-only EST response."""
    der = run_raw("base64", "-d", stdin=est_body)
    return run("openssl", "pkcs7", "-inform", "DER", "-print_certs", stdin=der)


@dataclass
class Device:
    serial: str
    key: Path
    cert: Path

    @property
    def tls(self) -> tuple[str, ...]:
        return ("--cert", str(self.cert), "--key", str(self.key))


@dataclass
class Lab:
    """The served fleet as seen from outside: a URL, trust anchors, tokens and a workdir."""

    dir: Path
    url: str
    root: Path
    issuing: Path
    officer: str
    tokens: dict[str, str]
    _files: int = field(default=0)

    def file(self, name: str) -> Path:
        self._files += 1
        return self.dir / f"{self._files:03d}-{name}"

    def curl(self, path: str, *args: str) -> tuple[int, bytes]:
        """``curl`` against the fleet, trusting only its root; returns (status, body)."""
        out = self.file("body")
        code = run(
            "curl", "-sS", "--max-time", "20", "--cacert", self.root,
            "-o", out, "-w", "%{http_code}", *args, self.url + path,
        )  # fmt: skip
        return int(code), out.read_bytes()

    def csr(self, serial: str) -> tuple[Path, Path]:
        """A fresh P-256 key and its base64 DER CSR naming ``serial``."""
        key, der = self.file(f"{serial}.key"), self.file(f"{serial}.csr.der")
        run("openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", key)
        run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={serial}", "-outform", "DER",
            "-out", der)  # fmt: skip
        b64 = self.file(f"{serial}.csr.b64")
        b64.write_bytes(run_raw("base64", der))
        return key, b64

    def issued(self, serial: str, key: Path, status: int, body: bytes) -> Device:
        assert status == 200, body.decode()
        cert = self.file(f"{serial}.pem")
        cert.write_text(print_certs(body))
        return Device(serial, key, cert)

    def enroll(self, serial: str) -> Device:
        key, csr = self.csr(serial)
        status, body = self.curl(
            "/.well-known/est/simpleenroll", "-u", f"{serial}:{self.tokens[serial]}",
            "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
        )  # fmt: skip
        return self.issued(serial, key, status, body)

    def try_reenroll(self, device: Device) -> tuple[int, bytes, Path]:
        """``simplereenroll`` over mTLS with ``device`` and a new key: (status, body, key)."""
        key, csr = self.csr(device.serial)
        status, body = self.curl(
            "/.well-known/est/simplereenroll", *device.tls,
            "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
        )  # fmt: skip
        return status, body, key

    def reenroll(self, device: Device) -> Device:
        status, body, key = self.try_reenroll(device)
        return self.issued(device.serial, key, status, body)

    def checkin(self, device: Device | None) -> tuple[int, dict[str, object]]:
        tls = device.tls if device else ()
        status, body = self.curl(
            "/device/v1/checkin", *tls, "-H", "Content-Type: application/json", "-d", "{}"
        )
        return status, json.loads(body)

    def revoke(self, serial: str) -> None:
        status, body = self.curl(
            f"/api/v1/devices/{serial}/revoke", "-H", f"Authorization: Bearer {self.officer}",
            "-H", "Content-Type: application/json", "-d", '{"reason": "key-compromise"}',
        )  # fmt: skip
        assert status == 200, body.decode()

    def ocsp(self, *target: str | Path) -> str:
        """``openssl ocsp`` with a nonce; the output must say the response verified."""
        out = run(
            "openssl", "ocsp", "-issuer", self.issuing, *target, "-url", f"{self.url}/pki/ocsp",
            "-CAfile", self.root, "-nonce", "-resp_text", merge=True,
        )  # fmt: skip
        assert "Response verify OK" in out
        return out

    def crl(self) -> tuple[str, Path]:
        """The current CRL as ``openssl crl -text`` prints it, and as a PEM file."""
        status, der = self.curl("/pki/crl")
        assert status == 200
        pem = self.file("crl.pem")
        run("openssl", "crl", "-inform", "DER", "-out", pem, stdin=der)
        return run("openssl", "crl", "-in", pem, "-noout", "-text"), pem

    def verify(self, cert: Path, *extra: str | Path) -> list[str | Path]:
        return ["openssl", "verify", *extra, "-CAfile", self.root, "-untrusted", self.issuing, cert]


@pytest.fixture
def lab(served: RunningFleet, officer: Officer, tmp_path: Path) -> Lab:
    batch = create_batch(served, officer, serials=SERIALS)
    tokens = {t["serial"]: t["token"] for t in cast(list[dict[str, str]], batch["tokens"])}
    issuing = served.fleet.paths.issuing_ca
    return Lab(tmp_path, served.url, served.root_ca, issuing, officer.token, tokens)


def crl_number(text: str) -> int:
    match = re.search(r"X509v3 CRL Number: *\n *(\d+)", text)
    assert match, text
    return int(match.group(1))


def listed(text: str, cert: Path) -> bool:
    return f"Serial Number: {serial_text(cert)}\n" in text


def test_est_simpleenroll_issues_a_client_certificate(lab: Lab) -> None:
    device = lab.enroll("SN-1")
    text = run("openssl", "x509", "-in", device.cert, "-noout", "-text")
    assert "Subject: O = Test Fleet, serialNumber = SN-1, CN = SN-1" in text
    assert "CA:FALSE" in text
    assert "TLS Web Client Authentication" in text
    assert "X509v3 CRL Distribution Points:" in text
    assert f"URI:{lab.url}/pki/crl" in text
    assert f"OCSP - URI:{lab.url}/pki/ocsp" in text
    assert run(*lab.verify(device.cert)) == f"{device.cert}: OK\n"


def test_est_cacerts_and_csrattrs(lab: Lab) -> None:
    status, body = lab.curl("/.well-known/est/cacerts")
    assert status == 200
    pem = print_certs(body)
    assert pem.count("-----BEGIN CERTIFICATE-----") == 2
    assert "subject=O = Test Fleet, CN = Test Fleet Root CA" in pem
    assert "subject=O = Test Fleet, CN = Test Fleet Device Issuing CA 1" in pem
    status, body = lab.curl("/.well-known/est/csrattrs")
    assert status == 200
    asn1 = run("openssl", "asn1parse", "-inform", "DER", stdin=run_raw("base64", "-d", stdin=body))
    assert re.search(r"OBJECT +:ecdsa-with-SHA256", asn1)
    assert re.search(r"OBJECT +:id-ecPublicKey", asn1)
    assert re.search(r"OBJECT +:prime256v1", asn1)


def test_checkin_needs_mutual_tls(lab: Lab) -> None:
    device = lab.enroll("SN-1")
    status, body = lab.checkin(device)
    assert status == 200
    assert body["serial"] == "SN-1"
    assert int(str(body["certificate"]), 16) == serial_of(device.cert)
    status, body = lab.checkin(None)
    assert status == 403
    assert body["detail"] == "a client certificate is required (mutual TLS)"


def test_reenrollment_keeps_the_old_certificate_until_the_new_one_is_used(lab: Lab) -> None:
    old = lab.enroll("SN-1")
    new = lab.reenroll(old)
    assert serial_of(new.cert) != serial_of(old.cert)
    pubkey = ("openssl", "x509", "-noout", "-pubkey", "-in")
    assert run(*pubkey, new.cert) != run(*pubkey, old.cert)
    assert run(*lab.verify(new.cert)) == f"{new.cert}: OK\n"

    assert lab.checkin(old)[0] == 200  # still good: the device may not have switched yet
    assert f"{old.cert}: good" in lab.ocsp("-cert", old.cert)
    status, body = lab.checkin(new)  # first use of the new certificate retires the old one
    assert status == 200
    assert int(str(body["certificate"]), 16) == serial_of(new.cert)
    status, body = lab.checkin(old)
    assert status == 403
    assert body["detail"] == "client certificate is revoked (superseded)"
    out = lab.ocsp("-cert", old.cert)
    assert f"{old.cert}: revoked" in out
    assert "Reason: superseded" in out
    assert lab.checkin(new)[0] == 200


def ocsp_over_verified_tls(lab: Lab, cert: Path, method: str) -> str:
    """OCSP with the request built by openssl and carried by curl over verified TLS."""
    request = lab.file("ocsp.req")
    run("openssl", "ocsp", "-issuer", lab.issuing, "-cert", cert, "-nonce", "-reqout", request)
    if method == "POST":
        status, response = lab.curl(
            "/pki/ocsp", "-H", "Content-Type: application/ocsp-request",
            "--data-binary", f"@{request}",
        )  # fmt: skip
    else:
        encoded = urllib.parse.quote(run("base64", "-w0", request), safe="")
        status, response = lab.curl(f"/pki/ocsp/{encoded}")
    assert status == 200
    answer = lab.file("ocsp.resp")
    answer.write_bytes(response)
    # With -reqin, openssl also checks that the response echoes the request's nonce.
    out = run("openssl", "ocsp", "-reqin", request, "-respin", answer, "-CAfile", lab.root,
              "-resp_text", merge=True)  # fmt: skip
    assert "Response verify OK" in out
    assert "OCSP Nonce" in out
    return out


def test_ocsp_good_revoked_and_unknown(lab: Lab) -> None:
    device = lab.enroll("SN-1")
    out = lab.ocsp("-cert", device.cert)
    assert f"{device.cert}: good" in out
    assert "OCSP Nonce" in out.split("Response Extensions:")[1]
    assert "Cert Status: good" in ocsp_over_verified_tls(lab, device.cert, "POST")
    assert "Cert Status: good" in ocsp_over_verified_tls(lab, device.cert, "GET")

    lab.revoke("SN-1")
    out = lab.ocsp("-cert", device.cert)
    assert f"{device.cert}: revoked" in out
    assert "Reason: keyCompromise" in out
    assert "Cert Status: revoked" in ocsp_over_verified_tls(lab, device.cert, "GET")

    out = lab.ocsp("-serial", "0x1234")
    assert "0x1234: unknown" in out
    assert "Cert Status: unknown" in out


def test_crl_lists_revoked_devices_and_openssl_verify_honours_it(lab: Lab) -> None:
    first, second, bystander = (lab.enroll(serial) for serial in SERIALS)
    text, _ = lab.crl()
    number = crl_number(text)
    assert "No Revoked Certificates." in text

    lab.revoke("SN-1")
    text, pem = lab.crl()
    assert crl_number(text) > number
    number = crl_number(text)
    assert listed(text, first.cert)
    assert "Key Compromise" in text
    assert not listed(text, second.cert)
    out = run_failing(*lab.verify(first.cert, "-crl_check", "-CRLfile", pem))
    assert "error 23 at 0 depth lookup: certificate revoked" in out
    assert run(*lab.verify(second.cert, "-crl_check", "-CRLfile", pem)) == f"{second.cert}: OK\n"

    lab.revoke("SN-2")
    text, pem = lab.crl()
    assert crl_number(text) > number
    assert listed(text, first.cert) and listed(text, second.cert)
    assert not listed(text, bystander.cert)
    out = run_failing(*lab.verify(second.cert, "-crl_check", "-CRLfile", pem))
    assert "certificate revoked" in out
    ok = run(*lab.verify(bystander.cert, "-crl_check", "-CRLfile", pem))
    assert ok == f"{bystander.cert}: OK\n"


def test_superseded_certificates_reach_the_crl(lab: Lab) -> None:
    old = lab.enroll("SN-1")
    number = crl_number(lab.crl()[0])  # a CRL is already published before any renewal
    lost = lab.reenroll(old)  # a renewal the device never stored...
    new = lab.reenroll(old)  # ...is superseded by the next one at once
    assert "Reason: superseded" in lab.ocsp("-cert", lost.cert)
    text, _ = lab.crl()
    assert crl_number(text) > number
    number = crl_number(text)
    assert listed(text, lost.cert)
    assert not listed(text, old.cert)
    assert lab.checkin(new)[0] == 200  # first use of the new certificate retires the old one
    text, _ = lab.crl()
    assert crl_number(text) > number
    assert listed(text, old.cert)
    assert not listed(text, new.cert)


def test_revoked_device_is_refused(lab: Lab) -> None:
    device = lab.enroll("SN-1")
    lab.revoke("SN-1")
    status, body = lab.checkin(device)
    assert status == 403
    assert body["detail"] == "device 'SN-1' is revoked"
    status, text, _ = lab.try_reenroll(device)
    assert status == 403
    assert text.decode().startswith("device 'SN-1' is revoked")

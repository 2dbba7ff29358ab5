"""Setting up a fleet for a simulation through its real admin API: principals, a batch of
factory tokens, a firmware release signed by throwaway release managers, a group and a
campaign. For the benchmarks, the tests and trying the control plane out; every change goes
through the same routes, roles and audit as an operator's.

Release managers are delegated with :func:`garrison.updates.offline.configure_release_managers`,
an offline operation that needs the fleet's data directory (the TUF targets key): the
scenario runs on the control plane's machine.

Every failed call raises :class:`ScenarioError` with the status and the server's answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner

from garrison.errors import GarrisonError
from garrison.identity.fleet import Fleet
from garrison.store.database import Database
from garrison.updates.offline import configure_release_managers


class ScenarioError(GarrisonError):
    """The control plane refused a set-up step."""


def _checked(response: httpx.Response, expected: tuple[int, ...] = (200, 201)) -> Any:
    if response.status_code not in expected:
        raise ScenarioError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else None


class Scenario:
    """An admin-API session on one control plane (``url``, pinned to ``root_ca``)."""

    def __init__(self, url: str, root_ca: Path, admin_token: str, timeout: float = 120) -> None:
        self.url = url
        self.root_ca = root_ca
        self.admin_token = admin_token
        self.timeout = timeout
        self.tokens: dict[str, str] = {}
        self._signers: list[CryptoSigner] = []

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            verify=ssl.create_default_context(cafile=str(self.root_ca)),
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=self.timeout,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = None,
        expected: tuple[int, ...] = (200, 201),
        **kwargs: Any,
    ) -> Any:
        """One API call as the principal holding ``role`` (created on first use), else the
        admin."""
        token = self.principal(role) if role else None
        with self.api(token) as api:
            return _checked(api.request(method, path, **kwargs), expected)

    def principal(self, role: str) -> str:
        """The token of this scenario's principal with ``role`` (named ``sim-<role>``)."""
        if role not in self.tokens:
            made = self.call("POST", "/principals", json={"name": f"sim-{role}", "role": role})
            self.tokens[role] = str(made["token"])
        return self.tokens[role]

    def batch(self, serials: list[str], model: str) -> list[tuple[str, str]]:
        """A production batch of ``serials`` of ``model``: ``(serial, token)`` pairs."""
        self.principal("manufacturer")
        created = self.call(
            "POST",
            "/batches",
            role="security-officer",
            json={
                "name": f"sim {model} {serials[0] if serials else ''}"[:128],
                "manufacturer": "sim-manufacturer",
                "model": model,
                "serials": serials,
            },
        )
        return [(t["serial"], t["token"]) for t in created["tokens"]]

    def release_managers(self, fleet: Fleet, database: Database) -> None:
        """Delegate releases to one throwaway key (threshold 1), held by this scenario."""
        self._signers = [CryptoSigner(ec.generate_private_key(ec.SECP256R1()))]
        configure_release_managers(
            fleet, database, [s.public_key for s in self._signers], 1, dt.datetime.now(dt.UTC)
        )

    def publish(
        self,
        name: str,
        version: str,
        hardware: list[str],
        data: bytes | None = None,
        security_version: int = 1,
    ) -> dict[str, Any]:
        """Upload, propose and sign a firmware image release; returns the release."""
        if not self._signers:
            raise ScenarioError("call release_managers() first")
        data = data if data is not None else hashlib.sha256(f"{name} {version}".encode()).digest()
        token = self.principal("release-manager")
        with self.api(token) as api:
            stored = _checked(api.put("/artifacts", content=data))
            release = _checked(
                api.post(
                    "/releases",
                    json={
                        "name": name,
                        "version": version,
                        "hardware": hardware,
                        "security_version": security_version,
                        "install": "image",
                        "health_checks": [],
                        "sha256": stored["sha256"],
                    },
                )
            )
            for signer in self._signers:
                payload = api.get(f"/releases/{release['id']}/payload").content
                signature = signer.sign(payload)
                release = _checked(
                    api.post(
                        f"/releases/{release['id']}/signatures",
                        json={"keyid": signature.keyid, "signature": signature.signature},
                    )
                )
        if release["state"] != "published":
            raise ScenarioError(f"release {name} {version} is {release['state']}, not published")
        result: dict[str, Any] = release
        return result

    def group(self, name: str, *, where: str | None = None, members: Sequence[str] = ()) -> None:
        """A dynamic group (filter ``where``) or a static one with ``members``."""
        kind = "dynamic" if where is not None else "static"
        body: dict[str, Any] = {"name": name, "kind": kind}
        if where is not None:
            body["filter"] = where
        self.call("POST", "/groups", role="operator", json=body)
        for start in range(0, len(members), 10_000):
            chunk = list(members[start : start + 10_000])
            self.call("POST", f"/groups/{name}/members", role="operator", json={"add": chunk})

    def campaign(
        self, name: str, group: str, release: tuple[str, str], plan: dict[str, Any]
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "group": group,
            "release": {"name": release[0], "version": release[1]},
            "plan": plan,
        }
        result: dict[str, Any] = self.call("POST", "/campaigns", role="operator", json=body)
        return result

    def show(self, campaign_id: int, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "GET", f"/campaigns/{campaign_id}", role="operator", params=params
        )
        return result

    def level(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/fleet/level", role="operator")
        return result

"""A release from upload to a device's disk: 2-of-3 release managers sign on their own
machines, the control plane publishes, and a stock python-tuf client (ngclient.Updater with
its default fetcher) given only the root metadata downloads and verifies the target."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from tuf.ngclient import Updater

from garrison.updates.offline import configure_release_managers
from tests.conftest import RunningFleet

IMAGE = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def managers(served: RunningFleet) -> list[tuple[CryptoSigner, str]]:
    signers = [CryptoSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(3)]
    configure_release_managers(
        served.fleet, served.database, [s.public_key for s in signers], 2, dt.datetime.now(dt.UTC)
    )
    tokens = []
    with served.api() as api:
        for n in range(3):
            body = api.post("/principals", json={"name": f"rm{n}", "role": "release-manager"})
            assert body.status_code == 201
            tokens.append(body.json()["token"])
    return list(zip(signers, tokens, strict=True))


def _release(served: RunningFleet, token: str) -> dict:  # type: ignore[type-arg]
    with served.api(token) as api:
        stored = api.put("/artifacts", content=IMAGE).json()
        response = api.post(
            "/releases",
            json={"name": "fw", "version": "1.2.0", "hardware": ["gw-2"], "security_version": 3,
                  "install": "image", "health_checks": [["true"]], "sha256": stored["sha256"]},
        )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _sign(served: RunningFleet, release_id: int, signer: CryptoSigner, token: str) -> dict:  # type: ignore[type-arg]
    with served.api(token) as api:
        payload = api.get(f"/releases/{release_id}/payload").content
        signature = signer.sign(payload)
        response = api.post(
            f"/releases/{release_id}/signatures",
            json={"keyid": signature.keyid, "signature": signature.signature},
        )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_stock_tuf_client_downloads_a_two_of_three_release(
    served: RunningFleet, managers: list[tuple[CryptoSigner, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    release = _release(served, managers[0][1])
    assert release["state"] == "pending" and release["missing"] == 2
    first = _sign(served, release["id"], *managers[0])
    assert first["state"] == "pending" and first["missing"] == 1
    second = _sign(served, release["id"], *managers[1])
    assert second["state"] == "published" and second["missing"] == 0

    monkeypatch.setenv("SSL_CERT_FILE", str(served.root_ca))  # TLS trust for urllib3's default
    (tmp_path / "meta").mkdir()
    updater = Updater(
        str(tmp_path / "meta"), f"{served.url}/tuf/metadata/", str(tmp_path),
        f"{served.url}/tuf/targets/", bootstrap=served.fleet.paths.tuf_root.read_bytes(),
    )  # fmt: skip
    updater.refresh()
    info = updater.get_targetinfo("fw/1.2.0/fw-1.2.0.img")
    assert info is not None and info.length == len(IMAGE)
    assert info.custom["garrison"]["security_version"] == 3
    assert Path(updater.download_target(info)).read_bytes() == IMAGE


def test_one_manager_alone_cannot_publish(
    served: RunningFleet, managers: list[tuple[CryptoSigner, str]]
) -> None:
    release = _release(served, managers[0][1])
    _sign(served, release["id"], *managers[0])
    again = _sign(served, release["id"], *managers[0])  # the same key twice counts once
    assert again["state"] == "pending" and again["missing"] == 1
    outsider = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
    with served.api(managers[2][1]) as api:
        payload = api.get(f"/releases/{release['id']}/payload").content
        signature = outsider.sign(payload)
        refused = api.post(
            f"/releases/{release['id']}/signatures",
            json={"keyid": signature.keyid, "signature": signature.signature},
        )
    assert refused.status_code == 403 and "not a release manager" in refused.text
    with served.client() as client:
        assert client.get("/tuf/metadata/1.releases.json").status_code == 404

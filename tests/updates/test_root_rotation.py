"""Rotating the TUF root key without breaking devices: a device keeps updating across the
rotation, a stock client follows it, and a root that the old key did not sign is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import Updater
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.errors import PolicyError
from garrison.settings import read_settings
from garrison.store.tables import tuf_metadata
from garrison.updates.client import UpdateClient
from garrison.updates.repository import rotate_root
from garrison.updates.store import load_repository
from tests.updates.conftest import World


def _updater(world: World, meta: Path) -> Updater:
    meta.mkdir(exist_ok=True)
    url = world.fleet.url
    return Updater(
        str(meta),
        f"{url}/tuf/metadata/",
        str(meta.parent),
        f"{url}/tuf/targets/",
        bootstrap=world.fleet.fleet.paths.tuf_root.read_bytes(),
    )


def test_devices_follow_a_rotated_root(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = world.enroll()
    first = world.publish("fw", "1.0.0")
    with UpdateClient.for_agent(device.state) as client:
        assert client.update(first.target).outcome == "committed"  # type: ignore[union-attr]

    data_dir = world.fleet.fleet.paths.root
    rotated = CliRunner().invoke(app, ["tuf", "rotate-root", "--data-dir", str(data_dir)])
    assert rotated.exit_code == 0 and "root v2 published" in rotated.output, rotated.output
    assert read_settings(data_dir).tuf_root_key.startswith("file:keys/tuf-root-")

    second = world.publish("fw", "1.1.0")
    with UpdateClient.for_agent(device.state) as client:  # the device still holds root v1
        assert client.update(second.target).outcome == "committed"  # type: ignore[union-attr]
    monkeypatch.setenv("SSL_CERT_FILE", str(world.fleet.root_ca))
    stock = _updater(world, tmp_path / "stock")
    stock.refresh()
    root = Metadata[Root].from_file(str(tmp_path / "stock" / "root.json"))
    assert root.signed.version == 2


def test_a_root_the_old_key_did_not_sign_is_refused(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rogue = CryptoSigner(ec.generate_private_key(ec.SECP256R1()))
    with world.fleet.database.read() as conn:
        repo = load_repository(conn)
    with pytest.raises(PolicyError, match="current root's threshold"):
        rotate_root(repo, [rogue], [rogue], dt.datetime.now(dt.UTC))
    # Even written straight into the repository, a client refuses it.
    root = Root(version=2, expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    root.add_key(rogue.public_key, "root")
    for role in ("targets", "snapshot", "timestamp"):
        root.add_key(rogue.public_key, role)
    md = Metadata(root)
    md.sign(rogue)
    with world.fleet.database.write() as conn:
        conn.execute(
            tuf_metadata.insert().values(
                role="root", version=2, data=md.to_bytes(), created_at=dt.datetime.now(dt.UTC)
            )
        )
    monkeypatch.setenv("SSL_CERT_FILE", str(world.fleet.root_ca))
    with pytest.raises(RepositoryError):
        _updater(world, tmp_path / "stock").refresh()

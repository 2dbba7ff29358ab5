"""The pure TUF repository core, checked by a stock python-tuf client (ngclient.Updater)
reading the metadata through an in-memory fetcher: threshold signing, publication, refresh."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, Signature
from tuf.api.exceptions import DownloadHTTPError, UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from garrison.errors import InvalidRequest, PolicyError
from garrison.updates.repository import (
    Repository,
    SignatureRefused,
    add_release_signature,
    create_repository,
    propose_release,
    publish_release,
    refresh_online,
    release_delegation,
    set_release_managers,
    signatures_missing,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def signer() -> CryptoSigner:
    return CryptoSigner(ec.generate_private_key(ec.SECP256R1()))


class Files(FetcherInterface):
    """An in-memory mirror: URL → bytes, as the published repository would serve them."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.served: list[str] = []  # the paths answered, in order

    def publish(self, repo: Repository) -> None:
        for role in ("root", "targets", "snapshot"):
            md: Metadata = getattr(repo, role)  # type: ignore[type-arg]
            self.files[f"meta/{md.signed.version}.{role}.json"] = md.to_bytes()
        if repo.releases is not None:
            self.files[f"meta/{repo.releases.signed.version}.releases.json"] = (
                repo.releases.to_bytes()
            )
        self.files["meta/timestamp.json"] = repo.timestamp.to_bytes()

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = url.removeprefix("https://mirror/")
        if path not in self.files:
            raise DownloadHTTPError(f"not found: {url}", 404)
        self.served.append(path)
        yield self.files[path]


@pytest.fixture
def world(tmp_path: Path) -> tuple[Repository, dict[str, CryptoSigner], Files]:
    keys = {
        name: signer() for name in ("root", "targets", "snapshot", "timestamp", "rm1", "rm2", "rm3")
    }
    repo = create_repository(
        [keys["root"]], keys["targets"], keys["snapshot"], keys["timestamp"], 2, NOW
    )
    managers = [keys[n].public_key for n in ("rm1", "rm2", "rm3")]
    targets = set_release_managers(repo, managers, 2, keys["targets"], NOW)
    repo = dataclasses.replace(repo, targets=targets)
    repo = refresh_online(repo, keys["snapshot"], keys["timestamp"], NOW, new_snapshot=True)
    files = Files()
    files.publish(repo)
    return repo, keys, files


def updater(tmp_path: Path, files: Files, repo: Repository) -> Updater:
    meta = tmp_path / "client-meta"
    meta.mkdir(exist_ok=True)
    return Updater(
        str(meta), "https://mirror/meta/", str(tmp_path), "https://mirror/targets/",
        fetcher=files, bootstrap=repo.root.to_bytes(),
    )  # fmt: skip


IMAGE = b"firmware 1.2.0 " * 1000


def test_two_of_three_release_managers_publish(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    repo, keys, files = world
    target = TargetFile.from_data("fw/1.2.0/gw-2.img", IMAGE, ["sha256"])
    proposal = propose_release(repo, target, NOW)
    assert signatures_missing(repo, proposal) == 2
    add_release_signature(repo, proposal, keys["rm1"].sign(proposal.signed_bytes))
    with pytest.raises(PolicyError, match="1 more needed"):
        publish_release(repo, proposal, keys["snapshot"], keys["timestamp"], NOW)
    with pytest.raises(SignatureRefused, match="not a release manager"):
        add_release_signature(repo, proposal, keys["snapshot"].sign(proposal.signed_bytes))
    forged = Signature(keys["rm2"].public_key.keyid, keys["rm2"].sign(b"something else").signature)
    with pytest.raises(SignatureRefused, match="does not verify"):
        add_release_signature(repo, proposal, forged)
    add_release_signature(repo, proposal, keys["rm2"].sign(proposal.signed_bytes))
    published = publish_release(repo, proposal, keys["snapshot"], keys["timestamp"], NOW)
    assert published.snapshot.signed.meta["releases.json"].version == 1
    files.publish(published)
    files.files[f"targets/fw/1.2.0/{target.hashes['sha256']}.gw-2.img"] = IMAGE

    client = updater(tmp_path, files, repo)
    client.refresh()
    info = client.get_targetinfo("fw/1.2.0/gw-2.img")
    assert info is not None and info.length == len(IMAGE)
    path = client.download_target(info)
    assert Path(path).read_bytes() == IMAGE


def test_a_stale_proposal_cannot_publish(world: tuple) -> None:  # type: ignore[type-arg]
    repo, keys, _ = world
    first = propose_release(repo, TargetFile.from_data("a", b"a", ["sha256"]), NOW)
    second = propose_release(repo, TargetFile.from_data("b", b"b", ["sha256"]), NOW)
    for proposal in (first, second):
        for rm in ("rm1", "rm3"):
            add_release_signature(repo, proposal, keys[rm].sign(proposal.signed_bytes))
    repo = publish_release(repo, first, keys["snapshot"], keys["timestamp"], NOW)
    with pytest.raises(PolicyError, match="another release was published"):
        publish_release(repo, second, keys["snapshot"], keys["timestamp"], NOW)


def test_client_refuses_a_release_signed_by_one_manager(world: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """Even if the server were compromised and published a one-signature release."""
    repo, keys, files = world
    target = TargetFile.from_data("fw/evil", b"evil", ["sha256"])
    proposal = propose_release(repo, target, NOW)
    proposal.signatures[keys["rm1"].public_key.keyid] = keys["rm1"].sign(proposal.signed_bytes)
    forced = dataclasses.replace(repo, releases=proposal)
    forced = refresh_online(forced, keys["snapshot"], keys["timestamp"], NOW, new_snapshot=True)
    files.publish(forced)
    client = updater(tmp_path, files, repo)
    client.refresh()
    with pytest.raises(UnsignedMetadataError, match="releases was signed by 1/2 keys"):
        client.get_targetinfo("fw/evil")
    assert files.served[-1] == "meta/1.releases.json"  # served, and refused for its signatures


def test_a_key_named_twice_counts_once(world: tuple) -> None:  # type: ignore[type-arg]
    repo, keys, _ = world
    rm1, rm2 = keys["rm1"].public_key, keys["rm2"].public_key
    with pytest.raises(InvalidRequest, match="between 1 and 1 distinct keys"):
        set_release_managers(repo, [rm1, rm1], 2, keys["targets"], NOW)
    targets = set_release_managers(repo, [rm1, rm2, rm1], 2, keys["targets"], NOW)
    repo = dataclasses.replace(repo, targets=targets)
    managers, threshold = release_delegation(repo)
    assert sorted(managers) == sorted([rm1.keyid, rm2.keyid]) and threshold == 2


def test_no_release_managers_is_refused(world: tuple) -> None:  # type: ignore[type-arg]
    repo, keys, _ = world
    for threshold in (0, 1):
        with pytest.raises(InvalidRequest, match="at least one release manager"):
            set_release_managers(repo, [], threshold, keys["targets"], NOW)

"""``garrison release`` and ``garrison release-manager``: releasing software under TUF."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from cryptography.hazmat.primitives import serialization
from rich.progress import Progress
from rich.table import Table
from securesystemslib.signer import CryptoSigner

from garrison.cli.common import (
    ApiClient,
    DataDir,
    ServerUrl,
    Token,
    add_row,
    api_call,
    console,
    failing,
    open_database,
    resolve_data_dir,
    transfer_progress,
)
from garrison.clock import utc_now as now
from garrison.errors import GarrisonError
from garrison.identity.keyref import KeySecrets, open_key
from garrison.keys import generate_software_key, save_software_key
from garrison.keys.pkcs11 import closing_key

release_app = typer.Typer(
    help="Signed releases: propose, sign (k of n), list.", no_args_is_help=True
)
manager_app = typer.Typer(
    help="Release managers' keys (needs the offline targets key).", no_args_is_help=True
)

PASSPHRASE_ENV = "GARRISON_RELEASE_KEY_PASSPHRASE"  # noqa: S105 (a variable name)

KeyRef = Annotated[
    str,
    typer.Option(
        "--key", help="Your release key: a PEM file (encrypted) or pkcs11:token=T;object=O"
    ),
]


def _passphrase() -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise GarrisonError(f"set {PASSPHRASE_ENV} to the passphrase of your release key")
    return value.encode()


@manager_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="Private key file to create (encrypted)")],
) -> None:
    """Create a release manager's key pair; give the .pub file to whoever holds the targets key."""
    with failing():
        if out.exists():
            raise GarrisonError(f"{out} exists; refusing to overwrite a key")
        key = generate_software_key("ecdsa-p256")
        save_software_key(key, out, _passphrase())
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        out.with_suffix(".pub").write_bytes(public)
    signer = CryptoSigner(key)
    console.print(f"key {out} (public {out.with_suffix('.pub')}), keyid {signer.public_key.keyid}")


@manager_app.command("set")
def set_managers(
    key: Annotated[
        list[Path], typer.Option("--key", help="A release manager's public key (repeat)")
    ],
    threshold: Annotated[int, typer.Option(min=1, max=16, help="Signatures needed (k)")],
    data_dir: DataDir = None,
) -> None:
    """Name exactly these release managers and the threshold, signed with the fleet's offline
    targets key (run where that key is)."""
    from garrison.identity.fleet import load_fleet
    from garrison.updates.offline import configure_release_managers, public_key_from_pem

    with failing():
        fleet = load_fleet(resolve_data_dir(data_dir))
        keys = [public_key_from_pem(path.read_bytes()) for path in key]
        with open_database(fleet.database_url) as database:
            repo = configure_release_managers(fleet, database, keys, threshold, now())
    console.print(
        f"{len(keys)} release manager key(s), threshold {threshold}; "
        f"targets v{repo.targets.signed.version}, snapshot v{repo.snapshot.signed.version}"
    )


def _chunks(source: BinaryIO, progress: Progress) -> Iterator[bytes]:
    task = progress.add_task("upload", total=os.fstat(source.fileno()).st_size)
    while chunk := source.read(1024 * 1024):
        progress.advance(task, len(chunk))
        yield chunk


@release_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Software name, e.g. gw-firmware")],
    version: Annotated[str, typer.Option(help="Version, e.g. 1.2.0")],
    hardware: Annotated[list[str], typer.Option(help="Compatible hardware model (repeat)")],
    security_version: Annotated[int, typer.Option(min=0, help="Anti-rollback version")],
    image: Annotated[Path, typer.Option(help="The image or package file")],
    install: Annotated[str, typer.Option(help="image (A/B slot) or app (package)")] = "image",
    health_check: Annotated[
        list[str] | None, typer.Option(help="Command run after install; exit 0 = healthy (repeat)")
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Upload an artifact and propose it as a release; it publishes when k managers sign."""
    with failing(), image.open("rb") as source, ApiClient(data_dir, server, token) as api:
        with transfer_progress() as progress:
            stored = api.call("PUT", "/artifacts", content=_chunks(source, progress))
        body = {
            "name": name,
            "version": version,
            "hardware": hardware,
            "security_version": security_version,
            "install": install,
            "health_checks": [check.split() for check in health_check or []],
            "sha256": stored["sha256"],
        }
        release = api.call("POST", "/releases", json=body)
    console.print(
        f"release {release['id']} proposed: {release['target_path']} "
        f"({stored['length']} bytes); {release['missing']} signature(s) needed"
    )


@release_app.command("sign")
def sign(
    release_id: int,
    key: KeyRef,
    pkcs11_module: Annotated[str, typer.Option(help="PKCS#11 module for a pkcs11: key")] = "",
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Sign a proposed release with your own key (on your machine) and send the signature."""
    ref = key if key.startswith(("pkcs11:", "file:")) else f"file:{Path(key).resolve()}"
    passphrase = os.environ.get(PASSPHRASE_ENV)
    secrets = KeySecrets(
        passphrase.encode() if passphrase else None,
        pkcs11_module,
        os.environ.get("GARRISON_PKCS11_PIN"),
    )
    with (
        failing(),
        closing_key(open_key(ref, Path.cwd(), secrets)) as signing_key,
        ApiClient(data_dir, server, token) as api,
    ):
        payload = api.call("GET", f"/releases/{release_id}/payload", raw=True)
        signature = CryptoSigner(signing_key).sign(payload)
        release = api.call(
            "POST",
            f"/releases/{release_id}/signatures",
            json={"keyid": signature.keyid, "signature": signature.signature},
        )
    state = release["state"]
    more = "" if state == "published" else f"; {release['missing']} more signature(s) needed"
    console.print(f"release {release_id} signed with key {signature.keyid[:16]}…: {state}{more}")


@release_app.command("list")
def list_releases(data_dir: DataDir = None, server: ServerUrl = None, token: Token = None) -> None:
    """List releases with their signing state."""
    rows = api_call(data_dir, server, token, "GET", "/releases")
    table = Table("id", "target", "security", "state", "signatures", "missing")
    for r in rows:
        custom = r["custom"].get("garrison", {})
        add_row(
            table,
            r["id"],
            r["target_path"],
            custom.get("security_version", ""),
            r["state"],
            r["signatures"],
            r["missing"],
        )
    console.print(table)


@release_app.command("export")
def export(
    target: Annotated[str, typer.Option(help="TUF target path, e.g. fw/1.2.0/fw-1.2.0.img")],
    out: Annotated[Path, typer.Option(help="The bundle file to write")],
    tuf_root: Annotated[
        Path | None,
        typer.Option(help="The fleet's TUF root [default: DATA_DIR/pki/tuf-root.json]"),
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
) -> None:
    """Write one file (TUF metadata + artifact) for a site without a network; it is verified
    here as a device would, and again by 'garrison agent install' against the device's trust."""
    from garrison.settings import read_settings
    from garrison.updates.export import export_bundle
    from garrison.updates.fetchers import HttpsFetcher
    from garrison.updates.tufclient import Repo

    root = resolve_data_dir(data_dir)
    with failing():
        base = (server or read_settings(root).public_url).rstrip("/")
        initial = (tuf_root or root / "pki" / "tuf-root.json").read_bytes()
        fetcher = HttpsFetcher.pinned(root / "pki" / "root-ca.pem")
        try:
            repo = Repo(fetcher, f"{base}/tuf/metadata/", f"{base}/tuf/targets/")
            exported = export_bundle(repo, initial, target, out, now())
        finally:
            fetcher.close()
    console.print(
        f"exported {exported.target} ({exported.length} bytes, "
        f"{exported.metadata_files} metadata files) to {out}"
    )


tuf_app = typer.Typer(
    help="The update repository's own keys (offline operations).", no_args_is_help=True
)


@tuf_app.command("rotate-root")
def rotate_root(
    new_key: Annotated[
        str | None,
        typer.Option(help="Reference of the new root key [default: a new encrypted file]"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Replace the TUF root key: the new root is signed by the old key and the new one, so
    devices follow it on their next refresh. Run where the old root key is."""
    from garrison.identity.fleet import load_fleet
    from garrison.updates.offline import rotate_root_key

    stamp = now().strftime("%Y%m%d%H%M%S")
    ref = new_key or f"file:keys/tuf-root-{stamp}.key.pem"
    with failing():
        fleet = load_fleet(resolve_data_dir(data_dir))
        with open_database(fleet.database_url) as database:
            repo = rotate_root_key(fleet, database, ref, now())
    console.print(
        f"root v{repo.root.signed.version} published, signed by the old and the new key; "
        f"new root key {ref} (keep the old key until every device has refreshed, then destroy it)"
    )

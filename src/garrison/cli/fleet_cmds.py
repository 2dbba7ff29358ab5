"""``garrison init`` and ``garrison server``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from garrison.cli.common import DataDir, console, failing, resolve_data_dir
from garrison.clock import utc_now as now
from garrison.errors import GarrisonError


def init(
    data_dir: DataDir = None,
    organization: Annotated[
        str, typer.Option(help="Fleet owner, written into every CA name")
    ] = "Garrison Fleet",
    public_url: Annotated[
        str, typer.Option(help="URL devices use to reach the control plane")
    ] = "https://127.0.0.1:8443",
    listen: Annotated[
        str, typer.Option(help="Default HOST:PORT for 'garrison server'")
    ] = "127.0.0.1:8443",
    hostname: Annotated[
        list[str] | None,
        typer.Option(help="TLS server name (repeat); default localhost, 127.0.0.1"),
    ] = None,
    database: Annotated[
        str, typer.Option(help="Database URL; default SQLite in the data directory")
    ] = "",
    device_cert_days: Annotated[int, typer.Option(help="Lifetime of device certificates")] = 90,
    ca_keys: Annotated[
        str, typer.Option(help="'file' (encrypted PEM) or 'pkcs11:token=LABEL[;object=PREFIX]'")
    ] = "file",
    release_threshold: Annotated[
        int, typer.Option(min=1, max=16, help="Release managers needed to publish (k of n)")
    ] = 2,
    pkcs11_module: Annotated[
        str, typer.Option(help="PKCS#11 module for --ca-keys pkcs11:...")
    ] = "",
) -> None:
    """Create a fleet: root CA, issuing CA, server TLS certificate and an admin API token."""
    from garrison.identity.fleet import init_fleet, pkcs11_key_refs
    from garrison.settings import Settings

    root = resolve_data_dir(data_dir)
    with failing():
        key_refs: dict[str, str] = {}
        if ca_keys.startswith("pkcs11:"):
            key_refs = pkcs11_key_refs(ca_keys)
        elif ca_keys != "file":
            raise GarrisonError(f"--ca-keys must be 'file' or 'pkcs11:...', not {ca_keys!r}")
        settings = Settings(
            organization=organization,
            public_url=public_url,
            listen=listen,
            hostnames=hostname or ["localhost", "127.0.0.1"],
            database_url=database,
            device_cert_days=device_cert_days,
            pkcs11_module=pkcs11_module,
            release_threshold=release_threshold,
            **key_refs,
        )
        init_fleet(root, settings, now())
    console.print(f"[green]Fleet created[/] in {root}")
    console.print(f"  root CA         {root / 'pki' / 'root-ca.pem'}  (give this to devices)")
    console.print(f"  admin API token {root / 'admin.token'}  (mode 0600)")
    if not os.environ.get("GARRISON_KEY_PASSPHRASE") and ca_keys == "file":
        console.print(
            f"  key passphrase  {root / 'secrets' / 'key.passphrase'}  (move it to a secret store)"
        )
    console.print(f"Next: garrison server --data-dir {root}")


def server(
    data_dir: DataDir = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT [default: the fleet's listen setting]")
    ] = None,
    database: Annotated[
        str | None, typer.Option(help="Database URL (sqlite:///... or postgresql://...)")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes sharing the port")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the HTTPS control plane (EST, OCSP/CRL, device API, admin API)."""
    from garrison.identity.fleet import load_fleet
    from garrison.server.run import Listen, serve
    from garrison.server.workers import serve_workers
    from garrison.store.database import Database

    root = resolve_data_dir(data_dir)
    with failing():
        fleet = load_fleet(root)
        url = database or fleet.database_url
        db = Database(url)
        db.migrate()
        address = Listen.parse(listen or fleet.settings.listen)
    console.print(
        f"Garrison control plane on https://{address.host}:{address.port} "
        f"({db.dialect}, {workers} worker{'s' if workers > 1 else ''})"
    )
    if workers == 1:
        serve(fleet, db, address, log_level)
    else:
        db.dispose()
        serve_workers(root, url, address, workers, log_level)

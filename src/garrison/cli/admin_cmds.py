"""Admin commands over the REST API: principals, batches, devices, audit."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from garrison.cli.common import (
    DataDir,
    ServerUrl,
    Token,
    add_row,
    api_call,
    console,
    failing,
    open_database,
    resolve_data_dir,
)
from garrison.errors import GarrisonError
from garrison.keys.software import write_private_file

principal_app = typer.Typer(help="Users and API tokens, each with one role.", no_args_is_help=True)
batch_app = typer.Typer(help="Production batches for contract manufacturers.", no_args_is_help=True)
device_app = typer.Typer(help="Enrolled devices.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@principal_app.command("add")
def principal_add(
    name: str,
    role: Annotated[
        str,
        typer.Option(
            help="admin, security-officer, release-manager, operator, auditor, manufacturer"
        ),
    ],
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Create a principal and print its API token (shown once)."""
    body = api_call(
        data_dir, server, token, "POST", "/principals", json={"name": name, "role": role}
    )
    console.print(
        f"principal [bold]{body['name']}[/] ({body['role']}) created; API token (shown once):"
    )
    print(body["token"])


@principal_app.command("disable")
def principal_disable(
    name: str,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Disable a principal: its API token is refused from its next request."""
    api_call(data_dir, server, token, "POST", f"/principals/{name}/disable")
    console.print(f"principal {name} disabled")


@principal_app.command("list")
def principal_list(data_dir: DataDir = None, server: ServerUrl = None, token: Token = None) -> None:
    """List principals and their roles."""
    rows = api_call(data_dir, server, token, "GET", "/principals")
    table = Table("name", "role")
    for row in rows:
        add_row(table, row["name"], row["role"])
    console.print(table)


@batch_app.command("create")
def batch_create(
    name: Annotated[str, typer.Option(help="Batch name, e.g. the production order")],
    manufacturer: Annotated[
        str, typer.Option(help="Principal (manufacturer role) that will enroll")
    ],
    model: Annotated[str, typer.Option(help="Hardware model of the devices")],
    tokens_out: Annotated[
        Path | None,
        typer.Option("--tokens-out", help="CSV file for serial,token (mode 0600); token batches"),
    ] = None,
    serials_file: Annotated[
        Path | None, typer.Option(help="Allow-list: one serial per line")
    ] = None,
    quota: Annotated[int | None, typer.Option(help="Maximum number of enrollments")] = None,
    valid_days: Annotated[int, typer.Option(help="Days until the batch expires")] = 30,
    idevid_ca: Annotated[
        Path | None,
        typer.Option(help="Manufacturer CA (PEM): devices enroll with their IDevID, no tokens"),
    ] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Authorize a production batch; write its single-use enrollment tokens to a CSV file
    (or, with --idevid-ca, let devices enroll with their manufacturer certificates)."""
    with failing():
        if tokens_out is None and idevid_ca is None:
            raise GarrisonError("--tokens-out is required (the tokens are shown only once)")
        serials: list[str] = []
        if serials_file is not None:
            lines = serials_file.read_text().splitlines()
            serials = [line.strip() for line in lines if line.strip()]
        payload = {
            "name": name,
            "manufacturer": manufacturer,
            "model": model,
            "serials": serials,
            "quota": quota,
            "valid_days": valid_days,
            "idevid_ca_pem": None if idevid_ca is None else idevid_ca.read_text(),
        }
    body = api_call(data_dir, server, token, "POST", "/batches", json=payload)
    if tokens_out is None:
        console.print(
            f"batch {body['id']} created, expires {body['expires_at']}; "
            "devices enroll with their IDevID certificates"
        )
        return
    rows = [["serial", "token"], *[[t["serial"] or "", t["token"]] for t in body["tokens"]]]
    with failing():
        write_private_file(tokens_out, _csv(rows).encode())
    console.print(
        f"batch {body['id']} created, expires {body['expires_at']}; "
        f"{len(body['tokens'])} tokens in {tokens_out}"
    )


def _csv(rows: list[list[str]]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


@batch_app.command("close")
def batch_close(
    batch_id: int,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Close a batch at once (e.g. its tokens leaked): nothing more enrolls with it."""
    body = api_call(data_dir, server, token, "POST", f"/batches/{batch_id}/close")
    console.print(f"batch {batch_id} closed; {body['unused']} unused authorization(s) voided")


@batch_app.command("list")
def batch_list(data_dir: DataDir = None, server: ServerUrl = None, token: Token = None) -> None:
    """List batches with their enrollment progress."""
    rows = api_call(data_dir, server, token, "GET", "/batches")
    table = Table("id", "name", "manufacturer", "model", "issued", "quota", "authorized", "expires")
    for r in rows:
        add_row(
            table,
            str(r["id"]),
            r["name"],
            r["manufacturer"] or "",
            r["model"],
            str(r["issued"]),
            str(r["quota"] or "-"),
            str(r["authorized"]),
            r["expires_at"][:19],
        )
    console.print(table)


@device_app.command("list")
def device_list(data_dir: DataDir = None, server: ServerUrl = None, token: Token = None) -> None:
    """List enrolled devices."""
    rows = api_call(data_dir, server, token, "GET", "/devices")
    table = Table("serial", "model", "status", "certificate", "expires", "last seen")
    for r in rows:
        add_row(
            table,
            r["serial"],
            r["model"],
            r["status"],
            (r["current_cert"] or "")[:16],
            (r["cert_not_after"] or "")[:19],
            (r["last_seen_at"] or "never")[:19],
        )
    console.print(table)


@device_app.command("revoke")
def device_revoke(
    serial: str,
    reason: Annotated[
        str,
        typer.Option(
            help="unspecified, key-compromise, superseded, cessation-of-operation, "
            "affiliation-changed"
        ),
    ] = "unspecified",
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Revoke a device: it is refused on its next request; CRL and OCSP say so."""
    body = api_call(
        data_dir, server, token, "POST", f"/devices/{serial}/revoke", json={"reason": reason}
    )
    console.print(
        f"device {serial} revoked ({len(body['certificates'])} certificate(s)); CRL re-published"
    )


@device_app.command("rollback")
def device_rollback(
    serial: Annotated[list[str] | None, typer.Argument(help="Device serials")] = None,
    model: Annotated[str | None, typer.Option(help="Every active device of this model")] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Send devices back to their previous good version; they stay there (update hold)
    until 'garrison device release-hold'."""
    body = {"serials": serial or [], "model": model}
    queued = api_call(data_dir, server, token, "POST", "/devices/rollback", json=body)
    count = len(queued["devices"])
    console.print(f"rollback queued for {count} device(s); they act on their next update run")


@device_app.command("release-hold")
def device_release_hold(
    serial: str,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Let a device that was sent back be offered releases again."""
    api_call(data_dir, server, token, "POST", f"/devices/{serial}/release-hold", raw=True)
    console.print(f"device {serial} may update again")


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = None,
    database: Annotated[
        str | None, typer.Option(help="Database URL [default: the fleet's]")
    ] = None,
    expect_head: Annotated[
        str | None, typer.Option(help="SEQ:HASH recorded earlier; catches a truncated tail")
    ] = None,
) -> None:
    """Verify the audit log's hash chain directly in the database (not via the server)."""
    from garrison.access.audit import GENESIS_HASH
    from garrison.settings import read_settings
    from garrison.store.audit_log import read_audit, verify_stored_chain
    from garrison.store.engine import sqlite_url

    root = resolve_data_dir(data_dir)
    with failing():
        expected = None if expect_head is None else _parse_head(expect_head)
        url = database or read_settings(root).database_url or sqlite_url(root)
        with open_database(url) as db, db.read() as conn:
            seq, head = verify_stored_chain(conn)
            if expected is not None:
                want_seq, want_hash = expected
                if seq < want_seq:
                    raise GarrisonError(
                        f"audit log ends at entry {seq}, before the recorded head {want_seq}"
                    )
                if want_seq == 0:
                    found = GENESIS_HASH
                else:
                    entry = next(read_audit(conn, after=want_seq - 1, limit=1), None)
                    found = "" if entry is None else entry.entry_hash
                if found != want_hash:
                    raise GarrisonError(f"audit entry {want_seq} differs from the recorded head")
    console.print(f"[green]audit log intact[/]: {seq} entries, head {seq}:{head}")


_HEAD = re.compile(r"([0-9]+):([0-9a-fA-F]{64})")


def _parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as 'audit verify' prints it → (sequence number, lowercase hash)."""
    match = _HEAD.fullmatch(text.strip())
    if match is None:
        raise GarrisonError(
            f"--expect-head must be SEQ:HASH (a sequence number and a SHA-256 in hex), "
            f"not {text!r}",
            hint="give the head an earlier 'garrison audit verify' printed",
        )
    return int(match.group(1)), match.group(2).lower()


@audit_app.command("list")
def audit_list(
    after: Annotated[int, typer.Option(help="Show entries after this sequence number")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many entries")] = 50,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token: Token = None,
) -> None:
    """Show audit entries."""
    rows = api_call(
        data_dir, server, token, "GET", "/audit", params={"after": after, "limit": limit}
    )
    table = Table("seq", "at", "actor", "action", "target", "outcome")
    for r in rows:
        add_row(
            table, str(r["seq"]), r["at"][:19], r["actor"], r["action"], r["target"], r["outcome"]
        )
    console.print(table)
    sys.stdout.flush()

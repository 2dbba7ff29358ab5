"""Rotating the TUF root key: an offline operation, run where the old root key is.

The new root is signed by the old root key and the new one; devices holding the old root
accept it on their next refresh (each root must be signed by its predecessor's threshold),
so rotation never breaks a device. The settings then name the new key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from securesystemslib.signer import CryptoSigner

from garrison.identity.fleet import Fleet, key_secrets
from garrison.identity.keyref import create_key, open_key
from garrison.settings import write_settings
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.updates.repository import Repository, refresh_online, rotate_root
from garrison.updates.store import load_repository, save_repository


def rotate_root_key(
    fleet: Fleet, database: Database, new_key_ref: str, now: dt.datetime
) -> Repository:
    """Create the key ``new_key_ref``, publish root version N+1 trusting only it, and point
    the fleet's settings at it. The old key is left where it was (destroy it yourself)."""
    secrets = key_secrets(fleet.paths, fleet.settings)
    old = CryptoSigner(open_key(fleet.settings.tuf_root_key, fleet.paths.root, secrets))
    new_key = create_key(new_key_ref, fleet.paths.root, secrets, fleet.settings.key_algorithm)
    new = CryptoSigner(new_key)
    with database.write() as conn:
        repo = load_repository(conn)
        root = rotate_root(repo, [old], [new], now)
        rotated = Repository(root, repo.targets, repo.snapshot, repo.timestamp, repo.releases)
        rotated = refresh_online(
            rotated, fleet.snapshot_signer, fleet.timestamp_signer, now, new_snapshot=False
        )
        save_repository(conn, repo, rotated, now)
        append_audit(
            conn,
            actor="tuf-root-key",
            action="tuf.rotate-root",
            target=f"root v{root.signed.version}",
            outcome="ok",
            now=now,
            details={"new_keyid": new.public_key.keyid, "old_keyid": old.public_key.keyid},
        )
    write_settings(fleet.paths.root, dataclasses.replace(fleet.settings, tuf_root_key=new_key_ref))
    return rotated

"""Operations of the offline TUF keys, run where those keys are (never by the control plane):

* :func:`configure_release_managers` — the ``targets`` key names the release managers and
  their threshold (``garrison release-manager set``);
* :func:`rotate_root_key` — the root key hands over to a new one (``garrison tuf
  rotate-root``). The new root is signed by the old root key and the new one; devices
  holding the old root accept it on their next refresh (each root must be signed by its
  predecessor's threshold), so rotation never breaks a device. The settings then name the
  new key.

Each is one change to the repository (:mod:`.repository`), published the same way by
:func:`_publish`: in one write transaction, with new online roles, and audited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from garrison.errors import InvalidRequest
from garrison.identity.fleet import Fleet, key_secrets
from garrison.identity.keyref import create_key, open_key
from garrison.settings import write_settings
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.updates.repository import (
    Repository,
    refresh_online,
    rotate_root,
    set_release_managers,
    snapshot_meta,
)
from garrison.updates.store import load_repository, save_repository


@dataclass(frozen=True)
class Audit:
    """The audit record of an offline change."""

    actor: str
    action: str
    target: str
    details: dict[str, Any]


Change = Callable[[Repository], tuple[Repository, Audit]]


def public_key_from_pem(pem: bytes) -> Key:
    """A release manager's TUF key from its PEM public key."""
    try:
        public = serialization.load_pem_public_key(pem)
        return SSlibKey.from_crypto(public)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("not a PEM public key (ECDSA P-256/P-384 or Ed25519)") from exc


def configure_release_managers(
    fleet: Fleet, database: Database, keys: list[Key], threshold: int, now: dt.datetime
) -> Repository:
    """Delegate ``releases`` to exactly ``keys`` with ``threshold``, signed with the fleet's
    offline targets key, and publish new snapshot and timestamp."""
    secrets = key_secrets(fleet.paths, fleet.settings)
    signer = CryptoSigner(open_key(fleet.settings.tuf_targets_key, fleet.paths.root, secrets))

    def change(repo: Repository) -> tuple[Repository, Audit]:
        targets = set_release_managers(repo, keys, threshold, signer, now)
        details = {"keyids": sorted({k.keyid for k in keys}), "threshold": threshold}
        audit = Audit("targets-key", "release-managers.set", "releases", details)
        return dataclasses.replace(repo, targets=targets), audit

    return _publish(fleet, database, change, now)


def rotate_root_key(
    fleet: Fleet, database: Database, new_key_ref: str, now: dt.datetime
) -> Repository:
    """Create the key ``new_key_ref``, publish root version N+1 trusting only it, and point
    the fleet's settings at it. The old key is left where it was (destroy it yourself)."""
    secrets = key_secrets(fleet.paths, fleet.settings)
    old = CryptoSigner(open_key(fleet.settings.tuf_root_key, fleet.paths.root, secrets))
    new_key = create_key(new_key_ref, fleet.paths.root, secrets, fleet.settings.key_algorithm)
    new = CryptoSigner(new_key)

    def change(repo: Repository) -> tuple[Repository, Audit]:
        root = rotate_root(repo, [old], [new], now)
        details = {"new_keyid": new.public_key.keyid, "old_keyid": old.public_key.keyid}
        audit = Audit("tuf-root-key", "tuf.rotate-root", f"root v{root.signed.version}", details)
        return dataclasses.replace(repo, root=root), audit

    rotated = _publish(fleet, database, change, now)
    write_settings(fleet.paths.root, dataclasses.replace(fleet.settings, tuf_root_key=new_key_ref))
    return rotated


def _publish(fleet: Fleet, database: Database, change: Change, now: dt.datetime) -> Repository:
    """Apply ``change`` to the stored repository, re-sign the online roles (a new snapshot
    only if what it lists changed), store it and audit it, in one write transaction."""
    with database.write() as conn:
        repo = load_repository(conn)
        changed, audit = change(repo)
        updated = refresh_online(
            changed,
            fleet.snapshot_signer,
            fleet.timestamp_signer,
            now,
            new_snapshot=snapshot_meta(changed) != snapshot_meta(repo),
        )
        save_repository(conn, repo, updated, now)
        append_audit(
            conn,
            actor=audit.actor,
            action=audit.action,
            target=audit.target,
            outcome="ok",
            now=now,
            details=audit.details,
        )
    return updated

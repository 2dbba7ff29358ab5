"""Naming the release managers: an operation of the offline ``targets`` key, run where that
key is (``garrison release-manager set``), never by the control plane."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from garrison.errors import InvalidRequest
from garrison.identity.fleet import Fleet, key_secrets
from garrison.identity.keyref import open_key
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.updates.repository import Repository, refresh_online, set_release_managers
from garrison.updates.store import load_repository, save_repository


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
    targets_key = open_key(fleet.settings.tuf_targets_key, fleet.paths.root, secrets)
    targets_signer = CryptoSigner(targets_key)
    with database.write() as conn:
        repo = load_repository(conn)
        targets = set_release_managers(repo, keys, threshold, targets_signer, now)
        updated = Repository(repo.root, targets, repo.snapshot, repo.timestamp, repo.releases)
        updated = refresh_online(
            updated, fleet.snapshot_signer, fleet.timestamp_signer, now, new_snapshot=True
        )
        save_repository(conn, repo, updated, now)
        append_audit(
            conn,
            actor="targets-key",
            action="release-managers.set",
            target="releases",
            outcome="ok",
            now=now,
            details={"keyids": sorted({k.keyid for k in keys}), "threshold": threshold},
        )
    return updated

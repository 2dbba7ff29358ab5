"""The fleet's TUF repository as pure functions: current metadata in, new metadata out.

Roles (TUF specification 1.0):

* ``root`` — offline key(s): who signs every top-level role.
* ``targets`` — offline key: lists no software itself; it only *delegates* all targets to
  the role ``releases`` with the release managers' keys and a threshold (k of n). Changing
  the release managers needs this offline key.
* ``releases`` — signed by k release managers, each on their own machine: the software.
  With k ≥ 2 no single key — and not the control plane — can ship software.
* ``snapshot`` and ``timestamp`` — online keys held by the control plane, re-signed
  automatically before they expire.

Nothing here touches disk, network or the clock: the time is passed in.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from securesystemslib.signer import Key, Signature, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from garrison.errors import InvalidRequest, PolicyError

RELEASES = "releases"
# TUF path patterns match segment by segment ("*" is one segment only); delegating every
# hash prefix is how a role is given *all* targets, whatever their depth.
ALL_TARGETS = [format(n, "x") for n in range(16)]
EXPIRY = {
    "root": dt.timedelta(days=365),
    "targets": dt.timedelta(days=365),
    RELEASES: dt.timedelta(days=365),
    "snapshot": dt.timedelta(days=7),
    "timestamp": dt.timedelta(days=1),
}


class SignatureRefused(PolicyError):
    """A signature that does not come from a release manager or does not verify."""


def _expires(role: str, now: dt.datetime) -> dt.datetime:
    return (now + EXPIRY[role]).replace(microsecond=0)


@dataclass(frozen=True)
class Repository:
    """The newest metadata of every role (``releases`` is ``None`` before the first one)."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    releases: Metadata[Targets] | None


def create_repository(
    root_signers: Sequence[Signer],
    targets_signer: Signer,
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    release_threshold: int,
    now: dt.datetime,
) -> Repository:
    """A new repository: root v1 (consistent snapshots), targets v1 delegating to an
    empty ``releases`` role with ``release_threshold``, snapshot and timestamp v1."""
    if release_threshold < 1:
        raise InvalidRequest("the release signing threshold must be at least 1")
    root = Root(expires=_expires("root", now), consistent_snapshot=True)
    for signer in root_signers:
        root.add_key(signer.public_key, "root")
    root.roles["root"].threshold = len(root_signers)
    root.add_key(targets_signer.public_key, "targets")
    root.add_key(snapshot_signer.public_key, "snapshot")
    root.add_key(timestamp_signer.public_key, "timestamp")
    root_md = Metadata(root)
    for signer in root_signers:
        root_md.sign(signer, append=True)

    delegation = DelegatedRole(
        RELEASES, [], release_threshold, True, path_hash_prefixes=ALL_TARGETS
    )
    targets_md = Metadata(
        Targets(
            expires=_expires("targets", now), delegations=Delegations({}, {RELEASES: delegation})
        )
    )
    targets_md.sign(targets_signer)
    snapshot_md = _snapshot(None, {"targets.json": 1}, snapshot_signer, now)
    timestamp_md = _timestamp(None, snapshot_md.signed.version, timestamp_signer, now)
    return Repository(root_md, targets_md, snapshot_md, timestamp_md, None)


def _snapshot(
    previous: Metadata[Snapshot] | None, meta: dict[str, int], signer: Signer, now: dt.datetime
) -> Metadata[Snapshot]:
    version = 1 if previous is None else previous.signed.version + 1
    snapshot = Snapshot(
        version=version,
        expires=_expires("snapshot", now),
        meta={name: MetaFile(v) for name, v in sorted(meta.items())},
    )
    md = Metadata(snapshot)
    md.sign(signer)
    return md


def _timestamp(
    previous: Metadata[Timestamp] | None, snapshot_version: int, signer: Signer, now: dt.datetime
) -> Metadata[Timestamp]:
    version = 1 if previous is None else previous.signed.version + 1
    md = Metadata(
        Timestamp(
            version=version,
            expires=_expires("timestamp", now),
            snapshot_meta=MetaFile(snapshot_version),
        )
    )
    md.sign(signer)
    return md


def snapshot_meta(repo: Repository) -> dict[str, int]:
    meta = {"targets.json": repo.targets.signed.version}
    if repo.releases is not None:
        meta[f"{RELEASES}.json"] = repo.releases.signed.version
    return meta


def refresh_online(
    repo: Repository,
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    now: dt.datetime,
    *,
    new_snapshot: bool,
) -> Repository:
    """New timestamp (and, if ``new_snapshot``, a new snapshot) for ``repo``."""
    snapshot = repo.snapshot
    if new_snapshot:
        snapshot = _snapshot(repo.snapshot, snapshot_meta(repo), snapshot_signer, now)
    timestamp = _timestamp(repo.timestamp, snapshot.signed.version, timestamp_signer, now)
    return replace(repo, snapshot=snapshot, timestamp=timestamp)


def due_for_refresh(
    md: Metadata[Snapshot] | Metadata[Timestamp], role: str, now: dt.datetime
) -> bool:
    """Whether less than half of the role's validity is left."""
    return md.signed.expires - now <= EXPIRY[role] / 2


# -- root rotation (needs the old and the new root keys) ------------------------------------


def rotate_root(
    repo: Repository,
    old_signers: Sequence[Signer],
    new_signers: Sequence[Signer],
    now: dt.datetime,
) -> Metadata[Root]:
    """The next root version, trusting ``new_signers`` as root keys (threshold: all of them),
    signed by the old root keys *and* the new ones, as TUF requires: a client holding the
    old root accepts it only if the old threshold signed it, and the new root must be able
    to verify itself. The other roles' keys stay as they are."""
    if not new_signers:
        raise InvalidRequest("a new root needs at least one key")
    current = repo.root.signed
    root = copy.deepcopy(current)  # never mutate the metadata we were given
    root.version = current.version + 1
    root.expires = _expires("root", now)
    for keyid in list(root.roles["root"].keyids):
        root.revoke_key(keyid, "root")
    for signer in new_signers:
        root.add_key(signer.public_key, "root")
    root.roles["root"].threshold = len(new_signers)
    md = Metadata(root)
    for signer in [*old_signers, *new_signers]:
        md.sign(signer, append=True)
    try:
        current.verify_delegate("root", md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise PolicyError("the new root is not signed by the current root's threshold") from exc
    root.verify_delegate("root", md.signed_bytes, md.signatures)
    return md


# -- release managers (needs the offline targets key) -----------------------------------


def set_release_managers(
    repo: Repository, keys: Sequence[Key], threshold: int, targets_signer: Signer, now: dt.datetime
) -> Metadata[Targets]:
    """New targets metadata delegating ``releases`` to exactly ``keys`` with ``threshold``.
    A key named twice counts once; no keys at all is refused (nobody could ever release)."""
    distinct = {k.keyid: k for k in keys}
    if not distinct:
        raise InvalidRequest("name at least one release manager's key")
    if not 1 <= threshold <= len(distinct):
        raise InvalidRequest(
            f"threshold {threshold} needs between 1 and {len(distinct)} distinct keys"
        )
    current = repo.targets.signed
    delegation = DelegatedRole(
        RELEASES, sorted(distinct), threshold, True, path_hash_prefixes=ALL_TARGETS
    )
    targets = Targets(
        version=current.version + 1,
        expires=_expires("targets", now),
        delegations=Delegations(distinct, {RELEASES: delegation}),
    )
    md = Metadata(targets)
    md.sign(targets_signer)
    return md


def release_delegation(repo: Repository) -> tuple[dict[str, Key], int]:
    """The release managers' keys and the threshold, as the targets role says."""
    delegations = repo.targets.signed.delegations
    assert delegations is not None and delegations.roles is not None
    role = delegations.roles[RELEASES]
    return {keyid: delegations.keys[keyid] for keyid in role.keyids}, role.threshold


# -- releases (signed by k release managers) ---------------------------------------------


def propose_release(repo: Repository, target: TargetFile, now: dt.datetime) -> Metadata[Targets]:
    """The next ``releases`` metadata, unsigned: the current targets plus ``target``."""
    current = repo.releases.signed if repo.releases is not None else None
    targets = dict(current.targets) if current is not None else {}
    if target.path in targets:
        raise PolicyError(f"target {target.path!r} is already released")
    targets[target.path] = target
    return Metadata(
        Targets(
            version=1 if current is None else current.version + 1,
            expires=_expires(RELEASES, now),
            targets=targets,
        )
    )


def add_release_signature(
    repo: Repository, proposal: Metadata[Targets], signature: Signature
) -> None:
    """Verify ``signature`` over the proposal and attach it; refuse anything else."""
    keys, _ = release_delegation(repo)
    key = keys.get(signature.keyid)
    if key is None:
        raise SignatureRefused(f"key {signature.keyid[:16]}… is not a release manager's key")
    try:
        key.verify_signature(signature, proposal.signed_bytes)
    except Exception as exc:  # securesystemslib raises VerificationError / UnverifiedSignatureError
        raise SignatureRefused("the signature does not verify over this release") from exc
    proposal.signatures[signature.keyid] = signature


def signatures_missing(repo: Repository, proposal: Metadata[Targets]) -> int:
    """How many more release managers must sign before the threshold is met."""
    keys, threshold = release_delegation(repo)
    valid = sum(1 for keyid in proposal.signatures if keyid in keys)
    return max(threshold - valid, 0)


def publish_release(
    repo: Repository,
    proposal: Metadata[Targets],
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    now: dt.datetime,
) -> Repository:
    """The repository with ``proposal`` as the new ``releases``, if the threshold is met."""
    expected = 1 if repo.releases is None else repo.releases.signed.version + 1
    if proposal.signed.version != expected:
        raise PolicyError(
            "another release was published since this one was proposed",
            hint="propose it again and have it signed again",
        )
    try:
        repo.targets.signed.verify_delegate(RELEASES, proposal.signed_bytes, proposal.signatures)
    except UnsignedMetadataError as exc:
        raise PolicyError(
            f"the release lacks signatures: {signatures_missing(repo, proposal)} more needed"
        ) from exc
    published = replace(repo, releases=proposal)
    return refresh_online(published, snapshot_signer, timestamp_signer, now, new_snapshot=True)

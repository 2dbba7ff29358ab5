"""The control plane's side of releases: artifacts, proposals awaiting release managers'
signatures, publication when the threshold is met, and the online roles kept fresh."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signature, Signer
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError
from tuf.api.metadata import Metadata, TargetFile, Targets

from garrison.errors import InvalidRequest, PolicyError
from garrison.store.audit_log import append_audit
from garrison.store.database import Database
from garrison.store.tables import releases
from garrison.updates.digests import SHA256_HEX
from garrison.updates.eligibility import (
    INSTALL_TYPES,
    NAME,
    RESERVED,
    valid_name,
    valid_version,
)
from garrison.updates.repository import (
    Repository,
    add_release_signature,
    due_for_refresh,
    propose_release,
    publish_release,
    refresh_online,
    signatures_missing,
)
from garrison.updates.store import (
    load_online,
    load_repository,
    metadata_file,
    save_repository,
)

MAX_ARTIFACT_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class ReleaseSpec:
    """What a release manager declares about a release."""

    name: str
    version: str
    hardware: list[str]
    security_version: int
    install: str
    health_checks: list[list[str]]
    sha256: str

    def validate(self) -> None:
        reserved = f"not {' or '.join(sorted(RESERVED))}"
        if not valid_name(self.name):
            raise InvalidRequest(
                f"release name {self.name[:80]!r} is not valid (a-z 0-9 . _ -, {reserved})"
            )
        if not valid_version(self.version):
            raise InvalidRequest(
                f"version {self.version[:80]!r} is not valid (A-Z a-z 0-9 . + ~ -, {reserved})"
            )
        if not self.hardware or not all(NAME.fullmatch(h) for h in self.hardware):
            raise InvalidRequest("hardware must list at least one valid hardware model")
        if not 0 <= self.security_version < 2**31:
            raise InvalidRequest("security_version must be between 0 and 2^31-1")
        if self.install not in INSTALL_TYPES:
            raise InvalidRequest(f"install must be one of {', '.join(INSTALL_TYPES)}")
        if len(self.health_checks) > 16 or any(
            not check or len(check) > 32 for check in self.health_checks
        ):
            raise InvalidRequest("at most 16 health checks of 1-32 arguments each")
        if not SHA256_HEX.fullmatch(self.sha256):
            raise InvalidRequest("sha256 must be 64 lower-case hex digits")

    @property
    def target_path(self) -> str:
        suffix = "img" if self.install == "image" else "tar"
        return f"{self.name}/{self.version}/{self.name}-{self.version}.{suffix}"

    def custom(self) -> dict[str, Any]:
        return {
            "garrison": {
                "name": self.name,
                "version": self.version,
                "hardware": sorted(self.hardware),
                "security_version": self.security_version,
                "install": self.install,
                "health_checks": self.health_checks,
            }
        }


@dataclass(frozen=True)
class ReleaseView:
    id: int
    name: str
    version: str
    target_path: str
    state: str
    signatures: int
    missing: int
    custom: dict[str, Any]


class ArtifactUpload:
    """An artifact streamed to disk while hashed; named by its SHA-256 once complete."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._tmp = directory / f".upload-{os.getpid()}-{id(self)}"
        self._out = self._tmp.open("wb")
        self._digest = hashlib.sha256()
        self.length = 0

    def write(self, chunk: bytes) -> None:
        self.length += len(chunk)
        if self.length > MAX_ARTIFACT_BYTES:
            raise InvalidRequest(f"artifact larger than {MAX_ARTIFACT_BYTES} bytes")
        self._digest.update(chunk)
        self._out.write(chunk)

    def finish(self) -> tuple[str, int]:
        """Make the artifact durable under its hash; return (sha256, length)."""
        if self.length == 0:
            raise InvalidRequest("empty artifact")
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        sha256 = self._digest.hexdigest()
        self._tmp.replace(self._directory / sha256)
        return sha256, self.length

    def abort(self) -> None:
        """Drop an unfinished upload (no effect after :meth:`finish`)."""
        if not self._out.closed:
            self._out.close()
        self._tmp.unlink(missing_ok=True)


class ReleaseService:
    """Releases and the repository, for one control plane."""

    def __init__(
        self,
        database: Database,
        artifacts: Path,
        snapshot_signer: Signer,
        timestamp_signer: Signer,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._db = database
        self.artifacts = artifacts
        self._snapshot = snapshot_signer
        self._timestamp = timestamp_signer
        self._clock = clock

    # -- serving ---------------------------------------------------------------------

    def metadata(self, role: str, version: int | None) -> bytes | None:
        """Metadata bytes as a TUF client asks for them; online roles are re-signed first
        when less than half of their validity is left."""
        if role == "timestamp":
            self.refresh()
        with self._db.read() as conn:
            return metadata_file(conn, role, version)

    def refresh(self) -> None:
        """Re-sign snapshot and timestamp when less than half their validity is left. The
        check reads only those two roles; the whole repository is loaded only to re-sign,
        under the write lock."""
        now = self._clock()
        with self._db.read() as conn:
            snapshot, timestamp = load_online(conn)
        snapshot_due = due_for_refresh(snapshot, "snapshot", now)
        if not snapshot_due and not due_for_refresh(timestamp, "timestamp", now):
            return
        try:
            with self._db.write() as conn:
                repo = load_repository(conn)  # all of it, and again: under the write lock
                fresh = refresh_online(
                    repo,
                    self._snapshot,
                    self._timestamp,
                    now,
                    new_snapshot=due_for_refresh(repo.snapshot, "snapshot", now),
                )
                save_repository(conn, repo, fresh, now)
        except IntegrityError:
            pass  # another replica refreshed at the same moment; its versions stand

    def artifact_path(self, sha256: str) -> Path | None:
        if not SHA256_HEX.fullmatch(sha256):
            return None
        path = self.artifacts / sha256
        return path if path.is_file() else None

    # -- releasing -------------------------------------------------------------------

    def upload(self) -> ArtifactUpload:
        """A new artifact upload into this repository's artifact store."""
        return ArtifactUpload(self.artifacts)

    def propose(self, spec: ReleaseSpec, actor: str) -> ReleaseView:
        """A release awaiting the release managers' signatures."""
        spec.validate()
        path = self.artifact_path(spec.sha256)
        if path is None:
            raise InvalidRequest("no artifact with that sha256 was uploaded")
        now = self._clock()
        target = TargetFile(
            length=path.stat().st_size,
            hashes={"sha256": spec.sha256},
            path=spec.target_path,
            unrecognized_fields={"custom": spec.custom()},
        )
        with self._db.write() as conn:
            repo = load_repository(conn)
            proposal = propose_release(repo, target, now)
            try:
                with conn.begin_nested():
                    release_id = conn.execute(
                        releases.insert()
                        .values(
                            name=spec.name,
                            version=spec.version,
                            target_path=spec.target_path,
                            sha256=spec.sha256,
                            length=target.length,
                            custom=json.dumps(spec.custom()),
                            state="pending",
                            proposal=proposal.to_bytes(),
                            created_by=actor,
                            created_at=now,
                        )
                        .returning(releases.c.id)
                    ).scalar_one()
            except IntegrityError:
                raise PolicyError(f"{spec.name} {spec.version} was already proposed") from None
            append_audit(
                conn,
                actor=actor,
                action="release.propose",
                target=spec.target_path,
                outcome="ok",
                now=now,
                details={"release": release_id, "sha256": spec.sha256, **spec.custom()["garrison"]},
            )
            return self._view(
                repo, release_id, spec.name, spec.version, spec.target_path, "pending", proposal
            )

    def payload(self, release_id: int) -> bytes:
        """The exact bytes a release manager signs (canonical JSON of the proposal)."""
        with self._db.read() as conn:
            row = self._row(conn, release_id)
        return Metadata[Targets].from_bytes(row.proposal).signed_bytes

    def sign(self, release_id: int, keyid: str, signature_hex: str, actor: str) -> ReleaseView:
        """Add a release manager's signature; publish when the threshold is met."""
        if not re.fullmatch(r"[0-9a-f]{1,1024}", signature_hex) or len(keyid) > 128:
            raise InvalidRequest("signature must be hex and keyid at most 128 characters")
        now = self._clock()
        with self._db.write() as conn:
            row = self._row(conn, release_id)
            if row.state != "pending":
                raise PolicyError(f"release {release_id} is {row.state}, not awaiting signatures")
            repo = load_repository(conn)
            proposal = Metadata[Targets].from_bytes(row.proposal)
            add_release_signature(repo, proposal, Signature(keyid, signature_hex))
            state = "pending"
            if signatures_missing(repo, proposal) == 0:
                published = publish_release(repo, proposal, self._snapshot, self._timestamp, now)
                save_repository(conn, repo, published, now)
                state = "published"
            conn.execute(
                update(releases)
                .where(releases.c.id == release_id)
                .values(
                    proposal=proposal.to_bytes(),
                    state=state,
                    published_at=now if state == "published" else None,
                )
            )
            append_audit(
                conn,
                actor=actor,
                action="release.sign",
                target=row.target_path,
                outcome="ok",
                now=now,
                details={"release": release_id, "keyid": keyid, "state": state},
            )
            return self._view(
                repo, release_id, row.name, row.version, row.target_path, state, proposal
            )

    def list(self) -> list[ReleaseView]:
        with self._db.read() as conn:
            repo = load_repository(conn)
            rows = conn.execute(select(releases).order_by(releases.c.id)).all()
        return [
            self._view(
                repo,
                r.id,
                r.name,
                r.version,
                r.target_path,
                r.state,
                Metadata[Targets].from_bytes(r.proposal),
            )
            for r in rows
        ]

    @staticmethod
    def _row(conn: Connection, release_id: int) -> Any:
        row = conn.execute(select(releases).where(releases.c.id == release_id)).first()
        if row is None:
            raise LookupError(f"no release {release_id}")
        return row

    @staticmethod
    def _view(
        repo: Repository,
        release_id: int,
        name: str,
        version: str,
        path: str,
        state: str,
        proposal: Metadata[Targets],
    ) -> ReleaseView:
        target = proposal.signed.targets[path]
        return ReleaseView(
            release_id,
            name,
            version,
            path,
            state,
            len(proposal.signatures),
            0 if state == "published" else signatures_missing(repo, proposal),
            dict(target.unrecognized_fields.get("custom", {})),
        )

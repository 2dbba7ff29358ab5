"""python-tuf's client (``ngclient.Updater``) as Garrison uses it: one refresh from a trust
anchor, judged at a time given by the caller, with python-tuf's errors translated into
ours at this boundary.

Every metadata byte a fetcher returns is verified here by python-tuf against the root the
caller trusts: signatures and thresholds (k of n release managers for ``releases``),
versions never going back, consistent snapshot versions, expiry at ``now``, and the
maximum lengths of metadata files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadError,
    DownloadLengthMismatchError,
    ExpiredMetadataError,
    RepositoryError,
    UnsignedMetadataError,
)
from tuf.api.metadata import TargetFile
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.updater import Updater

from garrison.updates.bootenv import UpdateError
from garrison.updates.fetchers import RangeFetcher


class MetadataRefused(UpdateError):
    """python-tuf refused the repository's metadata (see the hint for the likely attack)."""


class UpdateUnavailable(UpdateError):
    """The repository cannot be reached, or it holds no such target."""


@dataclass(frozen=True)
class Repo:
    """Where a repository is and how to reach it."""

    fetcher: RangeFetcher
    metadata_url: str
    targets_url: str


@dataclass(frozen=True)
class VerifiedTarget:
    """A target as the verified metadata describes it, and the URL of its artifact."""

    target: TargetFile
    url: str


def refresh_target(
    repo: Repo, metadata_dir: Path, initial_root: bytes, target_path: str, now: dt.datetime
) -> VerifiedTarget:
    """Refresh the top-level metadata, then look up ``target_path`` through the delegation
    to ``releases``; raise :class:`MetadataRefused` or :class:`UpdateUnavailable`."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    try:
        updater = Updater(
            str(metadata_dir),
            repo.metadata_url,
            None,
            repo.targets_url,
            fetcher=repo.fetcher,
            bootstrap=initial_root,
        )
        trusted = _trusted_set(updater)
        trusted.reference_time = now
        updater.refresh()
        target = updater.get_targetinfo(target_path)
    except RepositoryError as exc:
        raise _refused(exc) from exc
    except DownloadLengthMismatchError as exc:
        raise MetadataRefused(
            f"the repository sent metadata longer than allowed: {exc}",
            hint="the server or mirror sends extra (or endless) data",
        ) from exc
    except DownloadError as exc:
        cause = exc.__cause__ or exc
        raise UpdateUnavailable(
            f"cannot fetch the update metadata: {cause}",
            hint="check the network and the server URL; nothing was installed",
        ) from exc
    if target is None:
        raise UpdateUnavailable(
            f"no release {target_path!r} in the signed metadata",
            hint="list releases with 'garrison release list'",
        )
    return VerifiedTarget(target, artifact_url(repo.targets_url, target, trusted))


def artifact_url(base: str, target: TargetFile, trusted: TrustedMetadataSet) -> str:
    """The artifact's URL, consistent-snapshot style when the root says so (as ngclient)."""
    path = target.path
    if trusted.root.consistent_snapshot:
        directory, sep, name = path.rpartition("/")
        path = f"{directory}{sep}{target.hashes['sha256']}.{name}"
    return f"{base.rstrip('/')}/{path}"


def _trusted_set(updater: Updater) -> TrustedMetadataSet:
    """The updater's trusted set, whose ``reference_time`` is the clock of every expiry
    check. python-tuf fixes it to the wall clock and offers no setter; reaching it here,
    with a type check, keeps expiry under the caller's clock (a device's, or a test's)."""
    trusted = getattr(updater, "_trusted_set", None)
    if not isinstance(trusted, TrustedMetadataSet) or not hasattr(trusted, "reference_time"):
        raise UpdateError(
            "this python-tuf version keeps its clock elsewhere; refusing to verify without it"
        )
    return trusted


def _refused(exc: RepositoryError) -> MetadataRefused:
    if isinstance(exc, ExpiredMetadataError):
        hint = (
            "the repository serves expired (frozen) metadata, or this device's clock is "
            "wrong; nothing was installed"
        )
    elif isinstance(exc, BadVersionNumberError):
        hint = (
            "the repository served older metadata than this device has already seen, or "
            "versions that do not belong together (rollback or mix-and-match); nothing "
            "was installed"
        )
    elif isinstance(exc, UnsignedMetadataError):
        hint = (
            "the metadata is not signed by enough trusted keys (a release needs its "
            "threshold of release managers) or was altered; nothing was installed"
        )
    else:
        hint = "the metadata was altered or is malformed; nothing was installed"
    return MetadataRefused(f"the update metadata does not verify: {exc}", hint=hint)

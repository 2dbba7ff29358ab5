"""Crash-safe file primitives: every replacement is write-new, fsync, rename, fsync directory.

Guarantees, for a local POSIX file system that honours ``fsync`` and ``rename(2)``:

* :func:`atomic_write` — after a crash at any instant, ``path`` holds either its complete
  old content or the complete new content, never a mix. A leftover ``<name>.tmp`` may
  remain; it is never read back and the next write replaces it.
* :func:`atomic_symlink` — the link ``path`` points either at its old target or at the new
  one (``os.replace`` of a freshly made link).
* :func:`fsync_dir` — the directory entries created or renamed so far are durable.

These are the only places in :mod:`garrison.updates` that replace a file in place.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """The name :func:`atomic_write` stages ``path`` under (``<name>.tmp`` next to it)."""
    return path.with_name(f"{path.name}.tmp")


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    tmp = tmp_path(path)
    tmp.unlink(missing_ok=True)  # a torn leftover of an earlier crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def atomic_symlink(path: Path, target: str) -> None:
    """Point the symlink ``path`` at ``target`` in one step (the old link or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp-link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(path)
    fsync_dir(path.parent)

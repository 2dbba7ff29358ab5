"""Hashing artifacts: the one SHA-256 hex pattern, the one chunk size files are read and
written in, and the one loop that hashes a file (the download's check, verified boot, and
the installer's read-back all go through :func:`hash_file`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash as Hasher  # the type of hashlib's objects, named only in stubs

CHUNK = 1 << 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_file(path: Path, hashers: Iterable[Hasher]) -> int:
    """Feed the bytes of ``path`` to every one of ``hashers``, reading :data:`CHUNK` bytes
    at a time; return how many bytes there were."""
    hashers = list(hashers)
    length = 0
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            for hasher in hashers:
                hasher.update(chunk)
            length += len(chunk)
    return length

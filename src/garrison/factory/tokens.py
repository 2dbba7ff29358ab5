"""Single-use enrollment tokens. Only their SHA-256 digests are ever stored.

A token has 192 bits of entropy, so a fast hash is the right one: nobody can search the
token space, and the digest lets the server find the authorization with one index lookup.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "gst_"  # noqa: S105 (a public prefix)


def new_token() -> str:
    """A fresh, URL-safe enrollment token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    """The hex SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

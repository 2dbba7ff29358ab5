"""The one error base of Garrison.

Exception tree::

    GarrisonError                 every error Garrison raises on purpose
    ├── ConfigError               a data directory, setting or file is missing or wrong
    ├── KeyStoreError             a key cannot be created, opened or used
    ├── PolicyError               a request is well formed but not allowed (maps to 403)
    │   └── EnrollmentRefused     an EST enrollment is refused by factory policy
    ├── InvalidRequest            a request or file is malformed (maps to 400)
    ├── Conflict                  a request conflicts with the current state (maps to 409)
    └── AuditChainBroken          the audit log's hash chain does not verify

Each carries a ``hint``: what the user should do next. The CLI prints both.
Third-party errors are wrapped at the boundary (``raise KeyStoreError(...) from exc``).
"""

from __future__ import annotations


class GarrisonError(Exception):
    """Base class. ``str(err)`` says what went wrong; ``err.hint`` what to do about it."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def render(self) -> str:
        text = str(self)
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(GarrisonError):
    """A data directory, setting or file is missing or wrong."""


class KeyStoreError(GarrisonError):
    """A key cannot be created, opened or used."""


class InvalidRequest(GarrisonError):
    """A request or file is malformed."""


class Conflict(GarrisonError):
    """A well-formed, allowed request that conflicts with the current state (pausing a
    completed campaign, a second running campaign for a group...). Nothing was changed."""


class PolicyError(GarrisonError):
    """A well-formed request that policy does not allow."""


class EnrollmentRefused(PolicyError):
    """Factory policy refuses an enrollment (unknown serial, used token, quota, expiry...)."""


class AuditChainBroken(GarrisonError):
    """The audit log's hash chain does not verify: an entry was modified, removed or inserted."""

"""The device's trust anchor (:mod:`garrison.updates.device_state`): stored once, never
swapped for another root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner

from garrison.errors import ConfigError, InvalidRequest
from garrison.updates.device_state import UpdateState
from garrison.updates.repository import create_repository


def a_root() -> bytes:
    """The root metadata of a new repository with fresh keys."""
    root, targets, snapshot, timestamp = (
        CryptoSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(4)
    )
    repo = create_repository([root], targets, snapshot, timestamp, 1, dt.datetime.now(dt.UTC))
    return repo.root.to_bytes()


def test_the_initial_root_is_never_replaced(tmp_path: Path) -> None:
    state = UpdateState(tmp_path)
    ours, theirs = a_root(), a_root()
    state.store_initial_root(ours)
    state.store_initial_root(ours)  # the same root again: nothing changes
    with pytest.raises(ConfigError, match="already trusts another TUF root"):
        state.store_initial_root(theirs)
    with pytest.raises(InvalidRequest, match="not a valid TUF root"):
        state.store_initial_root(b"{}")
    assert state.initial_root() == ours

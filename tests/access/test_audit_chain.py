"""The audit log's hash chain: a clean chain verifies, every kind of tampering is named."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from garrison.access.audit import (
    GENESIS_HASH,
    AuditRecord,
    canonical,
    chain_hash,
    verify_chain,
)
from garrison.errors import AuditChainBroken

LENGTH = 50


def _record(seq: int, prev_hash: str, **fields: Any) -> AuditRecord:
    """An entry with correct hashes following ``prev_hash``."""
    body: dict[str, Any] = {
        "at": f"2025-01-01T00:{seq // 60:02d}:{seq % 60:02d}+00:00",
        "actor": "sofia" if seq % 2 else "admin",
        "action": "device.revoke" if seq % 3 == 0 else "batch.create",
        "target": f"SN-{seq:04d}",
        "outcome": "ok" if seq % 5 else "refused",
        "details": {"n": seq, "reason": "keyCompromise", "nested": {"b": [1, 2], "a": None}},
    }
    body.update(fields)
    entry_hash = chain_hash(prev_hash, canonical(seq, **body))
    return AuditRecord(seq=seq, prev_hash=prev_hash, entry_hash=entry_hash, **body)


def _chain(length: int = LENGTH) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, length + 1):
        record = _record(seq, prev)
        records.append(record)
        prev = record.entry_hash
    return records


@pytest.fixture
def chain() -> list[AuditRecord]:
    return _chain()


def _broken(records: list[AuditRecord]) -> str:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(records)
    assert info.type is AuditChainBroken
    return str(info.value)


# -- the building blocks -----------------------------------------------------------------------


def test_genesis_hash() -> None:
    assert GENESIS_HASH == "0" * 64


def test_canonical_is_sorted_compact_ascii_json() -> None:
    body = canonical(3, "t", "ä", "act", "tgt", "ok", {"z": 1, "a": {"y": 2, "b": 3}})
    assert body == (
        b'{"action":"act","actor":"\\u00e4","at":"t",'
        b'"details":{"a":{"b":3,"y":2},"z":1},"outcome":"ok","seq":3,"target":"tgt"}'
    )


def test_canonical_ignores_dict_insertion_order() -> None:
    one = canonical(1, "t", "a", "b", "c", "d", {"x": 1, "y": {"p": 1, "q": 2}})
    two = canonical(1, "t", "a", "b", "c", "d", {"y": {"q": 2, "p": 1}, "x": 1})
    assert one == two


def test_chain_hash_is_sha256_of_prev_and_body() -> None:
    body = canonical(1, "t", "a", "b", "c", "d", {})
    expected = hashlib.sha256(GENESIS_HASH.encode() + body).hexdigest()
    assert chain_hash(GENESIS_HASH, body) == expected
    assert chain_hash("1" * 64, body) != expected


# -- clean chains ------------------------------------------------------------------------------


def test_verify_clean_chain(chain: list[AuditRecord]) -> None:
    assert verify_chain(chain) == (LENGTH, chain[-1].entry_hash)


def test_verify_accepts_any_iterable(chain: list[AuditRecord]) -> None:
    assert verify_chain(iter(chain)) == (LENGTH, chain[-1].entry_hash)
    assert verify_chain(r for r in chain) == (LENGTH, chain[-1].entry_hash)


def test_verify_empty_chain() -> None:
    assert verify_chain([]) == (0, GENESIS_HASH)


def test_verify_prefix(chain: list[AuditRecord]) -> None:
    """Truncation from the end verifies: the head must be compared with a copy kept elsewhere."""
    assert verify_chain(chain[:10]) == (10, chain[9].entry_hash)
    assert verify_chain(chain[:10]) != verify_chain(chain)


# -- tampering ---------------------------------------------------------------------------------

FIELD_CHANGES: list[tuple[str, Any]] = [
    ("at", "2030-01-01T00:00:00+00:00"),
    ("actor", "mallory"),
    ("action", "principal.create"),
    ("target", "SN-9999"),
    ("outcome", "failed"),
    ("details", {"n": 25, "reason": "superseded", "nested": {"b": [1, 2], "a": None}}),
    ("details", {"n": 25, "reason": "keyCompromise", "nested": {"b": [2, 1], "a": None}}),
    ("details", {"n": 25, "reason": "keyCompromise", "nested": {"b": [1, 2]}}),
    ("details", {"n": 25, "reason": "keyCompromise", "nested": {"b": [1, 2], "a": None}, "x": 0}),
    ("details", {}),
    ("entry_hash", "f" * 64),
]


@pytest.mark.parametrize("position", [0, 24, LENGTH - 1], ids=["first", "middle", "last"])
@pytest.mark.parametrize(
    ("field", "value"),
    FIELD_CHANGES,
    ids=[f"{name}-{i}" for i, (name, _) in enumerate(FIELD_CHANGES)],
)
def test_changed_field_is_named(
    chain: list[AuditRecord], position: int, field: str, value: Any
) -> None:
    original = chain[position]
    if field == "details" and value == original.details:
        value = {**value, "changed": True}
    chain[position] = dataclasses.replace(original, **{field: value})
    seq = original.seq
    assert _broken(chain) == f"audit entry {seq} was modified after it was written"


@pytest.mark.parametrize("position", [0, 24, LENGTH - 1], ids=["first", "middle", "last"])
def test_changed_details_in_place(chain: list[AuditRecord], position: int) -> None:
    """Mutating the stored details dict (not replacing the record) is caught too."""
    chain[position].details["reason"] = "forged"
    assert _broken(chain) == f"audit entry {position + 1} was modified after it was written"


@pytest.mark.parametrize("position", [0, 24, LENGTH - 1], ids=["first", "middle", "last"])
def test_changed_prev_hash(chain: list[AuditRecord], position: int) -> None:
    record = chain[position]
    chain[position] = dataclasses.replace(record, prev_hash="a" * 64)
    assert _broken(chain) == f"audit entry {record.seq} does not link to entry {record.seq - 1}"


def test_changed_prev_hash_with_recomputed_entry_hash(chain: list[AuditRecord]) -> None:
    """Re-hashing the altered entry only moves the break to the next link."""
    record = chain[24]
    forged = _record(record.seq, "a" * 64)
    chain[24] = forged
    assert _broken(chain) == "audit entry 25 does not link to entry 24"


def test_rewritten_entry_breaks_the_next_link(chain: list[AuditRecord]) -> None:
    """A forger who re-hashes a changed entry is caught at the entry after it."""
    chain[24] = _record(25, chain[23].entry_hash, actor="mallory")
    assert _broken(chain) == "audit entry 26 does not link to entry 25"


def test_changed_seq(chain: list[AuditRecord]) -> None:
    chain[24] = dataclasses.replace(chain[24], seq=99)
    assert _broken(chain) == "audit entry 25 is missing (next entry found is 99)"


@pytest.mark.parametrize(
    "position", [0, 1, 24, LENGTH - 2], ids=["first", "second", "middle", "second-last"]
)
def test_deleted_entry(chain: list[AuditRecord], position: int) -> None:
    seq = chain[position].seq
    del chain[position]
    assert _broken(chain) == f"audit entry {seq} is missing (next entry found is {seq + 1})"


def test_deleted_range(chain: list[AuditRecord]) -> None:
    del chain[10:20]
    assert _broken(chain) == "audit entry 11 is missing (next entry found is 21)"


@pytest.mark.parametrize(("i", "j"), [(0, 1), (10, 11), (10, 30), (0, LENGTH - 1)])
def test_swapped_entries(chain: list[AuditRecord], i: int, j: int) -> None:
    chain[i], chain[j] = chain[j], chain[i]
    assert _broken(chain) == f"audit entry {i + 1} is missing (next entry found is {j + 1})"


def test_swapped_entries_renumbered(chain: list[AuditRecord]) -> None:
    """Swapping contents but keeping the sequence numbers in order breaks the link."""
    a, b = chain[10], chain[11]
    chain[10] = dataclasses.replace(b, seq=a.seq)
    chain[11] = dataclasses.replace(a, seq=b.seq)
    assert _broken(chain) == "audit entry 11 does not link to entry 10"


def test_inserted_entry_with_duplicate_seq(chain: list[AuditRecord]) -> None:
    """A well-hashed forged entry 26 inserted after 25: the real entry 26 now comes too late."""
    forged = _record(26, chain[24].entry_hash, actor="mallory")
    chain.insert(25, forged)
    assert _broken(chain) == "audit entry 27 is missing (next entry found is 26)"


def test_inserted_entry_renumbering_the_rest(chain: list[AuditRecord]) -> None:
    """Renumbering every later entry keeps the sequence but breaks the following link."""
    forged = _record(26, chain[24].entry_hash, actor="mallory")
    later = [dataclasses.replace(r, seq=r.seq + 1) for r in chain[25:]]
    tampered = [*chain[:25], forged, *later]
    assert _broken(tampered) == "audit entry 27 does not link to entry 26"


def test_inserted_entry_at_the_start(chain: list[AuditRecord]) -> None:
    forged = _record(1, GENESIS_HASH, actor="mallory")
    assert _broken([forged, *chain]) == "audit entry 2 is missing (next entry found is 1)"


def test_chain_not_starting_at_one(chain: list[AuditRecord]) -> None:
    assert _broken(chain[5:]) == "audit entry 1 is missing (next entry found is 6)"


def test_duplicated_entry(chain: list[AuditRecord]) -> None:
    chain.insert(25, chain[24])
    assert _broken(chain) == "audit entry 26 is missing (next entry found is 25)"


def test_spliced_chains() -> None:
    """Entries from another, independently valid chain do not link in."""
    ours = _chain()
    theirs = [dataclasses.replace(r, details={**r.details, "other": True}) for r in _chain()]
    # Re-hash "theirs" into a valid chain of its own.
    prev = GENESIS_HASH
    rebuilt = []
    for r in theirs:
        body = canonical(r.seq, r.at, r.actor, r.action, r.target, r.outcome, r.details)
        r = dataclasses.replace(r, prev_hash=prev, entry_hash=chain_hash(prev, body))
        rebuilt.append(r)
        prev = r.entry_hash
    assert verify_chain(rebuilt)[0] == LENGTH
    assert _broken([*ours[:30], *rebuilt[30:]]) == "audit entry 31 does not link to entry 30"

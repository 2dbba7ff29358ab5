"""The pure boot-environment state machine: every transition and every refusal."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from garrison.errors import GarrisonError
from garrison.updates import bootenv
from garrison.updates.bootenv import (
    BootEnv,
    BootEnvCorrupt,
    DowngradeRefused,
    NoBootableSlot,
    RollbackUnavailable,
    SlotInfo,
    SlotNotBootable,
    UpdateStateError,
)


def _info(version: str, security_version: int) -> SlotInfo:
    return SlotInfo.of(version.encode() * 100, version, security_version)


V1 = _info("1.0", 1)
V2 = _info("2.0", 2)  # raises the floor
V1_1 = _info("1.1", 1)  # same security version
OLD = _info("0.9", 0)  # below the factory floor

FACTORY = bootenv.factory_env(V1.version, V1.security_version, V1.sha256, V1.length)


def written(env: BootEnv = FACTORY, info: SlotInfo = V2) -> BootEnv:
    slot = bootenv.inactive(env)
    return bootenv.mark_written(bootenv.begin_write(env, slot, info), slot, info)


def on_trial(env: BootEnv = FACTORY, info: SlotInfo = V2, attempts: int = 3) -> BootEnv:
    env = written(env, info)
    return bootenv.switch_to(env, bootenv.inactive(env), attempts)


def trial_booted(env: BootEnv = FACTORY, info: SlotInfo = V2) -> BootEnv:
    return bootenv.boot(on_trial(env, info))[0]


def committed(env: BootEnv = FACTORY, info: SlotInfo = V2) -> BootEnv:
    return bootenv.commit(trial_booted(env, info))


def exhausted(attempts: int = 2) -> BootEnv:
    env = on_trial(attempts=attempts)
    for _ in range(attempts):
        env, slot = bootenv.boot(env)
        assert slot == "b"
    return env


def state(env: BootEnv, slot: str) -> str | None:
    info = env.slots[slot]
    return None if info is None else info.state


Step = Callable[[], Any]

# (case id, step, expected): expected is an exception type, or a check on the result.
CASES: list[tuple[str, Step, type[GarrisonError] | Callable[[Any], bool]]] = [
    # factory
    (
        "factory",
        lambda: FACTORY,
        lambda e: (
            e.active == e.last_good == "a"
            and e.trying is None
            and e.security_floor == 1
            and state(e, "a") == "good"
            and e.slots["b"] is None
        ),
    ),
    ("inactive", lambda: bootenv.inactive(FACTORY), lambda s: s == "b"),
    ("inactive after commit", lambda: bootenv.inactive(committed()), lambda s: s == "a"),
    # begin_write / mark_written
    (
        "begin_write empties the slot",
        lambda: bootenv.begin_write(written(), "b", V2),
        lambda e: e.slots["b"] is None and e.active == "a",
    ),
    ("begin_write active slot", lambda: bootenv.begin_write(FACTORY, "a", V2), UpdateStateError),
    ("begin_write unknown slot", lambda: bootenv.begin_write(FACTORY, "c", V2), UpdateStateError),
    ("begin_write below floor", lambda: bootenv.begin_write(FACTORY, "b", OLD), DowngradeRefused),
    (
        "begin_write during a trial",
        lambda: bootenv.begin_write(on_trial(), "b", V2),
        UpdateStateError,
    ),
    (
        "begin_write bad sha256",
        lambda: bootenv.begin_write(FACTORY, "b", replace(V2, sha256="xyz")),
        UpdateStateError,
    ),
    (
        "mark_written",
        written,
        lambda e: state(e, "b") == "written" and e.slots["b"].sha256 == V2.sha256,
    ),
    (
        "mark_written forces state written",
        lambda: written(info=replace(V2, state="good")),
        lambda e: state(e, "b") == "written",
    ),
    (
        "mark_written without begin_write",
        lambda: bootenv.mark_written(written(), "b", V2),
        UpdateStateError,
    ),
    ("mark_written active slot", lambda: bootenv.mark_written(FACTORY, "a", V2), UpdateStateError),
    (
        "abort_write keeps the slot empty",
        lambda: bootenv.abort_write(bootenv.begin_write(FACTORY, "b", V2), "b", "bad hash"),
        lambda e: e.slots["b"] is None and e.last_event == "install refused: bad hash",
    ),
    (
        "abort_write of a written slot",
        lambda: bootenv.abort_write(written(), "b", "x"),
        UpdateStateError,
    ),
    # switch_to
    (
        "switch_to",
        on_trial,
        lambda e: e.trying == "b" and e.attempts_left == 3 and e.active == "a",
    ),
    (
        "switch_to slot being written",
        lambda: bootenv.switch_to(bootenv.begin_write(FACTORY, "b", V2), "b", 3),
        SlotNotBootable,
    ),
    ("switch_to never written slot", lambda: bootenv.switch_to(FACTORY, "b", 3), SlotNotBootable),
    (
        "switch_to bad slot",
        lambda: bootenv.switch_to(bootenv.reject(on_trial(), "x"), "b", 3),
        SlotNotBootable,
    ),
    ("switch_to active slot", lambda: bootenv.switch_to(written(), "a", 3), UpdateStateError),
    ("switch_to twice", lambda: bootenv.switch_to(on_trial(), "b", 3), UpdateStateError),
    ("switch_to zero attempts", lambda: bootenv.switch_to(written(), "b", 0), UpdateStateError),
    (
        "switch_to below floor (floor rose after the write)",
        lambda: bootenv.switch_to(replace(written(info=V1_1), security_floor=5), "b", 3),
        DowngradeRefused,
    ),
    # boot
    (
        "boot without trial",
        lambda: bootenv.boot(FACTORY),
        lambda r: r[1] == "a" and r[0].last_boot == "a",
    ),
    (
        "boot keeps the last event",
        lambda: bootenv.boot(bootenv.reject(on_trial(), "health"))[0],
        lambda e: e.last_event == "rejected: health",
    ),
    (
        "boot trial uses an attempt",
        lambda: bootenv.boot(on_trial()),
        lambda r: r[1] == "b" and r[0].attempts_left == 2 and r[0].last_boot == "b",
    ),
    (
        "boot limit exhausted falls back",
        lambda: bootenv.boot(exhausted()),
        lambda r: (
            r[1] == "a"
            and r[0].trying is None
            and state(r[0], "b") == "bad"
            and r[0].last_event == "rolled-back: boot limit"
            and r[0].last_boot == "a"
        ),
    ),
    (
        "boot with no good active slot",
        lambda: bootenv.boot(replace(FACTORY, slots={"a": None, "b": None})),
        NoBootableSlot,
    ),
    # boot_failed (verified boot)
    (
        "boot_failed trial",
        lambda: bootenv.boot_failed(trial_booted(), "b", "failed verification"),
        lambda e: (
            e.trying is None
            and state(e, "b") == "bad"
            and e.last_event == "rolled-back: failed verification"
        ),
    ),
    (
        "boot_failed active falls back to good other slot",
        lambda: bootenv.boot_failed(committed(info=V1_1), "b", "failed verification"),
        lambda e: e.active == e.last_good == "a" and state(e, "b") == "bad",
    ),
    (
        "boot_failed active, other slot below floor",
        lambda: bootenv.boot_failed(committed(), "b", "failed verification"),
        NoBootableSlot,
    ),
    (
        "boot_failed active, other slot empty",
        lambda: bootenv.boot_failed(FACTORY, "a", "x"),
        NoBootableSlot,
    ),
    (
        "boot_failed slot not booted",
        lambda: bootenv.boot_failed(written(), "b", "x"),
        UpdateStateError,
    ),
    # commit
    (
        "commit raises the floor",
        committed,
        lambda e: (
            e.active == e.last_good == "b"
            and e.trying is None
            and e.security_floor == 2
            and state(e, "b") == "good"
            and state(e, "a") == "good"
        ),
    ),
    ("commit keeps the floor", lambda: committed(info=V1_1), lambda e: e.security_floor == 1),
    ("commit without trial", lambda: bootenv.commit(FACTORY), UpdateStateError),
    ("commit before booting the trial", lambda: bootenv.commit(on_trial()), UpdateStateError),
    # reject
    (
        "reject",
        lambda: bootenv.reject(trial_booted(), "service down"),
        lambda e: (
            e.trying is None
            and e.active == "a"
            and state(e, "b") == "bad"
            and e.last_event == "rejected: service down"
        ),
    ),
    ("reject without trial", lambda: bootenv.reject(FACTORY, "x"), UpdateStateError),
    # operator rollback
    (
        "rollback target same floor",
        lambda: bootenv.rollback_target(committed(info=V1_1)),
        lambda s: s == "a",
    ),
    (
        "start_rollback puts the old version on trial",
        lambda: bootenv.start_rollback(committed(info=V1_1), 2),
        lambda e: e.trying == "a" and e.attempts_left == 2 and e.last_event.startswith("operator"),
    ),
    (
        "rollback committed",
        lambda: bootenv.commit(bootenv.boot(bootenv.start_rollback(committed(info=V1_1)))[0]),
        lambda e: e.active == "a" and e.slots["a"] == replace(V1, state="good"),
    ),
    ("rollback below floor", lambda: bootenv.rollback_target(committed()), DowngradeRefused),
    ("rollback from factory", lambda: bootenv.rollback_target(FACTORY), RollbackUnavailable),
    ("rollback to a written slot", lambda: bootenv.rollback_target(written()), RollbackUnavailable),
    (
        "rollback to a bad slot",
        lambda: bootenv.rollback_target(bootenv.reject(on_trial(), "x")),
        RollbackUnavailable,
    ),
    ("rollback during a trial", lambda: bootenv.start_rollback(on_trial()), UpdateStateError),
]


@pytest.mark.parametrize(("step", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transition(step: Step, expected: type[GarrisonError] | Callable[[Any], bool]) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            step()
        assert str(info.value)
        return
    assert expected(step())


def test_downgrade_refusal_tells_to_roll_forward() -> None:
    with pytest.raises(DowngradeRefused) as info:
        bootenv.rollback_target(committed())
    assert "roll forward" in info.value.hint
    assert "2" in info.value.hint


def test_transitions_do_not_mutate_their_input() -> None:
    env = written()
    before = bootenv.to_json(env)
    bootenv.commit(bootenv.boot(bootenv.switch_to(env, "b", 3))[0])
    assert bootenv.to_json(env) == before


def test_full_cycle_ends_in_one_good_version() -> None:
    env = committed(committed(), _info("3.0", 3))
    assert env.active == "a" and env.slots["a"] == replace(_info("3.0", 3), state="good")
    assert env.security_floor == 3
    bootenv.check(env)


@pytest.mark.parametrize(
    "env", [FACTORY, written(), on_trial(), trial_booted(), committed(), exhausted()]
)
def test_json_round_trip(env: BootEnv) -> None:
    assert bootenv.from_json(bootenv.to_json(env)) == env


def _edit(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(bootenv.to_json(on_trial()))
    mutate(doc)
    return json.dumps(doc).encode()


def _resign(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    """Mutate and fix the checksum: only the semantic checks can catch it."""
    doc = json.loads(bootenv.to_json(on_trial()))
    mutate(doc)
    del doc["checksum"]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["checksum"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        bootenv.to_json(FACTORY)[:-20],
        b"[]",
        _edit(lambda d: d.update(attempts_left=9)),  # checksum no longer matches
        _resign(lambda d: d.update(format=2)),
        _resign(lambda d: d.update(trying="a")),  # trial on the active slot
        _resign(lambda d: d.update(active="c")),
        _resign(lambda d: d.update(attempts_left="3")),
        _resign(lambda d: d["slots"].update(a=None)),  # active slot empty
        _resign(lambda d: d["slots"]["b"].update(state="bad")),  # trial on a bad slot
        _resign(lambda d: d["slots"]["b"].update(security_version=0)),  # trial below floor
        _resign(lambda d: d["slots"].update(c=None)),
        _resign(lambda d: d.update(slots=[])),
        b"\xff\xfe",
    ],
)
def test_from_json_refuses_corrupt_data(data: bytes) -> None:
    with pytest.raises(BootEnvCorrupt):
        bootenv.from_json(data)

"""Pytest plugin: a real SoftHSM2 token for tests of PKCS#11 keys.

Register it once, in the root ``tests/conftest.py``::

    pytest_plugins = ["tests.conftest_softhsm"]

(or run ``pytest -p tests.conftest_softhsm``). Do not also import the fixtures into a test
module: a second definition of the session fixture would make a second token directory,
which the already-loaded module cannot see (below).

Fixtures:

``softhsm_token`` (session scope)
    A :class:`SoftHsmToken`: one SoftHSM2 configuration and one freshly initialised token
    (label ``garrison-test``, user PIN ``1234``, SO PIN ``5678``) for the whole test process.
    Skips the test if ``softhsm2-util`` or ``libsofthsm2.so`` is missing.
``pkcs11_key_label`` (function scope)
    A key label no other test uses, since all tests share the token.

What we found (SoftHSM 2.6.1, python-pkcs11 0.10.1), and why the token is per session:

* SoftHSM reads ``SOFTHSM2_CONF`` and scans its token directory once, in ``C_Initialize``.
  python-pkcs11 does call ``C_GetSlotList`` on every ``get_token``, but SoftHSM answers from
  the slot list it built at initialisation: a token that ``softhsm2-util --init-token`` creates
  after the module was loaded in this process stays invisible (``NoSuchToken``), and so does
  a token directory named by a ``SOFTHSM2_CONF`` set afterwards. Verified experimentally.
* ``lib.reinitialize()`` (``C_Finalize`` + ``C_Initialize``) does make new tokens visible, but
  it invalidates every open session and SoftHSM hands out session handles from 1 again, so a
  stale python-pkcs11 ``Session`` object silently addresses somebody else's new session (we
  saw a search on an old session return the objects of the new token). Nothing here
  reinitialises.
* A module must be loaded under one spelling of its path: python-pkcs11 caches by the string,
  and a second spelling runs ``C_Initialize`` again ("already initialized"). The fixture gives
  the real path, the spelling ``garrison.keys.pkcs11`` caches under.

Hence: ``SOFTHSM2_CONF`` is set, and the token initialised with ``softhsm2-util``, before any
test loads the module, once per test process (each pytest-xdist worker gets its own
directory). Tests keep apart by key label, and should close the keys they open, since
login state on a token is shared by the whole process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "garrison-test"
USER_PIN = "1234"
SO_PIN = "5678"


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised SoftHSM2 token and what it takes to use it."""

    module_path: str
    token_label: str
    pin: str
    conf_path: Path


def _find_module() -> str | None:
    override = os.environ.get("GARRISON_TEST_PKCS11_MODULE")
    for candidate in (override, *MODULE_CANDIDATES) if override else MODULE_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return os.path.realpath(candidate)
    return None


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    """One SoftHSM2 token for the test process (see the module docstring for why)."""
    util = shutil.which("softhsm2-util")
    module_path = _find_module()
    if util is None or module_path is None:
        pytest.skip(
            "SoftHSM2 is not installed (need softhsm2-util and libsofthsm2.so; "
            "set GARRISON_TEST_PKCS11_MODULE for an unusual module path)"
        )
    root = tmp_path_factory.mktemp("softhsm")
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        result = subprocess.run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"softhsm2-util --init-token failed: {result.stderr or result.stdout}")
        yield SoftHsmToken(
            module_path=module_path, token_label=TOKEN_LABEL, pin=USER_PIN, conf_path=conf
        )


@pytest.fixture
def pkcs11_key_label(request: pytest.FixtureRequest) -> str:
    """A key label unique to this test (all tests share one token)."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"

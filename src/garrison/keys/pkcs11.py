"""Keys that live in a PKCS#11 token (an HSM, a smart card, SoftHSM2) and never leave it.

:class:`Pkcs11EcKey` is an ``ec.EllipticCurvePrivateKey`` whose :meth:`~Pkcs11EcKey.sign`
hashes the data here and has the token sign the digest (``CKM_ECDSA``), so
``CertificateBuilder.sign``, ``CertificateRevocationListBuilder.sign`` and
``OCSPResponseBuilder.sign`` use a token key exactly like a software key. Everything that
would take the private value out of the token (``private_bytes``, ``private_numbers``) or use
it for something other than signing (``exchange``) raises :class:`KeyStoreError`.

Keys are named by token label and key label, or by an RFC 7512 URI restricted to those two
attributes: ``pkcs11:token=garrison;object=root-ca`` (:func:`parse_pkcs11_uri`).

Three facts about PKCS#11 and python-pkcs11 shape this module:

* A module (the ``.so``) is loaded and initialised once per process; loading it a second
  time under another spelling of its path fails ("already initialized"). Loaded modules are
  cached here by real path, created on first use.
* python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module the application is
  single-threaded; SoftHSM2 then turns its internal locks off. Every call into a module
  therefore holds that module's lock, whichever session or key it is for. Signing is
  serialised per module; that is the price of a thread pool over a non-locking module.
* Login state belongs to the application, not to a session: a second ``C_Login`` on a token
  fails with "user already logged in", and ``C_Logout`` (which closing a logged-in session
  does) logs out every session, invalidating every other key on that token. So each token
  has one shared login, reference-counted by the keys that use it; a later opener must give
  the same PIN (compared by salted digest), and the last :meth:`Pkcs11EcKey.close` logs out.

Close keys with :meth:`Pkcs11EcKey.close` or a ``with`` block; nothing is closed on garbage
collection (a PKCS#11 call from a finaliser could run at any time, on any thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar
from urllib.parse import quote, unquote

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.utils import Buffer
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from garrison.errors import KeyStoreError

__all__ = [
    "Pkcs11EcKey",
    "Pkcs11Ref",
    "closing_key",
    "format_pkcs11_uri",
    "generate_pkcs11_key",
    "open_pkcs11_key",
    "parse_pkcs11_uri",
]

# DER-encoded ``namedCurve`` OIDs, as found in CKA_EC_PARAMS.
_CURVES: dict[str, tuple[ec.EllipticCurve, bytes]] = {
    "ecdsa-p256": (ec.SECP256R1(), bytes.fromhex("06082a8648ce3d030107")),
    "ecdsa-p384": (ec.SECP384R1(), bytes.fromhex("06052b81040022")),
}
_CURVE_BY_PARAMS = {params: curve for curve, params in _CURVES.values()}

# Digests the token may be asked to sign: SHA-256, SHA-384, SHA-512 (by name and by size).
_HASHES = {"sha256": 32, "sha384": 48, "sha512": 64}

_PIN_HINT = "check the user PIN of the token"


# --- key references (RFC 7512 URIs, restricted) ---------------------------------------------


@dataclass(frozen=True)
class Pkcs11Ref:
    """Where a key lives: the token's label and the key's label (``CKA_LABEL``)."""

    token: str
    object: str


_PCHAR = re.compile(r"(?:[A-Za-z0-9\-._~:\[\]@!$&'()*+,=]|%[0-9A-Fa-f]{2})+")
_URI_ATTRIBUTES = ("token", "object")


def parse_pkcs11_uri(uri: str) -> Pkcs11Ref:
    """``pkcs11:token=<label>;object=<label>`` → :class:`Pkcs11Ref` (values percent-decoded).

    Only the ``token`` and ``object`` path attributes are accepted, each exactly once; a query
    part (``?pin-value=...``, ``?module-path=...``) and any other attribute are refused.
    """
    scheme, sep, path = uri.partition(":")
    if not sep or scheme.lower() != "pkcs11":
        raise KeyStoreError(
            f"not a PKCS#11 URI: {uri!r}",
            hint="write the key reference as pkcs11:token=<token label>;object=<key label>",
        )
    if "?" in path or "#" in path:
        raise KeyStoreError(
            f"PKCS#11 URI {uri!r} has a query or fragment, which Garrison does not accept",
            hint="give the module path and the PIN in the configuration, not in the URI",
        )
    values: dict[str, str] = {}
    for part in path.split(";") if path else []:
        name, eq, raw = part.partition("=")
        if name not in _URI_ATTRIBUTES:
            raise KeyStoreError(
                f"PKCS#11 URI {uri!r}: unsupported attribute {name!r}",
                hint="only token= and object= are supported",
            )
        if name in values:
            raise KeyStoreError(f"PKCS#11 URI {uri!r}: attribute {name!r} is repeated")
        if not eq or not _PCHAR.fullmatch(raw):
            raise KeyStoreError(
                f"PKCS#11 URI {uri!r}: {name} has an empty or badly encoded value",
                hint="percent-encode reserved characters, e.g. a space as %20, ';' as %3B",
            )
        try:
            values[name] = unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise KeyStoreError(f"PKCS#11 URI {uri!r}: {name} is not UTF-8") from exc
    missing = [name for name in _URI_ATTRIBUTES if name not in values]
    if missing:
        raise KeyStoreError(
            f"PKCS#11 URI {uri!r} lacks {' and '.join(missing)}",
            hint="write the key reference as pkcs11:token=<token label>;object=<key label>",
        )
    return Pkcs11Ref(token=values["token"], object=values["object"])


def format_pkcs11_uri(ref: Pkcs11Ref) -> str:
    """The URI :func:`parse_pkcs11_uri` reads back as ``ref``."""
    return f"pkcs11:token={quote(ref.token, safe='')};object={quote(ref.object, safe='')}"


# --- loaded modules and token logins -------------------------------------------------------


@dataclass
class _Login:
    """The one logged-in session of this process on one token, shared by its keys."""

    session: pkcs11.Session
    salt: bytes
    pin_digest: bytes
    users: int = 0


@dataclass
class _Module:
    """A loaded PKCS#11 module; ``lock`` guards every call into it."""

    path: str
    lib: Any
    lock: threading.RLock
    logins: dict[bytes, _Login]


_modules: dict[str, _Module] = {}
_modules_lock = threading.Lock()


def _load_module(module_path: str) -> _Module:
    path = os.path.realpath(module_path)
    with _modules_lock:
        module = _modules.get(path)
        if module is not None:
            return module
        if not Path(path).is_file():
            raise KeyStoreError(
                f"PKCS#11 module not found: {module_path}",
                hint="give the path of the token's PKCS#11 library, "
                "e.g. /usr/lib/softhsm/libsofthsm2.so",
            )
        try:
            lib = pkcs11.lib(path)
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(
                f"cannot load PKCS#11 module {module_path}: {_describe(exc)}",
                hint="check that the file is a PKCS#11 library and that its configuration "
                "is readable (for SoftHSM2: SOFTHSM2_CONF and its token directory)",
            ) from exc
        module = _Module(path=path, lib=lib, lock=threading.RLock(), logins={})
        _modules[path] = module
        return module


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _find_token(module: _Module, token_label: str) -> pkcs11.Token:
    """The token labelled ``token_label``; caller holds ``module.lock``."""
    try:
        token: pkcs11.Token = module.lib.get_token(token_label=token_label)
    except pkcs11.NoSuchToken as exc:
        labels = _token_labels(module)
        raise KeyStoreError(
            f"no token labelled {token_label!r} in {module.path}"
            f" (tokens: {', '.join(map(repr, labels)) or 'none'})",
            hint="check the token label; a module such as SoftHSM2 sees only tokens that "
            "existed when this process loaded it: restart after creating a token",
        ) from exc
    except pkcs11.MultipleTokensReturned as exc:
        raise KeyStoreError(
            f"several tokens are labelled {token_label!r} in {module.path}",
            hint="give each token a distinct label",
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise KeyStoreError(f"cannot list the tokens of {module.path}: {_describe(exc)}") from exc
    return token


def _token_labels(module: _Module) -> list[str]:
    """Labels of the initialised tokens, for error messages (empty if they cannot be read)."""
    try:
        return sorted(t.label for t in module.lib.get_tokens() if t.label)
    except pkcs11.PKCS11Error:
        return []


def _pin_digest(salt: bytes, pin: str) -> bytes:
    return hashlib.sha256(salt + pin.encode()).digest()


def _login(module: _Module, token: pkcs11.Token, pin: str) -> _Login:
    """Log in to ``token`` or join this process's login; caller holds ``module.lock``."""
    login = module.logins.get(token.serial)
    if login is not None:
        if not hmac.compare_digest(login.pin_digest, _pin_digest(login.salt, pin)):
            raise KeyStoreError(f"wrong PIN for token {token.label!r}", hint=_PIN_HINT)
        login.users += 1
        return login
    try:
        session = token.open(user_pin=pin)
    except (pkcs11.PinIncorrect, pkcs11.PinLenRange) as exc:
        raise KeyStoreError(f"wrong PIN for token {token.label!r}", hint=_PIN_HINT) from exc
    except pkcs11.PinLocked as exc:
        raise KeyStoreError(
            f"the PIN of token {token.label!r} is locked",
            hint="unlock it with the security officer PIN (token administration tool)",
        ) from exc
    except pkcs11.UserAlreadyLoggedIn as exc:
        raise KeyStoreError(
            f"token {token.label!r} is already logged in by other code in this process",
            hint="open every key of this token through garrison.keys.pkcs11",
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise KeyStoreError(
            f"cannot log in to token {token.label!r}: {_describe(exc)}", hint=_PIN_HINT
        ) from exc
    salt = os.urandom(16)
    login = _Login(session=session, salt=salt, pin_digest=_pin_digest(salt, pin), users=1)
    module.logins[token.serial] = login
    return login


def _logout(module: _Module, serial: bytes, *, quiet: bool = False) -> None:
    """Drop one user of the login on token ``serial``; the last one logs out.

    Caller holds ``module.lock``. ``quiet`` when another error is already being raised.
    """
    login = module.logins[serial]
    login.users -= 1
    if login.users > 0:
        return
    del module.logins[serial]
    if quiet:
        _close_quietly(login.session)
    else:
        _close(login.session, "the token login session")


def _open_session(token: pkcs11.Token, *, rw: bool) -> pkcs11.Session:
    """A session without its own login (it shares the token's); caller holds the lock."""
    try:
        return token.open(rw=rw)
    except pkcs11.PKCS11Error as exc:
        raise KeyStoreError(
            f"cannot open a session on token {token.label!r}: {_describe(exc)}"
        ) from exc


def _close(session: pkcs11.Session, what: str) -> None:
    try:
        session.close()  # C_Logout if the session logged in, then C_CloseSession
    except pkcs11.PKCS11Error as exc:
        raise KeyStoreError(f"cannot close {what}: {_describe(exc)}") from exc


def _close_quietly(session: pkcs11.Session) -> None:
    # Only while another error is on its way out: that error is the one to report.
    with contextlib.suppress(pkcs11.PKCS11Error):
        session.close()


def _objects(session: pkcs11.Session, attrs: dict[Attribute, Any]) -> list[Any]:
    return list(session.get_objects(attrs))


# --- the key ---------------------------------------------------------------------------------


class Pkcs11EcKey(ec.EllipticCurvePrivateKey):
    """An EC private key (P-256 or P-384) held in a PKCS#11 token; it can only sign.

    Build one with :func:`open_pkcs11_key` or :func:`generate_pkcs11_key`. Thread-safe.
    """

    def __init__(
        self,
        *,
        module: _Module,
        token_serial: bytes,
        ref: Pkcs11Ref,
        session: pkcs11.Session,
        private_key: Any,
        public_key: ec.EllipticCurvePublicKey,
    ) -> None:
        self._module = module
        self._token_serial = token_serial
        self._ref = ref
        self._session: pkcs11.Session | None = session
        self._private_key = private_key
        self._public_key = public_key

    @property
    def ref(self) -> Pkcs11Ref:
        """Which token and key label this is."""
        return self._ref

    def __repr__(self) -> str:
        state = "closed" if self._session is None else self._public_key.curve.name
        return f"<Pkcs11EcKey {format_pkcs11_uri(self._ref)} ({state})>"

    # -- signing --

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """A DER ``ECDSA-Sig-Value`` over ``data``, made by the token."""
        digest = _digest(data, signature_algorithm)
        raw = self._sign_digest(digest)
        size = (self.key_size + 7) // 8
        if len(raw) != 2 * size:
            raise KeyStoreError(
                f"token returned a {len(raw)}-byte ECDSA signature for {self!r}, "
                f"expected {2 * size}"
            )
        r = int.from_bytes(raw[:size], "big")
        s = int.from_bytes(raw[size:], "big")
        return encode_dss_signature(r, s)

    def _sign_digest(self, digest: bytes) -> bytes:
        with self._module.lock:
            if self._session is None:
                raise KeyStoreError(f"{self!r} is closed", hint="open the key again")
            try:
                raw: bytes = self._private_key.sign(digest, mechanism=Mechanism.ECDSA)
            except pkcs11.PKCS11Error as exc:
                raise KeyStoreError(
                    f"token refused to sign with {format_pkcs11_uri(self._ref)}: {_describe(exc)}",
                    hint="check that the token is present and the key may sign (CKA_SIGN)",
                ) from exc
        return raw

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.curve.key_size

    # -- what a token key refuses to do --

    def _refuse(self, what: str) -> NoReturn:
        raise KeyStoreError(
            f"{format_pkcs11_uri(self._ref)} is non-exportable: it lives in a PKCS#11 token "
            f"and can only sign ({what} refused)",
            hint="back up token keys with the token's own tools, never through Garrison",
        )

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        self._refuse("ECDH")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse("private_numbers")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        self._refuse("private_bytes")

    def __reduce__(self) -> NoReturn:
        self._refuse("pickling")

    # A handle on a token object is immutable and shared: copies are the key itself.
    def __copy__(self) -> Pkcs11EcKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Pkcs11EcKey:
        return self

    # -- lifetime --

    def close(self) -> None:
        """Close this key's session; the last key of a token logs out. Idempotent."""
        with self._module.lock:
            session, self._session = self._session, None
            if session is None:
                return
            try:
                _close(session, repr(self))
            except KeyStoreError:
                _logout(self._module, self._token_serial, quiet=True)
                raise
            _logout(self._module, self._token_serial)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


K = TypeVar("K")


@contextlib.contextmanager
def closing_key(key: K) -> Iterator[K]:
    """``key`` for the length of a ``with`` block, closed at its end if it lives in a token
    (a software key holds nothing to release)."""
    try:
        yield key
    finally:
        if isinstance(key, Pkcs11EcKey):
            key.close()


def _digest(data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
    if not isinstance(signature_algorithm, ec.ECDSA):
        raise KeyStoreError(
            f"a PKCS#11 EC key signs only with ECDSA, not {type(signature_algorithm).__name__}"
        )
    if signature_algorithm.deterministic_signing:
        raise KeyStoreError(
            "the token cannot sign deterministically (RFC 6979)",
            hint="use ec.ECDSA(hash) without deterministic_signing",
        )
    algorithm = signature_algorithm.algorithm
    if isinstance(algorithm, Prehashed):
        digest = bytes(data)
        if algorithm.digest_size not in _HASHES.values() or len(digest) != algorithm.digest_size:
            raise KeyStoreError(
                f"a prehashed digest must be 32, 48 or 64 bytes long, got {len(digest)}"
            )
        return digest
    if algorithm.name not in _HASHES:
        raise KeyStoreError(
            f"refusing to sign with {algorithm.name}",
            hint="use SHA-256, SHA-384 or SHA-512",
        )
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


# --- opening and generating -----------------------------------------------------------------


def open_pkcs11_key(module_path: str, token_label: str, pin: str, key_label: str) -> Pkcs11EcKey:
    """Open the EC key labelled ``key_label`` on the token labelled ``token_label``.

    The private key must be sensitive and non-extractable; the key pair is checked by signing
    and verifying once before the key is returned.
    """
    module = _load_module(module_path)
    ref = Pkcs11Ref(token=token_label, object=key_label)
    with module.lock:
        token = _find_token(module, token_label)
        _login(module, token, pin)
        try:
            return _open_logged_in(module, token, ref)
        except BaseException:
            _logout(module, token.serial, quiet=True)
            raise


def generate_pkcs11_key(
    module_path: str,
    token_label: str,
    pin: str,
    key_label: str,
    curve: str = "ecdsa-p256",
) -> Pkcs11EcKey:
    """Generate a key pair in the token and open it.

    The private key is a token object, private, sensitive and non-extractable, and may only
    sign. ``curve`` is ``ecdsa-p256`` (default) or ``ecdsa-p384``. Refuses a label already in
    use on the token.
    """
    if curve not in _CURVES:
        raise KeyStoreError(
            f"unsupported curve {curve!r} for a PKCS#11 key",
            hint=f"use one of: {', '.join(_CURVES)}",
        )
    if not key_label:
        raise KeyStoreError("a PKCS#11 key needs a label", hint="e.g. root-ca")
    module = _load_module(module_path)
    ref = Pkcs11Ref(token=token_label, object=key_label)
    with module.lock:
        token = _find_token(module, token_label)
        _login(module, token, pin)
        try:
            _generate_key_pair(token, ref, _CURVES[curve][1])
            return _open_logged_in(module, token, ref)
        except BaseException:
            _logout(module, token.serial, quiet=True)
            raise


def _generate_key_pair(token: pkcs11.Token, ref: Pkcs11Ref, ec_params: bytes) -> None:
    """Create the key pair; caller holds the module lock and a login on ``token``."""
    uri = format_pkcs11_uri(ref)
    session = _open_session(token, rw=True)
    try:
        if _objects(session, {Attribute.LABEL: ref.object}):
            raise KeyStoreError(
                f"a key labelled {ref.object!r} already exists on token {ref.token!r}",
                hint="choose another label, or open the existing key with open_pkcs11_key",
            )
        session.generate_keypair(
            KeyType.EC,
            id=os.urandom(16),
            label=ref.object,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: ec_params, Attribute.PRIVATE: False},
            private_template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
    except pkcs11.PKCS11Error as exc:
        _close_quietly(session)
        raise KeyStoreError(
            f"cannot generate {uri}: {_describe(exc)}",
            hint="check that the token is writable and supports EC P-256/P-384 key generation",
        ) from exc
    except BaseException:
        _close_quietly(session)
        raise
    _close(session, f"the session that generated {uri}")


def _open_logged_in(module: _Module, token: pkcs11.Token, ref: Pkcs11Ref) -> Pkcs11EcKey:
    """The key ``ref``, in a new session; caller holds the module lock and a login."""
    session = _open_session(token, rw=False)
    try:
        private_key, public_key = _find_key_pair(session, ref)
        key = Pkcs11EcKey(
            module=module,
            token_serial=token.serial,
            ref=ref,
            session=session,
            private_key=private_key,
            public_key=public_key,
        )
        _self_test(key)
    except BaseException:
        _close_quietly(session)
        raise
    return key


def _find_key_pair(
    session: pkcs11.Session, ref: Pkcs11Ref
) -> tuple[Any, ec.EllipticCurvePublicKey]:
    uri = format_pkcs11_uri(ref)
    try:
        private = _objects(
            session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: ref.object}
        )
        if not private:
            everything = _objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            labels = sorted({k[Attribute.LABEL] for k in everything})
            raise KeyStoreError(
                f"no private key labelled {ref.object!r} on token {ref.token!r}"
                f" (keys: {', '.join(map(repr, labels)) or 'none'})",
                hint="check the key label, or create the key with generate_pkcs11_key",
            )
        if len(private) > 1:
            raise KeyStoreError(
                f"{len(private)} private keys are labelled {ref.object!r} on token {ref.token!r}",
                hint="give each key a distinct label",
            )
        key = private[0]
        if key[Attribute.KEY_TYPE] != KeyType.EC:
            raise KeyStoreError(f"{uri} is not an EC key", hint="use a P-256 or P-384 key")
        if not key[Attribute.SENSITIVE] or key[Attribute.EXTRACTABLE]:
            raise KeyStoreError(
                f"refusing {uri}: its private value can leave the token "
                "(CKA_SENSITIVE is false or CKA_EXTRACTABLE is true)",
                hint="generate a new key in the token with generate_pkcs11_key",
            )
        lookup = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: ref.object}
        key_id = key[Attribute.ID]
        if key_id:
            lookup[Attribute.ID] = key_id
        public = _objects(session, lookup)
        if len(public) != 1:
            raise KeyStoreError(
                f"{uri} has {len(public)} matching public key objects, expected 1",
                hint="the token must hold the public key next to the private key "
                "(same label and CKA_ID)",
            )
        ec_params = bytes(key[Attribute.EC_PARAMS])
        ec_point = bytes(public[0][Attribute.EC_POINT])
    except pkcs11.PKCS11Error as exc:
        raise KeyStoreError(f"cannot read {uri}: {_describe(exc)}") from exc
    curve = _CURVE_BY_PARAMS.get(ec_params)
    if curve is None:
        raise KeyStoreError(f"{uri} is on an unsupported curve", hint="use P-256 or P-384")
    return key, _public_key(curve, ec_point, uri)


def _public_key(curve: ec.EllipticCurve, ec_point: bytes, uri: str) -> ec.EllipticCurvePublicKey:
    """CKA_EC_POINT → public key. The standard value is a DER OCTET STRING holding the
    uncompressed point; some modules give the bare point, which is accepted as well."""
    size = 2 * ((curve.key_size + 7) // 8) + 1
    if len(ec_point) == size + 2 and ec_point[:2] == bytes([0x04, size]):
        ec_point = ec_point[2:]
    if len(ec_point) != size:
        raise KeyStoreError(f"{uri}: cannot decode its public point (CKA_EC_POINT)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, ec_point)
    except ValueError as exc:
        raise KeyStoreError(f"{uri}: its public point is not on {curve.name}") from exc


def _self_test(key: Pkcs11EcKey) -> None:
    """Sign and verify once: the public key object must belong to the private key."""
    message = os.urandom(32)
    algorithm = ec.ECDSA(hashes.SHA256())
    try:
        key.public_key().verify(key.sign(message, algorithm), message, algorithm)
    except InvalidSignature as exc:
        raise KeyStoreError(
            f"{format_pkcs11_uri(key.ref)}: the public key object does not match the private key",
            hint="the token holds an inconsistent key pair; regenerate the key",
        ) from exc

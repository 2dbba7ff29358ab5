"""Private keys, wherever they live: encrypted files or PKCS#11 tokens.

Every signing key in Garrison is a ``cryptography`` private-key object. A key held in a
PKCS#11 token is a subclass of ``ec.EllipticCurvePrivateKey`` whose ``sign`` calls the
token, so certificate, CRL and OCSP builders never know where the key lives.
"""

from garrison.keys.software import (
    SigningKey,
    generate_software_key,
    load_software_key,
    save_software_key,
)

__all__ = ["SigningKey", "generate_software_key", "load_software_key", "save_software_key"]

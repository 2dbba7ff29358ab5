"""The device's HTTPS client to the control plane: for enrollment, check-in and updates.

TLS is pinned to the fleet root the device was given at provisioning; given the device's
identity, the client also presents its certificate and key (mutual TLS).
"""

from __future__ import annotations

import httpx

from garrison.agent.est_client import tls_context
from garrison.agent.identity import AgentConfig, Identity, StateDir
from garrison.errors import ConfigError


def device_client(
    state: StateDir,
    config: AgentConfig,
    identity: Identity | None = None,
    *,
    timeout: float = 30.0,
) -> httpx.Client:
    """A client for ``config.server_url`` trusting only the fleet root; with ``identity``,
    presenting its certificate and (encrypted) key file."""
    trust = str(state.trust_path)
    if identity is None:
        context = tls_context(trust)
    else:
        if not identity.key_ref.startswith("file:"):
            raise ConfigError(
                "this agent cannot yet do mutual TLS with a key inside a PKCS#11 token",
                hint="use the file key store for devices that talk mTLS (docs/identity.md)",
            )
        context = tls_context(
            trust,
            str(identity.cert_path),
            str(identity.key_path),
            state.key_secrets(config).passphrase,
        )
    return httpx.Client(base_url=config.server_url, verify=context, timeout=timeout)

"""The control plane: a thin ASGI shell around the identity services."""

"""Signed releases and atomic updates: the TUF repository, the device update client, A/B installation."""

"""Signed releases and atomic updates: TUF repository, update client, A/B installation."""

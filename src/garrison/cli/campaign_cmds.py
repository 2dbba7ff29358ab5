"""``garrison campaign …``: rollout campaigns and the fleet update level."""

from __future__ import annotations

import typer

campaign_app = typer.Typer(
    help="Rollout campaigns: canary, waves, pause, resume, abort.", no_args_is_help=True
)

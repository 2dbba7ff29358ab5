"""``garrison group …`` and ``garrison desired …``: groups, tags and desired state."""

from __future__ import annotations

import typer

group_app = typer.Typer(
    help="Device groups: static members or a filter over inventory.", no_args_is_help=True
)
desired_app = typer.Typer(
    help="Desired state: the firmware and apps that must run, per group or device.",
    no_args_is_help=True,
)

"""The ``garrison`` command."""

from __future__ import annotations

import typer

from garrison import __version__
from garrison.cli import (
    admin_cmds,
    agent_cmds,
    campaign_cmds,
    demo_cmd,
    fleet_cmds,
    group_cmds,
    release_cmds,
    sim_cmds,
)

app = typer.Typer(
    help="Garrison: one chain of trust from the factory to devices in the field.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(fleet_cmds.init)
app.command()(fleet_cmds.server)
app.command()(demo_cmd.demo)
app.command()(sim_cmds.simulate)
app.add_typer(admin_cmds.principal_app, name="principal")
app.add_typer(admin_cmds.batch_app, name="batch")
app.add_typer(admin_cmds.device_app, name="device")
app.add_typer(admin_cmds.audit_app, name="audit")
app.add_typer(agent_cmds.agent_app, name="agent")
app.add_typer(release_cmds.release_app, name="release")
app.add_typer(release_cmds.manager_app, name="release-manager")
app.add_typer(release_cmds.tuf_app, name="tuf")
app.add_typer(group_cmds.group_app, name="group")
app.add_typer(group_cmds.desired_app, name="desired")
app.add_typer(campaign_cmds.campaign_app, name="campaign")


@app.command()
def version() -> None:
    """Print the Garrison version."""
    print(__version__)


def main() -> None:
    app()

"""Operator commands to devices (rollback) and the update hold that keeps a rolled-back
device on its previous version.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from garrison.store.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("update_hold", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "device_commands",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", UtcDateTime, nullable=False),
        sa.Column("done_at", UtcDateTime, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("detail", sa.String(300), nullable=True),
    )
    op.create_index("ix_device_commands_device_id", "device_commands", ["device_id"])


def downgrade() -> None:
    op.drop_table("device_commands")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("update_hold")

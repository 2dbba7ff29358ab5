"""Fleet control: device inventory and history, tags, groups (static and dynamic, with
materialized membership), desired state per group and device, the directive each device
polls, rollout campaigns and each device's place in them.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from garrison.store.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _device_fk(primary: bool) -> sa.Column[int]:
    return sa.Column(
        "device_id",
        sa.Integer,
        sa.ForeignKey("devices.id"),
        primary_key=primary,
        autoincrement=False,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "device_inventory",
        _device_fk(True),
        sa.Column("reported_at", UtcDateTime, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("firmware", sa.String(64), nullable=True),
        sa.Column("boot_slot", sa.String(8), nullable=True),
        sa.Column("slot_state", sa.String(16), nullable=True),
        sa.Column("apps", sa.Text, nullable=False),
        sa.Column("agent_version", sa.String(32), nullable=True),
        sa.Column("uptime_seconds", sa.BigInteger, nullable=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "device_tags",
        _device_fk(True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_table(
        "device_history",
        sa.Column("id", sa.Integer, primary_key=True),
        _device_fk(False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("summary", sa.String(300), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_device_history_device_id", "device_history", ["device_id"])
    op.create_table(
        "device_groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("filter", sa.Text, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("window", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column(
            "group_id",
            sa.Integer,
            sa.ForeignKey("device_groups.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), primary_key=True),
    )
    op.create_index("ix_group_members_device_id", "group_members", ["device_id"])
    op.create_table(
        "desired_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("scope_id", sa.Integer, nullable=False),
        sa.Column("firmware_release_id", sa.Integer, sa.ForeignKey("releases.id"), nullable=True),
        sa.Column("apps", sa.Text, nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("scope", "scope_id", name="uq_desired_state_scope"),
    )
    op.create_table(
        "device_directives",
        _device_fk(True),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("computed_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("device_groups.id"), nullable=False),
        sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phase", sa.Integer, nullable=False),
        sa.Column("phase_started_at", UtcDateTime, nullable=True),
        sa.Column("reason", sa.String(300), nullable=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_campaigns_group_id", "campaigns", ["group_id"])
    op.create_index("ix_campaigns_state", "campaigns", ["state"])
    op.create_table(
        "campaign_devices",
        sa.Column(
            "campaign_id",
            sa.Integer,
            sa.ForeignKey("campaigns.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), primary_key=True),
        sa.Column("phase", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("assigned_at", UtcDateTime, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("detail", sa.String(300), nullable=True),
    )
    op.create_index("ix_campaign_devices_device_id", "campaign_devices", ["device_id"])


def downgrade() -> None:
    for table in (
        "campaign_devices",
        "campaigns",
        "device_directives",
        "desired_state",
        "group_members",
        "device_groups",
        "device_history",
        "device_tags",
        "device_inventory",
    ):
        op.drop_table(table)

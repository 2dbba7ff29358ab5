"""Batches may register a manufacturer (IDevID) CA instead of handing out tokens.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("idevid_issuer", sa.String(64), nullable=True))
        batch.add_column(sa.Column("idevid_ca", sa.LargeBinary, nullable=True))
        batch.create_index("ix_batches_idevid_issuer", ["idevid_issuer"])


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_index("ix_batches_idevid_issuer")
        batch.drop_column("idevid_ca")
        batch.drop_column("idevid_issuer")

"""The CRL state row exists from the start, so that publishing a CRL can lock it first.

Revision ID: 0004
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from garrison.store.tables import UtcDateTime

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    crl_state = sa.table(
        "crl_state",
        sa.column("id", sa.Integer),
        sa.column("crl_number", sa.Integer),
        sa.column("next_update", UtcDateTime),
        sa.column("der", sa.LargeBinary),
    )
    exists = op.get_bind().execute(sa.select(crl_state.c.id).where(crl_state.c.id == 1)).first()
    if exists is None:
        op.bulk_insert(
            crl_state,
            [{"id": 1, "crl_number": 0, "next_update": EPOCH, "der": b""}],
        )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM crl_state WHERE id = 1 AND crl_number = 0"))

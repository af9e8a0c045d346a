"""Keep each email's one-click withdrawal address, for its List-Unsubscribe header.

Revision ID: c3e5f7a9b1d2
Revises: b2d4c6e8f0a1
Create Date: 2026-11-28 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c3e5f7a9b1d2"
down_revision = "b2d4c6e8f0a1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("unsubscribe_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_column("unsubscribe_url")

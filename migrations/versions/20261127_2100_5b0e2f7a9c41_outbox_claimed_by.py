"""Outbox: remember which worker holds a message's claim.

Revision ID: 5b0e2f7a9c41
Revises: c386b4fcc07d
Create Date: 2026-11-27 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5b0e2f7a9c41"
down_revision = "c386b4fcc07d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=32)))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.drop_column("claimed_by")

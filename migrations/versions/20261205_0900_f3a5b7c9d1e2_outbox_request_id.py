"""Outbox: remember the request that created a message, for the worker's logs.

Revision ID: f3a5b7c9d1e2
Revises: e2f4a6b8c0d3
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f3a5b7c9d1e2"
down_revision = "e2f4a6b8c0d3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64)))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.drop_column("request_id")

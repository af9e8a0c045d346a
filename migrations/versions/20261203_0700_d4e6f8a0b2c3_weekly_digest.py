"""Weekly digest: staff opt in; each week's digest is queued once.

Revision ID: d4e6f8a0b2c3
Revises: c3211bc1728e
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "d4e6f8a0b2c3"
down_revision = "c3211bc1728e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(
            sa.Column(
                "weekly_digest", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    op.create_table(
        "digest_weeks",
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("sent_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("week_start", name=op.f("pk_digest_weeks")),
    )


def downgrade() -> None:
    op.drop_table("digest_weeks")
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("weekly_digest")

"""The review queue filters on its own copies of segment, plan and cancellation.

Revision ID: 06763a3a950c
Revises: 7a36bb91de16
Create Date: 2026-11-27 21:34:15.558746
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "06763a3a950c"
down_revision = "7a36bb91de16"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("plan", sa.String(length=80), nullable=True))
        batch_op.add_column(
            sa.Column(
                "cancelled_at", survey.db.UTCDateTime(timezone=True), nullable=True
            )
        )
    # Copy the departures' facts into the items already queued.
    op.execute(
        "UPDATE review_items SET "
        "segment = (SELECT d.segment FROM departures d "
        "WHERE d.id = review_items.departure_id), "
        "plan = (SELECT d.plan FROM departures d "
        "WHERE d.id = review_items.departure_id), "
        "cancelled_at = (SELECT d.cancelled_at FROM departures d "
        "WHERE d.id = review_items.departure_id)"
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.alter_column(
            "cancelled_at",
            existing_type=survey.db.UTCDateTime(timezone=True),
            nullable=False,
        )
        batch_op.create_index(
            "ix_review_items_plan_mrr", ["plan", "mrr_cents", "id"], unique=False
        )
        batch_op.create_index(
            "ix_review_items_segment_mrr", ["segment", "mrr_cents", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_items_segment_mrr")
        batch_op.drop_index("ix_review_items_plan_mrr")
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("plan")
        batch_op.drop_column("segment")

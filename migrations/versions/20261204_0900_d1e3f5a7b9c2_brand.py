"""The brand: who the customer is told is asking (one row), and each email's
From name and Reply-To as they were when it was written.

Revision ID: d1e3f5a7b9c2
Revises: c9d1e3f5a7b9
Create Date: 2026-12-04 09:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "d1e3f5a7b9c2"
down_revision = "c9d1e3f5a7b9"
branch_labels = None
depends_on = None

Timestamp = survey.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    brand = op.create_table(
        "brand",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_name", sa.String(100), nullable=True),
        sa.Column("sender_name", sa.String(100), nullable=True),
        sa.Column("reply_to", sa.String(320), nullable=True),
        sa.Column("website_url", sa.String(500), nullable=True),
        sa.Column("accent_color", sa.String(7), nullable=True),
        sa.Column("logo", sa.LargeBinary(), nullable=True),
        sa.Column("logo_type", sa.String(20), nullable=True),
        sa.Column("logo_width", sa.Integer(), nullable=True),
        sa.Column("logo_height", sa.Integer(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_brand_one_row")),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_users.id"],
            name=op.f("fk_brand_updated_by_id_staff_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brand")),
    )
    # The one row exists from the start: saving it is an update under a lock.
    op.bulk_insert(brand, [{"id": 1, "updated_at": datetime.now(UTC)}])
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("sender_name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("reply_to", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_column("reply_to")
        batch.drop_column("sender_name")
    op.drop_table("brand")

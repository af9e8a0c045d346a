"""Review items copy their departure's currency, and learn of its erasure.

So that insights count postmortems without reading the departures.

Revision ID: b8c0d2e4f6a7
Revises: a7b9c1d3e5f6
Create Date: 2026-12-03 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "b8c0d2e4f6a7"
down_revision = "a7b9c1d3e5f6"
branch_labels = None
depends_on = None

departures = sa.table(
    "departures",
    sa.column("id", sa.Integer),
    sa.column("currency", sa.String),
    sa.column("erased_at", survey.db.UTCDateTime(timezone=True)),
)
review_items = sa.table(
    "review_items",
    sa.column("departure_id", sa.Integer),
    sa.column("currency", sa.String),
    sa.column("erased", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch.add_column(
            sa.Column("erased", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    of_departure = departures.c.id == review_items.c.departure_id
    op.execute(
        review_items.update().values(
            currency=sa.select(departures.c.currency)
            .where(of_departure)
            .scalar_subquery(),
            erased=sa.select(departures.c.erased_at.is_not(None))
            .where(of_departure)
            .scalar_subquery(),
        )
    )
    with op.batch_alter_table("review_items") as batch:
        batch.alter_column(
            "currency", existing_type=sa.String(length=3), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("erased")
        batch.drop_column("currency")

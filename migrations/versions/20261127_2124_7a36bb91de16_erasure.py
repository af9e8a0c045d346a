"""Departures remember their erasure; a person's departures are found by address.

Revision ID: 7a36bb91de16
Revises: 0cdc0a12c8de
Create Date: 2026-11-27 21:24:15.573894
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "7a36bb91de16"
down_revision = "0cdc0a12c8de"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("departures", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("erased_at", survey.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_departures_contact_email", ["contact_email"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("departures", schema=None) as batch_op:
        batch_op.drop_index("ix_departures_contact_email")
        batch_op.drop_column("erased_at")

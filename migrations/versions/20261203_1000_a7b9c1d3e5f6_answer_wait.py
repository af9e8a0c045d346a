"""Departures keep how long after the invitation the first answer came.

For insights' median wait, read from an index of the waits (answered after
the invitation, not erased) by day; filled here from the answers.

Revision ID: a7b9c1d3e5f6
Revises: f6a8b0c2d4e5
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "a7b9c1d3e5f6"
down_revision = "f6a8b0c2d4e5"
branch_labels = None
depends_on = None

WAITED = "answer_wait_seconds IS NOT NULL AND erased_at IS NULL"

departures = sa.table(
    "departures",
    sa.column("id", sa.Integer),
    sa.column("invitation_sent_at", survey.db.UTCDateTime(timezone=True)),
    sa.column("answer_wait_seconds", sa.BigInteger),
)
responses = sa.table(
    "responses",
    sa.column("departure_id", sa.Integer),
    sa.column("answered_at", survey.db.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.add_column(
            sa.Column("answer_wait_seconds", sa.BigInteger(), nullable=True)
        )
    answered_at, sent_at = responses.c.answered_at, departures.c.invitation_sent_at
    if op.get_bind().dialect.name == "postgresql":
        seconds = sa.func.floor(sa.extract("epoch", answered_at - sent_at))
    else:
        days = sa.func.julianday(answered_at) - sa.func.julianday(sent_at)
        # Days as a float: rounded to the millisecond, then cut to the second
        # (CAST truncates, as the app does; round() is in every SQLite).
        seconds = sa.func.round(days * 86400, 3)
    wait = (
        sa.select(sa.cast(seconds, sa.BigInteger))
        .where(responses.c.departure_id == departures.c.id, answered_at >= sent_at)
        .scalar_subquery()
    )
    op.execute(
        departures.update().where(sent_at.is_not(None)).values(answer_wait_seconds=wait)
    )
    op.create_index(
        "ix_departures_answer_wait",
        "departures",
        ["cancelled_at", "answer_wait_seconds"],
        sqlite_where=sa.text(WAITED),
        postgresql_where=sa.text(WAITED),
    )


def downgrade() -> None:
    op.drop_index("ix_departures_answer_wait", table_name="departures")
    with op.batch_alter_table("departures") as batch:
        batch.drop_column("answer_wait_seconds")

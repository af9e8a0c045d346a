"""Departures keep when their invitation went out and whether consent stands.

Copies, for counting at scale (insights' funnel), of what the outbox and the
consent ledger say; written from now on in the transactions that change them.

Revision ID: e5f7a9b1c3d4
Revises: d4e6f8a0b2c3
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "e5f7a9b1c3d4"
down_revision = "d4e6f8a0b2c3"
branch_labels = None
depends_on = None

departures = sa.table(
    "departures",
    sa.column("id", sa.Integer),
    sa.column("invitation_sent_at", survey.db.UTCDateTime(timezone=True)),
    sa.column("consent_granted", sa.Boolean),
)
outbox_messages = sa.table(
    "outbox_messages",
    sa.column("departure_id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("sent_at", survey.db.UTCDateTime(timezone=True)),
)
consent_events = sa.table(
    "consent_events",
    sa.column("id", sa.Integer),
    sa.column("departure_id", sa.Integer),
    sa.column("action", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.add_column(
            sa.Column(
                "invitation_sent_at",
                survey.db.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch.add_column(
            sa.Column(
                "consent_granted",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    first_sent = (
        sa.select(sa.func.min(outbox_messages.c.sent_at))
        .where(
            outbox_messages.c.departure_id == departures.c.id,
            outbox_messages.c.kind == "invitation",
            outbox_messages.c.sent_at.is_not(None),
        )
        .scalar_subquery()
    )
    op.execute(departures.update().values(invitation_sent_at=first_sent))
    latest = (
        sa.select(consent_events.c.action)
        .where(consent_events.c.departure_id == departures.c.id)
        .order_by(consent_events.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    op.execute(
        departures.update().where(latest == "granted").values(consent_granted=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.drop_column("consent_granted")
        batch.drop_column("invitation_sent_at")

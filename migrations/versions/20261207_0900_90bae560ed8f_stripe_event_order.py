"""Stripe events: keep each one's subscription, ``created`` time and action.

An event's JSON goes once it is handled; these columns stay, so an event
that comes late (Stripe retries for days) is set against the handled ones
Stripe made after it. Events still pending get theirs from their JSON;
handled ones have none left to read, and keep None.

Revision ID: 90bae560ed8f
Revises: a4c6e8f0b2d4
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "90bae560ed8f"
down_revision = "a4c6e8f0b2d4"
branch_labels = None
depends_on = None

Timestamp = survey.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("created", Timestamp, nullable=True))
        batch.add_column(sa.Column("action", sa.String(10), nullable=True))
        batch.create_index("ix_stripe_events_subscription_id", ["subscription_id"])
    _fill_pending()


def _fill_pending() -> None:
    """Read the subscription and time of the events that still hold their JSON."""
    connection = op.get_bind()
    events = sa.table(
        "stripe_events",
        sa.column("id", sa.String),
        sa.column("subscription_id", sa.String),
        sa.column("created", Timestamp),
    )
    rows = connection.execute(
        sa.text("SELECT id, payload FROM stripe_events WHERE payload IS NOT NULL")
    ).all()
    for event_id, payload in rows:
        try:
            event = json.loads(payload)
            found = event["data"]["object"].get("id")
            stamp = event.get("created")
            created = (
                datetime.fromtimestamp(stamp, UTC)
                if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp > 0
                else None
            )
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            OverflowError,
            OSError,
        ):
            continue  # unreadable: its own attempts report it
        subscription_id = (
            found if isinstance(found, str) and found and len(found) <= 255 else None
        )
        connection.execute(
            events.update()
            .where(events.c.id == event_id)
            .values(subscription_id=subscription_id, created=created)
        )


def downgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_index("ix_stripe_events_subscription_id")
        batch.drop_column("action")
        batch.drop_column("created")
        batch.drop_column("subscription_id")

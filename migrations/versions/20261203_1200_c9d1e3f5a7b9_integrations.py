"""Integrations: Stripe events, reminders, reactivation, outgoing webhooks.

Departures may have no contact (a Stripe customer without an address), count
their reminders, and note a reactivation. Stripe events are kept once per
id. Webhook endpoints get their deliveries through the outbox.

Revision ID: c9d1e3f5a7b9
Revises: b8c0d2e4f6a7
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "c9d1e3f5a7b9"
down_revision = "b8c0d2e4f6a7"
branch_labels = None
depends_on = None

Timestamp = survey.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.alter_column("contact_email", existing_type=sa.String(320), nullable=True)
        batch.add_column(sa.Column("reactivated_at", Timestamp, nullable=True))
        batch.add_column(
            sa.Column(
                "reminders_sent", sa.Integer(), nullable=False, server_default="0"
            )
        )
        batch.add_column(sa.Column("last_reminded_at", Timestamp, nullable=True))
    # The API's list of answers "changed since".
    op.create_index("ix_responses_updated_at", "responses", ["updated_at"])
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("handled_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(
        "ix_stripe_events_due", "stripe_events", ["status", "next_attempt_at"]
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("slack", sa.Boolean(), nullable=False),
        sa.Column("include_personal", sa.Boolean(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("endpoint_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_outbox_messages_endpoint_id"), ["endpoint_id"])
        batch.create_foreign_key(
            batch.f("fk_outbox_messages_endpoint_id_webhook_endpoints"),
            "webhook_endpoints",
            ["endpoint_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    op.execute("DELETE FROM outbox_messages WHERE endpoint_id IS NOT NULL")
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_constraint(
            batch.f("fk_outbox_messages_endpoint_id_webhook_endpoints"),
            type_="foreignkey",
        )
        batch.drop_index(batch.f("ix_outbox_messages_endpoint_id"))
        batch.drop_column("status_code")
        batch.drop_column("endpoint_id")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_stripe_events_due", table_name="stripe_events")
    op.drop_table("stripe_events")
    op.drop_index("ix_responses_updated_at", table_name="responses")
    # Departures recorded without a contact cannot be kept without one.
    op.execute("DELETE FROM departures WHERE contact_email IS NULL")
    with op.batch_alter_table("departures") as batch:
        batch.drop_column("last_reminded_at")
        batch.drop_column("reminders_sent")
        batch.drop_column("reactivated_at")
        batch.alter_column(
            "contact_email", existing_type=sa.String(320), nullable=False
        )

"""Initial schema: departures, responses, consent ledger, outbox, API tokens.

Revision ID: c386b4fcc07d
Revises: (none)
Create Date: 2026-11-23 19:26:11.868577
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "c386b4fcc07d"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("display_prefix", sa.String(length=12), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "departures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=24), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("contact_name", sa.String(length=200), nullable=True),
        sa.Column("contact_email", sa.String(length=320), nullable=False),
        sa.Column("plan", sa.String(length=80), nullable=True),
        sa.Column("mrr_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("segment", sa.String(length=80), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("csm_email", sa.String(length=320), nullable=True),
        sa.Column("cancelled_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("billing_reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=80), nullable=False),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("invited_at", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "first_opened_at", survey.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "fresh_link_sent_at", survey.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.CheckConstraint(
            "source IN ('api', 'stripe', 'csv', 'staff')",
            name=op.f("ck_departures_source_known"),
        ),
        sa.CheckConstraint(
            "mrr_cents >= 0", name=op.f("ck_departures_mrr_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_departures")),
        sa.UniqueConstraint("external_id", name=op.f("uq_departures_external_id")),
        sa.UniqueConstraint("public_id", name=op.f("uq_departures_public_id")),
    )
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("wording", sa.Text(), nullable=False),
        sa.Column("wording_version", sa.String(length=40), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('granted', 'withdrawn')",
            name=op.f("ck_consent_events_action_known"),
        ),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_consent_events_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_events_departure_id"), ["departure_id"], unique=False
        )

    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", survey.db.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("locked_until", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_outbox_messages_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_messages")),
    )
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_messages_departure_id"),
            ["departure_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_outbox_messages_due", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("reason_other", sa.Text(), nullable=True),
        sa.Column("factors", sa.JSON(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("destination", sa.String(length=20), nullable=True),
        sa.Column("destination_name", sa.String(length=200), nullable=True),
        sa.Column("follow_up_reason", sa.String(length=40), nullable=True),
        sa.Column("follow_up_answer", sa.Text(), nullable=True),
        sa.Column("answered_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "details_saved_at", survey.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_responses_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
        sa.UniqueConstraint("departure_id", name=op.f("uq_responses_departure_id")),
    )


def downgrade() -> None:
    op.drop_table("responses")
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_messages_due")
        batch_op.drop_index(batch_op.f("ix_outbox_messages_departure_id"))

    op.drop_table("outbox_messages")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_events_departure_id"))

    op.drop_table("consent_events")
    op.drop_table("departures")
    op.drop_table("api_tokens")

"""The review queue, staff notes, postmortems with root causes and action items.

Revision ID: 0cdc0a12c8de
Revises: 83428943f1da
Create Date: 2026-11-27 21:08:28.223961
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "0cdc0a12c8de"
down_revision = "83428943f1da"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "postmortems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=False),
        sa.Column("what_happened", sa.Text(), nullable=True),
        sa.Column("who_was_involved", sa.Text(), nullable=True),
        sa.Column("followed_process", sa.String(length=10), nullable=True),
        sa.Column("process_deviation", sa.Text(), nullable=True),
        sa.Column("immediate_steps", sa.Text(), nullable=True),
        sa.Column("communication", sa.Text(), nullable=True),
        sa.Column("sale_sticking_points", sa.Text(), nullable=True),
        sa.Column("conflict_cycle", sa.Text(), nullable=True),
        sa.Column("outside_factors", sa.Text(), nullable=True),
        sa.Column("customer_said", sa.Text(), nullable=True),
        sa.Column("preventable", sa.String(length=10), nullable=True),
        sa.Column("lessons", sa.Text(), nullable=True),
        sa.Column("winback_recommendation", sa.String(length=20), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.Column("done_at", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "followed_process IN ('yes', 'partly', 'no')",
            name=op.f("ck_postmortems_followed_process_known"),
        ),
        sa.CheckConstraint(
            "preventable IN ('yes', 'partly', 'no')",
            name=op.f("ck_postmortems_preventable_known"),
        ),
        sa.CheckConstraint(
            "winback_recommendation IN ('do_not_contact', 'nurture', 'offer')",
            name=op.f("ck_postmortems_recommendation_known"),
        ),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_postmortems_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_users.id"],
            name=op.f("fk_postmortems_updated_by_id_staff_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postmortems")),
        sa.UniqueConstraint("departure_id", name=op.f("uq_postmortems_departure_id")),
    )
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("queued_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("mrr_cents", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "status IN ('new', 'in_review', 'postmortem_done', 'closed')",
            name=op.f("ck_review_items_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["staff_users.id"],
            name=op.f("fk_review_items_assignee_id_staff_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_review_items_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("departure_id", name=op.f("uq_review_items_departure_id")),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_review_items_assignee_mrr",
            ["assignee_id", "mrr_cents", "id"],
            unique=False,
        )
        batch_op.create_index("ix_review_items_mrr", ["mrr_cents", "id"], unique=False)
        batch_op.create_index(
            "ix_review_items_queued", ["queued_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_review_items_reason_mrr", ["reason", "mrr_cents", "id"], unique=False
        )
        batch_op.create_index(
            "ix_review_items_status_mrr", ["status", "mrr_cents", "id"], unique=False
        )
        batch_op.create_index(
            "ix_review_items_status_queued", ["status", "queued_at", "id"], unique=False
        )

    op.create_table(
        "review_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("departure_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", survey.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["staff_users.id"],
            name=op.f("fk_review_notes_author_id_staff_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["departure_id"],
            ["departures.id"],
            name=op.f("fk_review_notes_departure_id_departures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_notes")),
    )
    with op.batch_alter_table("review_notes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_review_notes_departure_id"), ["departure_id"], unique=False
        )

    op.create_table(
        "action_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("postmortem_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("team", sa.String(length=30), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("done_at", survey.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "team IN ('sales', 'onboarding', 'product', 'support', "
            "'customer_success', 'marketing', 'other')",
            name=op.f("ck_action_items_team_known"),
        ),
        sa.ForeignKeyConstraint(
            ["postmortem_id"],
            ["postmortems.id"],
            name=op.f("fk_action_items_postmortem_id_postmortems"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_items")),
    )
    with op.batch_alter_table("action_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_action_items_open", ["done", "due_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_action_items_postmortem_id"), ["postmortem_id"], unique=False
        )

    op.create_table(
        "root_causes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("postmortem_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "code IN ('poor_fit', 'oversold', 'failed_adoption', 'product_issues', "
            "'poor_service', 'goals_not_met', 'customer_business_failure', "
            "'competitor', 'other')",
            name=op.f("ck_root_causes_code_known"),
        ),
        sa.ForeignKeyConstraint(
            ["postmortem_id"],
            ["postmortems.id"],
            name=op.f("fk_root_causes_postmortem_id_postmortems"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_root_causes")),
        sa.UniqueConstraint(
            "postmortem_id", "code", name=op.f("uq_root_causes_postmortem_id_code")
        ),
    )


def downgrade() -> None:
    op.drop_table("root_causes")
    with op.batch_alter_table("action_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_items_postmortem_id"))
        batch_op.drop_index("ix_action_items_open")

    op.drop_table("action_items")
    with op.batch_alter_table("review_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_notes_departure_id"))

    op.drop_table("review_notes")
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_items_status_queued")
        batch_op.drop_index("ix_review_items_status_mrr")
        batch_op.drop_index("ix_review_items_reason_mrr")
        batch_op.drop_index("ix_review_items_queued")
        batch_op.drop_index("ix_review_items_mrr")
        batch_op.drop_index("ix_review_items_assignee_mrr")

    op.drop_table("review_items")
    op.drop_table("postmortems")

"""Running counts of departures per day, for insights at scale.

Created and filled here from the departures and answers; kept up to date
from now on in the transactions that change them (survey.departures.tallies).

Revision ID: f6a8b0c2d4e5
Revises: e5f7a9b1c3d4
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f6a8b0c2d4e5"
down_revision = "e5f7a9b1c3d4"
branch_labels = None
depends_on = None

KEYS = ("day", "currency", "segment", "plan")


def _key_columns() -> list[sa.Column]:
    return [
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("segment", sa.String(length=80), nullable=False),
        sa.Column("plan", sa.String(length=80), nullable=False),
    ]


def _counts(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "departure_tallies",
        *_key_columns(),
        *_counts(
            "departures", "lost_mrr_cents", "invited", "opened", "answered", "consented"
        ),
        sa.PrimaryKeyConstraint(*KEYS, name=op.f("pk_departure_tallies")),
    )
    op.create_table(
        "reason_tallies",
        *_key_columns(),
        sa.Column("reason", sa.String(length=40), nullable=False),
        *_counts("answers", "lost_mrr_cents"),
        sa.PrimaryKeyConstraint(*KEYS, "reason", name=op.f("pk_reason_tallies")),
    )
    day = (
        "date(timezone('UTC', d.cancelled_at))"
        if op.get_bind().dialect.name == "postgresql"
        else "date(d.cancelled_at)"
    )
    group = f"{day}, d.currency, coalesce(d.segment, ''), coalesce(d.plan, '')"
    # Built from the constants above only: nothing from outside goes in.
    op.execute(
        f"""
        INSERT INTO departure_tallies (day, currency, segment, plan, departures,
            lost_mrr_cents, invited, opened, answered, consented)
        SELECT {group}, count(d.id), coalesce(sum(d.mrr_cents), 0),
            count(d.invitation_sent_at), count(d.first_opened_at), count(r.id),
            sum(CASE WHEN d.consent_granted THEN 1 ELSE 0 END)
        FROM departures d LEFT JOIN responses r ON r.departure_id = d.id
        WHERE d.erased_at IS NULL
        GROUP BY {group}
        """  # noqa: S608
    )
    op.execute(
        f"""
        INSERT INTO reason_tallies (day, currency, segment, plan, reason, answers,
            lost_mrr_cents)
        SELECT {group}, r.reason, count(r.id), coalesce(sum(d.mrr_cents), 0)
        FROM departures d JOIN responses r ON r.departure_id = d.id
        WHERE d.erased_at IS NULL
        GROUP BY {group}, r.reason
        """  # noqa: S608
    )


def downgrade() -> None:
    op.drop_table("reason_tallies")
    op.drop_table("departure_tallies")

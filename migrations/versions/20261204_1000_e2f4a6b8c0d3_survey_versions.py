"""The survey's wording in versions; each response keeps the version it was
answered with (none: the built-in wording).

Revision ID: e2f4a6b8c0d3
Revises: d1e3f5a7b9c2
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import survey.db

revision = "e2f4a6b8c0d3"
down_revision = "d1e3f5a7b9c2"
branch_labels = None
depends_on = None

Timestamp = survey.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "survey_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("based_on", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_users.id"],
            name=op.f("fk_survey_versions_created_by_id_staff_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_versions")),
        sa.UniqueConstraint("based_on", name=op.f("uq_survey_versions_based_on")),
    )
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("survey_version_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_responses_survey_version_id_survey_versions"),
            "survey_versions",
            ["survey_version_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_constraint(
            op.f("fk_responses_survey_version_id_survey_versions"), type_="foreignkey"
        )
        batch.drop_column("survey_version_id")
    op.drop_table("survey_versions")

"""Responses: the language the customer answered in.

``responses.locale`` is the language the survey page was drawn in when the
answer was recorded (chosen on the page, the departure's, or the browser's),
so staff read each answer in the words the customer saw. Answers recorded
before this revision keep None: staff pages fall back to the departure's
locale, as they did.

Revision ID: b5d7f9a1c3e6
Revises: 90bae560ed8f
Create Date: 2026-12-08 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b5d7f9a1c3e6"
down_revision = "90bae560ed8f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("locale", sa.String(35), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("locale")

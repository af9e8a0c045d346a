"""Store contact addresses in lower case, so a person is one address.

Revision ID: b2d4c6e8f0a1
Revises: 06763a3a950c
Create Date: 2026-11-27 22:20:00
"""

from __future__ import annotations

from alembic import op

revision = "b2d4c6e8f0a1"
down_revision = "06763a3a950c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE departures SET contact_email = lower(contact_email)")


def downgrade() -> None:
    pass  # the original case is not kept; lower case stays valid

"""Win-back list: each departure says whether it is listed, and with which link.

``departures.winback_grant_id`` is the grant that lists the contact (None:
not listed), as the list's query used to work it out from the whole consent
ledger for every row; ``departures.withdraw_token`` the signed withdrawal
link the list hands out for it.

Revision ID: a4c6e8f0b2d4
Revises: f3a5b7c9d1e2
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from flask import current_app, has_app_context
from itsdangerous import URLSafeTimedSerializer

revision = "a4c6e8f0b2d4"
down_revision = "f3a5b7c9d1e2"
branch_labels = None
depends_on = None

#: The withdrawal links' salt (``survey.tokens``), as of this revision.
WITHDRAW_SALT = "exit-survey.withdraw"

#: Each departure's latest event, when it is a grant no withdrawal of the
#: person (through any of their departures) has followed.
LISTING = """
UPDATE departures SET winback_grant_id = (
SELECT grant_event.id FROM consent_events AS grant_event
WHERE grant_event.departure_id = departures.id
  AND grant_event.action = 'granted'
  AND NOT EXISTS (
    SELECT 1 FROM consent_events AS later
    WHERE later.departure_id = grant_event.departure_id
      AND later.id > grant_event.id)
  AND NOT EXISTS (
    SELECT 1 FROM consent_events AS withdrawal
    JOIN departures AS same_person ON same_person.id = withdrawal.departure_id
    WHERE same_person.contact_email = departures.contact_email
      AND withdrawal.action = 'withdrawn'
      AND withdrawal.id > grant_event.id))
WHERE erased_at IS NULL
"""


def upgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.add_column(sa.Column("winback_grant_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("withdraw_token", sa.String(120), nullable=True))
        batch.create_index("ix_departures_winback_grant_id", ["winback_grant_id"])
    op.execute(LISTING)
    _sign_withdrawal_links()


def _sign_withdrawal_links() -> None:
    """Give each listed departure its withdrawal link, signed with the app's
    key (the migration runs in the app: see ``migrations/env.py``)."""
    if not has_app_context():
        raise RuntimeError("this migration signs links: run it with the app's keys")
    config = current_app.config
    serializer = URLSafeTimedSerializer(
        [*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"]], salt=WITHDRAW_SALT
    )
    connection = op.get_bind()
    departures = sa.table(
        "departures",
        sa.column("id", sa.Integer),
        sa.column("public_id", sa.String),
        sa.column("withdraw_token", sa.String),
    )
    listed = connection.execute(
        sa.text(
            "SELECT id, public_id FROM departures "
            "WHERE winback_grant_id IS NOT NULL ORDER BY id"
        )
    )
    while rows := listed.fetchmany(5_000):
        connection.execute(
            departures.update()
            .where(departures.c.id == sa.bindparam("row_id"))
            .values(withdraw_token=sa.bindparam("token")),
            [
                {"row_id": row_id, "token": serializer.dumps(public_id)}
                for row_id, public_id in rows
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("departures") as batch:
        batch.drop_index("ix_departures_winback_grant_id")
        batch.drop_column("withdraw_token")
        batch.drop_column("winback_grant_id")

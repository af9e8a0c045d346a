"""Outbox: each message keeps one Message-ID, so a copy sent again is recognisable.

Revision ID: c3211bc1728e
Revises: c3e5f7a9b1d2
Create Date: 2026-12-03 01:00:00
"""

from __future__ import annotations

import secrets
import socket

import sqlalchemy as sa
from alembic import op
from flask import current_app, has_app_context

revision = "c3211bc1728e"
down_revision = "c3e5f7a9b1d2"
branch_labels = None
depends_on = None

outbox_messages = sa.table(
    "outbox_messages", sa.column("id", sa.Integer), sa.column("msgid", sa.String)
)


def _domain() -> str:
    """Return the sender's domain, as the worker names its messages with."""
    sender = current_app.config["MAIL_DEFAULT_SENDER"] if has_app_context() else ""
    return str(sender).rpartition("@")[2].strip("> ") or socket.getfqdn()


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.add_column(sa.Column("msgid", sa.String(length=320), nullable=True))
    # Unique: the row's id, and a random part that tells this database's
    # messages from any other's.
    prefix = f"<outbox.{secrets.token_hex(8)}."
    op.execute(
        outbox_messages.update().values(
            msgid=sa.literal(prefix)
            + sa.cast(outbox_messages.c.id, sa.String)
            + sa.literal(f"@{_domain()}>")
        )
    )
    with op.batch_alter_table("outbox_messages") as batch:
        batch.alter_column("msgid", existing_type=sa.String(length=320), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch:
        batch.drop_column("msgid")

"""Staff users, their login sessions and failed login attempts."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

from survey.db import Base, Str320

ADMIN, CSM, MARKETING = "admin", "csm", "marketing"
ROLES = (ADMIN, CSM, MARKETING)


#: The longest staff name the database keeps.
NAME_MAX_LENGTH = 200


class StaffUser(Base):
    """Someone on our side: an admin, a customer-success manager, marketing."""

    __tablename__ = "staff_users"
    __table_args__ = (
        CheckConstraint(
            "role IN ({})".format(", ".join(f"'{r}'" for r in ROLES)),
            name="role_known",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Normalized and lower-cased: the login name, where case does not matter.
    email: Mapped[Str320] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    role: Mapped[str] = mapped_column(String(20))
    #: argon2id, in the PHC string format (parameters included).
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    #: Asked for the weekly insights digest by email.
    weekly_digest: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]

    #: Set when loaded for a login session (Flask-Login's user id); not a column
    #: (an unannotated attribute, which declarative mapping leaves alone).
    session_token = cast("str | None", None)

    # Flask-Login's user protocol.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str | None:
        """Return the login session's token: one user may have several sessions."""
        return self.session_token


class StaffSession(Base):
    """One signed-in browser. Deleting the row signs that browser out."""

    __tablename__ = "staff_sessions"

    #: SHA-256 of the token kept in the (signed) session cookie.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("staff_users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]


class LoginFailure(Base):
    """A failed sign-in, counted per address and per client address."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_email_at", "email", "at"),
        Index("ix_login_failures_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: As typed (normalized when it is a valid address); may be no user's.
    email: Mapped[Str320]
    ip: Mapped[str] = mapped_column(String(45))
    at: Mapped[datetime]

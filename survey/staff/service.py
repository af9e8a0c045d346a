"""Staff accounts: create, find, deactivate; sign in with throttling; sessions.

Verb functions: they take a session, flush, and leave the commit to the caller.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from survey import audit, clock
from survey.departures.schemas import normalize_email
from survey.errors import InvalidInput, NotFound, SurveyError, TooManyRequests
from survey.staff import passwords
from survey.staff.models import (
    ADMIN,
    NAME_MAX_LENGTH,
    ROLES,
    LoginFailure,
    StaffSession,
    StaffUser,
)

log = logging.getLogger(__name__)


class LoginRefused(Exception):
    """Wrong address or password, or a locked account; ``message`` says which.

    The same message for an unknown address and a wrong password.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


WRONG_CREDENTIALS = "Wrong email address or password."


class LastAdmin(SurveyError):
    """The change would leave no active admin to manage users."""

    status = 409
    code = "last_admin"

    def __init__(self) -> None:
        super().__init__("The last active admin cannot be deactivated or demoted.")


def is_last_admin(session: Session, user: StaffUser) -> bool:
    """Return whether ``user`` is the only active admin (read, not locked)."""
    if user.role != ADMIN or not user.active:
        return False
    others = select(StaffUser.id).where(
        StaffUser.role == ADMIN, StaffUser.active.is_(True), StaffUser.id != user.id
    )
    return session.scalar(others.limit(1)) is None


def _keep_an_admin(session: Session, user: StaffUser, *, stays_admin: bool) -> None:
    """Raise LastAdmin if ``user`` is the last active admin and would stop being one.

    The active admins' rows are locked while they are counted (PostgreSQL):
    two admins demoting each other at once cannot both pass.
    """
    if stays_admin or user.role != ADMIN or not user.active:
        return
    admins = session.scalars(
        select(StaffUser.id)
        .where(StaffUser.role == ADMIN, StaffUser.active.is_(True))
        .order_by(StaffUser.id)
        .with_for_update()
    ).all()
    session.refresh(user)  # as it stands once the others' changes are in
    if user.role == ADMIN and user.active and len(admins) <= 1:
        raise LastAdmin


def _normalized(email: str) -> str:
    try:
        return normalize_email(email)
    except ValueError:
        raise InvalidInput(
            "Not a valid email address.", {"email": ["Not a valid email address."]}
        ) from None


def _check_password(password: str) -> None:
    if len(password) < passwords.MIN_LENGTH:
        message = f"Use at least {passwords.MIN_LENGTH} characters."
        raise InvalidInput(message, {"password": [message]})


def find_user(session: Session, email: str) -> StaffUser | None:
    """Return the user with this address, if any (active or not)."""
    try:
        normalized = normalize_email(email)
    except ValueError:
        return None
    return session.scalar(select(StaffUser).where(StaffUser.email == normalized))


def get_user(session: Session, user_id: int) -> StaffUser:
    """Return a user by id; raise NotFound."""
    user = session.get(StaffUser, user_id)
    if user is None:
        raise NotFound("No such staff user.")
    return user


def list_users(session: Session) -> list[StaffUser]:
    """Return every staff user, active first, by name."""
    return list(
        session.scalars(
            select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.name)
        )
    )


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    role: str,
    password: str,
    actor_id: int | None = None,
) -> StaffUser:
    """Create a staff user; raise InvalidInput (per field) when something is off."""
    normalized = _normalized(email)
    if not name.strip():
        raise InvalidInput("Give a name.", {"name": ["Give a name."]})
    if len(name.strip()) > NAME_MAX_LENGTH:
        message = f"The name must be at most {NAME_MAX_LENGTH} characters."
        raise InvalidInput(message, {"name": [message]})
    if role not in ROLES:
        message = f"Choose a role: {', '.join(ROLES)}."
        raise InvalidInput(message, {"role": [message]})
    _check_password(password)
    if find_user(session, normalized) is not None:
        message = "A staff user with this address exists already."
        raise InvalidInput(message, {"email": [message]})
    user = StaffUser(
        email=normalized,
        name=name.strip(),
        role=role,
        password_hash=passwords.hash_password(password),
        active=True,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    audit.record(session, "user.created", actor_id=actor_id, user_id=user.id, role=role)
    log.info("staff user %s created with role %s", user.id, role)
    return user


def set_active(
    session: Session, user: StaffUser, active: bool, *, actor_id: int | None
) -> None:
    """Activate or deactivate a user; deactivating signs them out everywhere.

    Raise LastAdmin rather than deactivate the last active admin.
    """
    _keep_an_admin(session, user, stays_admin=active)
    user.active = active
    if not active:
        end_all_sessions(session, user)
    audit.record(
        session,
        "user.activated" if active else "user.deactivated",
        actor_id=actor_id,
        user_id=user.id,
    )


def set_role(session: Session, user: StaffUser, role: str, *, actor_id: int) -> None:
    """Give a user another role; raise LastAdmin rather than demote the last admin."""
    if role not in ROLES:
        raise InvalidInput(f"Choose a role: {', '.join(ROLES)}.")
    _keep_an_admin(session, user, stays_admin=role == ADMIN)
    if role != user.role:
        audit.record(
            session,
            "user.role",
            actor_id=actor_id,
            user_id=user.id,
            old=user.role,
            new=role,
        )
        user.role = role


def change_password(session: Session, user: StaffUser, current: str, new: str) -> None:
    """Change one's own password (the current one is asked again)."""
    if not passwords.verify_password(user.password_hash, current):
        message = "That is not your current password."
        raise InvalidInput(message, {"current_password": [message]})
    _check_password(new)
    user.password_hash = passwords.hash_password(new)
    # Whoever else is signed in as this user (a stolen session?) is signed out.
    end_all_sessions(session, user)
    audit.record(session, "user.password", actor_id=user.id, user_id=user.id)


def set_weekly_digest(session: Session, user: StaffUser, wanted: bool) -> None:
    """Start or stop ``user``'s weekly digest email."""
    user.weekly_digest = wanted
    audit.record(
        session,
        "user.digest",
        actor_id=user.id,
        user_id=user.id,
        new=str(wanted).lower(),
    )


def reset_password(session: Session, user: StaffUser, *, actor_id: int) -> str:
    """Give a user a new generated password (shown once); end their sessions."""
    password = passwords.generate_password()
    user.password_hash = passwords.hash_password(password)
    end_all_sessions(session, user)
    audit.record(session, "user.password_reset", actor_id=actor_id, user_id=user.id)
    return password


# --- signing in --------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    since: datetime
    limit: int


def _window(limit_key: str) -> _Window:
    minutes = current_app.config["LOGIN_WINDOW_MINUTES"]
    return _Window(
        since=clock.now() - timedelta(minutes=minutes),
        limit=current_app.config[limit_key],
    )


def _failures(
    session: Session, column: InstrumentedAttribute[str], value: str, since: datetime
) -> list[datetime]:
    return list(
        session.scalars(
            select(LoginFailure.at)
            .where(column == value, LoginFailure.at >= since)
            .order_by(LoginFailure.at.desc())
        )
    )


def _seconds_until_free(failures: list[datetime], limit: int) -> int:
    """Seconds until fewer than ``limit`` of ``failures`` remain in the window."""
    minutes = current_app.config["LOGIN_WINDOW_MINUTES"]
    oldest_that_counts = failures[limit - 1]
    free_at = oldest_that_counts + timedelta(minutes=minutes)
    return max(1, math.ceil((free_at - clock.now()).total_seconds()))


@dataclass(frozen=True)
class LoginAttempt:
    """A sign-in under way: counted as a failure until it succeeds."""

    #: The address the failures are counted under (the user's, or as typed).
    key: str
    ip: str
    user_id: int | None
    password_hash: str | None
    active: bool


def begin_attempt(session: Session, email: str, ip: str) -> LoginAttempt:
    """Count a sign-in before checking it; raise LoginRefused (locked) or 429.

    The attempt is recorded as a failure right away, in the caller's writing
    transaction, so parallel guesses cannot all slip under the limit while
    their slow hash checks run; ``finish_attempt`` clears it on success.
    Throttled twice: an address with ``LOGIN_MAX_FAILURES`` failures in the
    window refuses even the right password until the window passes (for any
    address typed, so a lock-out says nothing about who has an account); a
    client address with ``LOGIN_IP_MAX_FAILURES`` failures gets 429.
    """
    ip = ip[:45]
    ip_window = _window("LOGIN_IP_MAX_FAILURES")
    ip_failures = _failures(session, LoginFailure.ip, ip, ip_window.since)
    if len(ip_failures) >= ip_window.limit:
        retry = _seconds_until_free(ip_failures, ip_window.limit)
        raise TooManyRequests(
            "Too many failed sign-ins from your network. Try again later.", retry
        )
    user = find_user(session, email)
    if user is not None:  # one attempt at a time per account (PostgreSQL)
        session.refresh(user, with_for_update=True)
    key = user.email if user is not None else email.strip().lower()[:320]
    account_window = _window("LOGIN_MAX_FAILURES")
    account_failures = _failures(session, LoginFailure.email, key, account_window.since)
    if len(account_failures) >= account_window.limit:
        minutes = math.ceil(
            _seconds_until_free(account_failures, account_window.limit) / 60
        )
        raise LoginRefused(
            "Too many failed sign-ins for this address. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
    session.add(LoginFailure(email=key, ip=ip, at=clock.now()))
    session.flush()
    return LoginAttempt(
        key=key,
        ip=ip,
        user_id=user.id if user else None,
        password_hash=user.password_hash if user else None,
        active=bool(user and user.active),
    )


def verify_attempt(attempt: LoginAttempt, password: str) -> tuple[bool, str | None]:
    """Check the password (slow: run it outside any transaction).

    Return whether it is right, and a new hash when the stored one is outdated.
    An unknown address costs the same time as a known one.
    """
    if attempt.password_hash is None:
        passwords.spend_verification_time(password)
        return False, None
    ok = passwords.verify_password(attempt.password_hash, password) and attempt.active
    if ok and passwords.needs_rehash(attempt.password_hash):
        return True, passwords.hash_password(password)
    return ok, None


def finish_attempt(
    session: Session, attempt: LoginAttempt, ok: bool, new_hash: str | None
) -> StaffUser:
    """Settle an attempt: return the user, or raise LoginRefused (it stays counted)."""
    if not ok or attempt.user_id is None:
        log.info("failed sign-in from %s", attempt.ip)
        raise LoginRefused(WRONG_CREDENTIALS)
    user = get_user(session, attempt.user_id)
    if user.password_hash != attempt.password_hash or not user.active:
        # Reset or deactivated while the password was being checked.
        raise LoginRefused(WRONG_CREDENTIALS)
    if new_hash is not None:
        user.password_hash = new_hash
        log.info("password of staff user %s rehashed with today's parameters", user.id)
    user.last_login_at = clock.now()
    session.execute(delete(LoginFailure).where(LoginFailure.email == attempt.key))
    audit.record(session, "user.signed_in", actor_id=user.id, user_id=user.id)
    return user


# --- sessions ----------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: StaffUser) -> str:
    """Open a login session for ``user``; return its token (for the cookie)."""
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=_token_hash(token), user_id=user.id, created_at=clock.now()
        )
    )
    session.flush()
    user.session_token = token
    return token


def end_session(session: Session, token: str) -> None:
    """Close one login session (sign out)."""
    session.execute(
        delete(StaffSession).where(StaffSession.token_hash == _token_hash(token))
    )


def end_all_sessions(session: Session, user: StaffUser) -> None:
    """Close every login session of ``user``."""
    session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))


def user_for_session(session: Session, token: str) -> StaffUser | None:
    """Return the active user of a live login session, or None."""
    hours = current_app.config["STAFF_SESSION_HOURS"]
    user = session.scalar(
        select(StaffUser)
        .join(StaffSession, StaffSession.user_id == StaffUser.id)
        .where(
            StaffSession.token_hash == _token_hash(token),
            StaffSession.created_at >= clock.now() - timedelta(hours=hours),
            StaffUser.active.is_(True),
        )
    )
    if user is not None:
        user.session_token = token
    return user

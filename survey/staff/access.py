"""Who may do what: the one place that decides access to staff pages.

Every staff view names the permission it needs with ``@requires``; the roles'
permissions are listed here and nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, url_for
from flask_login import current_user

from survey.staff.models import ADMIN, CSM, MARKETING

F = TypeVar("F", bound=Callable[..., Any])

#: The review queue, postmortems, action items.
REVIEW = "review"
#: Trends and aggregates.
INSIGHTS = "insights"
#: The win-back list and its export.
WINBACK = "winback"
#: Staff users and API tokens.
ADMINISTER = "administer"
#: One's own account (password).
ACCOUNT = "account"

PERMISSIONS: dict[str, frozenset[str]] = {
    ADMIN: frozenset({REVIEW, INSIGHTS, WINBACK, ADMINISTER, ACCOUNT}),
    CSM: frozenset({REVIEW, INSIGHTS, ACCOUNT}),
    MARKETING: frozenset({WINBACK, ACCOUNT}),
}

#: Where each role lands after signing in, in order of preference.
_HOMES = ((REVIEW, "review.queue"), (WINBACK, "winback.contacts"))


def roles_with(permission: str) -> frozenset[str]:
    """Return the roles that hold ``permission``."""
    return frozenset(role for role, held in PERMISSIONS.items() if permission in held)


def can(user: Any, permission: str) -> bool:
    """Return whether ``user`` (perhaps anonymous) holds ``permission``."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return permission in PERMISSIONS.get(user.role, frozenset())


def requires(permission: str) -> Callable[[F], F]:
    """Let the view run only for a signed-in user holding ``permission``.

    Anonymous visitors go to the sign-in page; others get 403.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                # Flask-Login's answer: the sign-in page, with next=.
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
            if not can(current_user, permission):
                abort(403)
            return view(*args, **kwargs)

        wrapper.required_permission = permission  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def home_for(user: Any) -> str:
    """Return the first page ``user`` may see: the queue, the win-back list..."""
    for permission, endpoint in _HOMES:
        if can(user, permission) and endpoint in current_app.view_functions:
            return url_for(endpoint)
    return url_for("staff.account")

"""The current time, injectable so tests never sleep."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from flask import current_app, has_app_context


def system_now() -> datetime:
    """Return the real current time in UTC."""
    return datetime.now(UTC)


def now() -> datetime:
    """Return the app's current time (``app.config["CLOCK"]``), timezone-aware UTC."""
    if has_app_context():
        clock: Callable[[], datetime] = current_app.config.get("CLOCK") or system_now
        return clock()
    return system_now()


def iso(value: datetime | None) -> str | None:
    """Return a UTC time as ISO 8601 ending in ``Z``; None stays None."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def as_json(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    """Return ``obj``'s attributes ``names`` as JSON-ready values (times as ``iso``)."""
    return {
        name: iso(value) if isinstance(value := getattr(obj, name), datetime) else value
        for name in names
    }

"""Where the shipped folders are: inside the installed package, or at the
repository's top (templates, static files, migrations)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).parent


def resource_dir(name: str) -> Path:
    """Return a shipped folder: inside the installed package, or the repo's top."""
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name

"""Compile the translation catalogs (.po) into the wheel as .mo files.

The catalogs are kept as text in the repository; a wheel carries them
compiled, so an installed service speaks every shipped language.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CATALOGS = Path("survey") / "translations"


class CompileCatalogs(BuildHookInterface):  # type: ignore[type-arg]
    """Write ``survey/translations/<locale>/LC_MESSAGES/messages.mo``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # the repository's own folder: `make` compiles them there
        compiled = Path(tempfile.mkdtemp(prefix="catalogs-"))
        for po in sorted((Path(self.root) / CATALOGS).glob("*/LC_MESSAGES/*.po")):
            with po.open("rb") as source:
                catalog = read_po(source)
            mo = compiled / po.relative_to(self.root).with_suffix(".mo")
            mo.parent.mkdir(parents=True, exist_ok=True)
            with mo.open("wb") as target:
                write_mo(target, catalog)
            build_data["force_include"][str(mo)] = str(mo.relative_to(compiled))

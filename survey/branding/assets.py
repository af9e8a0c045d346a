"""The brand's files, for every page of ours: the logo and the accent colour."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from flask import Response as HttpResponse

from survey.branding import service
from survey.errors import NotFound

#: The logo and colour, for every page of ours (the customer's above all).
assets = Blueprint("brand", __name__, url_prefix="/brand")

#: Served files change name when they change, so browsers keep them.
_FOREVER = "public, max-age=31536000, immutable"


@assets.app_context_processor
def _brand() -> dict[str, Any]:
    return {"brand": service.current()}


@assets.get("/<file>")
def logo(file: str) -> HttpResponse:
    """The logo, under a name that changes with it."""
    brand = service.current()
    if brand.logo is None or file != brand.logo_file:
        service.forget(current_app)  # perhaps just changed by another worker
        brand = service.current()
        if brand.logo is None or file != brand.logo_file:
            raise NotFound("No such logo.")
    response = HttpResponse(brand.logo.data, mimetype=brand.logo.content_type)
    response.headers["Cache-Control"] = _FOREVER
    # Opened on its own, an SVG is a document: it may draw, never run.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    return response


@assets.get("/accent-<string(length=6):colour>.css")
def accent(colour: str) -> HttpResponse:
    """The stylesheet giving the pages an accent colour."""
    try:
        stylesheet = service.accent_stylesheet(f"#{int(colour, 16):06x}")
    except ValueError:
        raise NotFound("No such colour.") from None
    response = HttpResponse(stylesheet, mimetype="text/css")
    response.headers["Cache-Control"] = _FOREVER
    return response

"""A logo upload, checked: a PNG, JPEG or SVG of sensible size, safe to serve.

A PNG or JPEG is opened by Pillow (its header alone, before any pixel is
decoded) and drawn anew at twice the size the pages show it: what is served
holds no metadata and nothing appended, and weighs a few kilobytes. An SVG is
parsed without DTDs or entities (defusedxml); anything that could run, load
or link (scripts, event attributes, foreign objects, outside references) is
refused with its name, and an editor's private metadata is dropped.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import defusedxml.ElementTree
from defusedxml import DefusedXmlException
from PIL import Image, UnidentifiedImageError

#: The largest file accepted, before it is drawn anew.
MAX_UPLOAD_BYTES = 1024 * 1024
#: A raster's largest side (pixels), checked before its pixels are decoded.
MAX_SIDE = 4000
#: Its smallest height: anything less is unreadable at the size shown.
MIN_HEIGHT = 24
#: The box the pages show the logo in (CSS pixels); stored at twice that.
SHOWN_HEIGHT = 40
SHOWN_MAX_WIDTH = 200
#: The most a stored logo may weigh: a customer's page stays light.
MAX_STORED_BYTES = 16 * 1024

SVG = "image/svg+xml"
PNG = "image/png"
JPEG = "image/jpeg"
#: Served types and the file extension of their URL.
EXTENSIONS = {SVG: "svg", PNG: "png", JPEG: "jpg"}


class LogoRefused(ValueError):
    """The file cannot be the logo; the message says why, for the admin."""


@dataclass(frozen=True)
class Logo:
    """A logo ready to serve: its bytes, type and size in pixels."""

    data: bytes
    content_type: str
    width: int
    height: int


def checked_logo(data: bytes) -> Logo:
    """Return the logo to serve for an uploaded file, or raise LogoRefused."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise LogoRefused(
            f"The file is larger than {MAX_UPLOAD_BYTES // 1024:,} KB; "
            "export a smaller one."
        )
    if not data:
        raise LogoRefused("The file is empty.")
    head = data[:512].lstrip()
    if head.startswith((b"<?xml", b"<svg", b"<!--")):
        logo = _checked_svg(data)
    else:
        logo = _redrawn_raster(data)
    if len(logo.data) > MAX_STORED_BYTES:
        raise LogoRefused(
            f"Even at the size shown the logo weighs more than "
            f"{MAX_STORED_BYTES // 1024} KB; use a simpler image or an SVG."
        )
    return logo


# --- PNG and JPEG -------------------------------------------------------------


def _redrawn_raster(data: bytes) -> Logo:
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise LogoRefused("The file is not a PNG, JPEG or SVG image.") from None
    if image.format not in ("PNG", "JPEG"):
        raise LogoRefused(
            f"The file is a {image.format} image; upload a PNG, JPEG or SVG."
        )
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise LogoRefused(
            f"The image is {width} by {height} pixels; at most {MAX_SIDE} on a side."
        )
    if height < MIN_HEIGHT:
        raise LogoRefused(
            f"The image is {height} pixels high; at least {MIN_HEIGHT} are needed "
            "to read it."
        )
    _check_ratio(width, height)
    try:
        image.load()
    except (OSError, Image.DecompressionBombError):
        raise LogoRefused("The image is damaged and cannot be read.") from None
    image.thumbnail((2 * SHOWN_MAX_WIDTH, 2 * SHOWN_HEIGHT), Image.Resampling.LANCZOS)
    if image.format == "JPEG" or image.mode == "CMYK":
        return _encoded(image.convert("RGB"), "JPEG", JPEG, quality=85)
    rgba = image.convert("RGBA")
    logo = _encoded(rgba, "PNG", PNG, optimize=True)
    if len(logo.data) > MAX_STORED_BYTES:  # a photo-like logo: 256 colours
        logo = _encoded(
            rgba.quantize(method=Image.Quantize.FASTOCTREE), "PNG", PNG, optimize=True
        )
    return logo


def _encoded(
    image: Image.Image, kind: str, content_type: str, **options: object
) -> Logo:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return Logo(out.getvalue(), content_type, image.width, image.height)


# --- SVG ---------------------------------------------------------------------

_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

#: The drawing elements a logo needs; any other SVG element is refused.
_DRAWING = frozenset(
    {
        "svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline",
        "polygon", "text", "tspan", "defs", "linearGradient", "radialGradient",
        "stop", "clipPath", "mask", "use", "symbol", "title", "desc", "style",
    }
)  # fmt: skip
#: SVG elements dropped with what they hold: data about the file, not drawing.
_DROPPED = frozenset({"metadata"})

#: url(...) pointing anywhere but into the file itself.
_OUTSIDE_URL = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.IGNORECASE)
_ACTIVE_TEXT = re.compile(r"javascript:|@import|expression\(", re.IGNORECASE)


def _local(name: str) -> tuple[str, str]:
    """Split an ElementTree name into (namespace, local name)."""
    if name.startswith("{"):
        namespace, _, local = name[1:].partition("}")
        return namespace, local
    return "", name


def _checked_svg(data: bytes) -> Logo:
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise LogoRefused(
            "The SVG declares a DTD or entities; export it without them."
        ) from None
    except ElementTree.ParseError:
        raise LogoRefused("The file is not a well-formed SVG image.") from None
    if root.tag != f"{{{_SVG_NS}}}svg":
        raise LogoRefused("The file is not an SVG image (no <svg> root element).")
    _clean(root)
    width, height = _svg_size(root)
    ElementTree.register_namespace("", _SVG_NS)
    ElementTree.register_namespace("xlink", _XLINK_NS)
    cleaned = ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)
    return Logo(cleaned, SVG, width, height)


def _clean(element: ElementTree.Element) -> None:
    """Refuse what could run or load; drop what only an editor reads."""
    for child in list(element):
        namespace, name = _local(child.tag)
        if namespace != _SVG_NS or name in _DROPPED:
            element.remove(child)  # an editor's own elements (Inkscape, RDF)
            continue
        if name not in _DRAWING:
            raise LogoRefused(
                f"The SVG holds a <{name}> element, which a logo may not; "
                "export it as plain shapes."
            )
        _clean(child)
    for attribute, value in list(element.attrib.items()):
        namespace, name = _local(attribute)
        if namespace not in ("", _XLINK_NS, _XML_NS):
            del element.attrib[attribute]  # an editor's own attributes
            continue
        if name.lower().startswith("on"):
            raise LogoRefused(
                f"The SVG holds an event attribute ({name}), which could run a "
                "script; export it without."
            )
        if name == "href" and not value.strip().startswith("#"):
            raise LogoRefused(
                "The SVG links to something outside itself; a logo must be "
                "self-contained."
            )
        _refuse_active_text(value)
    if _local(element.tag)[1] == "style":
        _refuse_active_text(element.text or "")


def _refuse_active_text(text: str) -> None:
    if _OUTSIDE_URL.search(text) or _ACTIVE_TEXT.search(text):
        raise LogoRefused(
            "The SVG's styles load or run something from outside; a logo must "
            "be self-contained."
        )


_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:px)?\s*$")


def _svg_size(root: ElementTree.Element) -> tuple[int, int]:
    """Return the drawing's size: its viewBox, else its width and height."""
    if view_box := root.get("viewBox"):
        parts = view_box.replace(",", " ").split()
        try:
            width, height = float(parts[2]), float(parts[3])
        except (IndexError, ValueError):
            raise LogoRefused("The SVG's viewBox is not four numbers.") from None
    else:
        found = [_NUMBER.match(root.get(side) or "") for side in ("width", "height")]
        if not all(found):
            raise LogoRefused(
                "The SVG says neither its viewBox nor its width and height in "
                "pixels, so it cannot be sized."
            )
        width, height = (float(match.group(1)) for match in found if match)
    if width <= 0 or height <= 0:
        raise LogoRefused("The SVG's width and height must be above zero.")
    _check_ratio(width, height)
    return max(1, round(width)), max(1, round(height))


def _check_ratio(width: float, height: float) -> None:
    if not 1 / 5 <= width / height <= 12:
        raise LogoRefused(
            "The logo is too tall or too wide to show in a page's header: "
            "at most 12 times as wide as high, or 5 times as high as wide."
        )

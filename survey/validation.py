"""Input read through pydantic models: errors per field, and query strings.

A query string's parameters are described once, by a model: the API and
the staff pages read the request through it, and the API document lists
its fields as the operation's parameters (``survey.api.openapi``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)

from survey.errors import InvalidInput

_FRIENDLY = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "int_type": "Must be a whole number.",
    "int_parsing": "Must be a whole number.",
    "int_from_float": "Must be a whole number.",
    "greater_than_equal": "Must be 0 or more.",
}


def field_errors(error: ValidationError) -> dict[str, list[str]]:
    """Turn pydantic's errors into ``{field: [message, ...]}``."""
    fields: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else "body"
        if item["type"] == "value_error":
            message = str(item["ctx"]["error"])
        elif item["type"] == "model_type" or item["type"] == "model_attributes_type":
            message = "The body must be a JSON object."
        elif item["type"] == "json_invalid":
            message = "The body is not valid JSON."
        else:
            message = _FRIENDLY.get(item["type"], item["msg"])
        fields.setdefault(name, []).append(message)
    return fields


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


#: A parameter left empty (or only spaces) is one not given.
Blank = BeforeValidator(_blank_is_none)
#: Optional text, trimmed.
Text = Annotated[str | None, Blank]


def unless_blank(
    normalize: Callable[[str], str],
) -> Callable[[str | None], str | None]:
    """``normalize`` a value given (it raises ValueError for a bad one);
    nothing given, or only spaces, is None. Serves as a WTForms filter too."""

    def read(value: str | None) -> str | None:
        return normalize(value) if value and value.strip() else None

    return read


def normalized(normalize: Callable[[str], str]) -> AfterValidator:
    """A model field's ``unless_blank(normalize)``."""
    return AfterValidator(unless_blank(normalize))


class Query(BaseModel):
    """A query string's parameters: unknown ones are ignored, as ever."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


Q = TypeVar("Q", bound=Query)


def read_query(model: type[Q], args: Mapping[str, str], message: str) -> Q:
    """Read ``model``'s parameters from ``args`` (the first of repeated ones);
    raise InvalidInput, ``message`` with the problems per field."""
    given = {
        name: args[name]
        for field_name, field in model.model_fields.items()
        if (name := field.alias or field_name) in args
    }
    try:
        return model.model_validate(given)
    except ValidationError as error:
        raise InvalidInput(message, field_errors(error)) from None

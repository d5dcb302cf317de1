"""JSON request bodies whose values have the JSON types OpenAPI documents for them.

FastAPI validates a decoded JSON body in Pydantic's lax Python mode, which converts across
JSON types: ``"5"`` and ``5.0`` become ``5``, ``1`` and ``"yes"`` become ``True``. A client
reading the published schema expects a string where a number is documented to be refused,
and schemathesis checks it. Pydantic's strict mode goes too far the other way: ``5.0`` is
an ``integer`` in JSON Schema but not a strict ``int``, and a date-time or a URL, JSON
strings, are refused. :class:`JsonTypes` checks only the JSON type of each value before
Pydantic converts it, as the schema says.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from enum import Enum
from typing import Any

from pydantic import AnyUrl, BaseModel, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["JsonTypes", "json_types_of", "FORM_VALUES"]

#: ``model_validate(..., context=FORM_VALUES)``: the values come from a form, as text, so
#: their JSON types are not checked (Pydantic still converts and checks them).
FORM_VALUES = {"json_types": False}

_NAMES = {
    "null": "null",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


def json_types_of(annotation: Any) -> frozenset[str] | None:
    """Return the JSON types a field of ``annotation`` documents (None: any, or unknown)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return json_types_of(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds: set[str] = set()
        for arg in args:
            found = json_types_of(arg)
            if found is None:
                return None
            kinds |= found
        return frozenset(kinds)
    if origin is typing.Literal:
        return frozenset().union(*(json_types_of(type(value)) or () for value in args))
    if annotation is type(None):
        return frozenset({"null"})
    if annotation is bool:
        return frozenset({"boolean"})
    if annotation is int:
        return frozenset({"integer"})
    if annotation is float:
        return frozenset({"integer", "number"})
    if annotation is str or annotation in (dt.datetime, dt.date, dt.time):
        return frozenset({"string"})
    if isinstance(annotation, type) and issubclass(annotation, AnyUrl | Enum):
        return frozenset({"string"}) if issubclass(annotation, AnyUrl) else None
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        return frozenset({"array"})
    if origin is dict or annotation is dict:
        return frozenset({"object"})
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return frozenset({"object"})
    return None


def _json_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None  # not from JSON (a model built in Python): left to Pydantic


class JsonTypes(BaseModel):
    """A JSON body: each value must have its field's documented JSON type (see module doc)."""

    @field_validator("*", mode="before")
    @classmethod
    def _documented_json_type(cls, value: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("json_types") is False:
            return value
        field = cls.model_fields.get(info.field_name or "")
        expected = json_types_of(field.annotation) if field is not None else None
        got = _json_type(value)
        if expected is None or got is None or got in expected:
            return value
        if got == "integer" and "number" in expected:
            return value
        if "number" in expected:
            expected = expected - {"integer"}
        wanted = " or ".join(sorted(_NAMES[k] for k in expected))
        raise PydanticCustomError("json_type", "must be {wanted}", {"wanted": wanted})

"""Limits of what PostgreSQL can store, checked where input comes in.

PostgreSQL's ``bigint`` stops at 2⁶³−1 and its ``integer`` at 2³¹−1, and its ``text``
and ``jsonb`` cannot hold the NUL character. Values outside these limits used to reach the
driver and come back as 500s. Now they are refused at the boundary with a 4xx that names
the parameter:

- ``RowId``, ``Offset``, ``GenerationNumber``: bounded integer types for query, path and
  body fields. FastAPI and Pydantic both understand them, and OpenAPI shows the bound.
  ``parse_row_id`` applies the same bound to ids read by hand (OGC feature ids, Open311
  request ids). An id past the bound is answered like a malformed id of that API: 422 in
  the REST API, 404 in OGC API – Features, 400 in Open311.
- ``Moment`` and ``moment_problem``: a date-time between the years 1000 and 9000 (UTC).
  Python's dates end at the years 1 and 9999, and a date near either end overflowed
  when converted to UTC or moved by a default period ("the last 90 days").
- ``NulFree`` (one text value), ``NulFreeModel`` (a request body: every text field) and
  ``find_nul`` (free-form JSON such as GeoJSON, and forms) refuse NUL in what a handler
  reads.
- ``RejectNul``: ASGI middleware that refuses NUL in any query or path parameter before
  routing. It covers the hand-read parameters (OGC property filters, tile layer filters,
  Open311) as well as the declared ones, and costs one byte search per request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from annotated_types import Ge, Le
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from service.errors import problem

__all__ = [
    "BIGINT_MAX",
    "INTEGER_MAX",
    "NUL_REASON",
    "RowId",
    "Offset",
    "GenerationNumber",
    "parse_row_id",
    "EARLIEST",
    "LATEST",
    "Moment",
    "moment_problem",
    "NulFree",
    "NulFreeModel",
    "find_nul",
    "RejectNul",
]

BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1
NUL_REASON = "must not contain a NUL character"

#: A row id (``bigint`` identity): 1 … 2⁶³−1.
RowId = Annotated[int, Ge(1), Le(BIGINT_MAX)]
#: Rows to skip before a page (PostgreSQL's OFFSET is a ``bigint``).
Offset = Annotated[int, Ge(0), Le(BIGINT_MAX)]
#: A boundary generation (``integer`` identity): 1 … 2³¹−1.
GenerationNumber = Annotated[int, Ge(1), Le(INTEGER_MAX)]


def parse_row_id(raw: str) -> int | None:
    """Return the row id written as ``raw`` (ASCII digits, ≤ 2⁶³−1), or None if it is not one."""
    # str.isdigit alone admits "²" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= BIGINT_MAX else None


EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def moment_problem(value: datetime) -> str | None:
    """Return why ``value`` cannot be stored and computed with, or None if it can.

    A date-time without a zone is read as UTC here.
    """
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    # Comparing aware date-times never converts them, so this cannot overflow.
    if not EARLIEST <= aware <= LATEST:
        return "must lie between the years 1000 and 9000"
    return None


def _check_moment(value: datetime) -> datetime:
    problem_text = moment_problem(value)
    if problem_text is not None:
        raise PydanticCustomError("datetime_range", problem_text)
    return value


def _not_a_number(value: Any) -> Any:
    # Pydantic would read a number, or text that is one, as Unix seconds ("until=0.5" was
    # 1970): a date-time is ISO 8601 text, as OpenAPI documents it.
    if isinstance(value, int | float):
        raise PydanticCustomError("datetime_type", "must be an ISO 8601 date-time")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise PydanticCustomError("datetime_type", "must be an ISO 8601 date-time")
    return value


#: A date-time between the years 1000 and 9000 (for Query and body fields). OpenAPI shows
#: the years as a pattern beside the date-time format.
Moment = Annotated[
    datetime,
    BeforeValidator(_not_a_number),
    AfterValidator(_check_moment),
    Field(json_schema_extra={"pattern": "^(1[0-9]{3}|[2-8][0-9]{3})-"}),
]


def _reject_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_character", NUL_REASON)
    return value


#: Text that PostgreSQL can store (for Query, Form and body fields).
NulFree = Annotated[str, AfterValidator(_reject_nul)]


def find_nul(value: Any, path: str = "") -> str | None:
    """Return where the first NUL in ``value`` is (dotted keys and indexes), or None.

    Walks strings, mapping keys and values, lists and tuples. A NUL at the top level (a bare
    string) is reported as ``path``, or as ``"body"`` when no path was given.
    """
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return here
            found = find_nul(item, here)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


class NulFreeModel(BaseModel):
    """A request body whose text fields refuse NUL (strings in lists and dicts too).

    The check is inherited by every field of a subclass, including fields added later and
    models built with ``create_model(__base__=...)``.
    """

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str | list | tuple | dict) and find_nul(value) is not None:
            raise PydanticCustomError("nul_character", NUL_REASON)
        return value


class RejectNul:
    """ASGI middleware that answers 422 (Open311: 400 in its own format) when a query or
    path parameter holds a NUL, naming the parameter."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = scope["query_string"]
            field = None
            if b"%00" in query or b"\x00" in query:
                field = _query_field(query)
            elif "\x00" in scope["path"]:
                field = _path_field(scope)
            if field is not None:
                response = _refusal(scope["path"], field)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _query_field(query: bytes) -> str | None:
    # Decoded as Starlette decodes query strings, so a parameter is named as a handler sees it.
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in key:
            return repr(key)[1:-1]
        if "\x00" in value:
            return key
    return None


def _path_field(scope) -> str:
    from starlette.routing import Match

    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, child = route.matches(scope)
        if match is Match.FULL:
            for name, value in child.get("path_params", {}).items():
                if "\x00" in str(value):
                    return name
    return "path"


def _refusal(path: str, field: str):
    detail = f"{field}: {NUL_REASON}"
    if path.startswith("/open311/"):
        # Open311 clients parse only Open311's error format.
        from service.routers.open311 import error_response

        return error_response(400, detail, path)
    return problem(
        422,
        f"Invalid input in {field}",
        detail,
        instance=path,
        field=field,
        errors=[{"field": field, "reason": NUL_REASON}],
    )

"""Validate boundary records (code, name, level, parent, geometry) before they are stored.

Pure: shapely only. The service writes what :func:`parse_area_features` accepts, all or
nothing; every rejected feature comes back with the field that is wrong and why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from geo.crs import ACCEPTED_INPUT_SRIDS, parse_srid

__all__ = [
    "LEVELS",
    "AreaRecord",
    "FeatureProblem",
    "parse_area_features",
    "expected_code_length",
    "as_multipolygon",
]

LEVELS = ("city", "district", "community", "grid")
#: Code lengths by level (CJ/T 213 family): county 6 digits (GB/T 2260), + 3 township +
#: 3 community, + 3 grid sequence. Cities use their 6-digit GB/T 2260 code too.
_CODE_LENGTH = {"city": 6, "district": 6, "community": 12, "grid": 15}
_CODE_RE = re.compile(r"^[0-9]+$")


def expected_code_length(level: str) -> int:
    """Return the number of digits a code of ``level`` has."""
    return _CODE_LENGTH[level]


@dataclass(frozen=True)
class AreaRecord:
    """One area ready to store: geometry is a valid MultiPolygon in lon/lat."""

    code: str
    name: str
    level: str
    parent_code: str | None
    geom: MultiPolygon
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureProblem:
    """Why one input feature was refused."""

    index: int
    field: str
    reason: str
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.index, "field": self.field, "reason": self.reason, "code": self.code}


def as_multipolygon(geom: Any) -> MultiPolygon:
    """Return ``geom`` (Polygon or MultiPolygon) as a MultiPolygon."""
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    raise TypeError(f"expected Polygon or MultiPolygon, got {geom.geom_type}")


def _check_code(code: Any, level: str | None) -> str:
    if not isinstance(code, str | int) or isinstance(code, bool):
        raise ValueError("must be a string of digits")
    text = str(code).strip()
    if not _CODE_RE.match(text):
        raise ValueError(f"{text!r} is not a string of digits")
    if level in _CODE_LENGTH and len(text) != _CODE_LENGTH[level]:
        raise ValueError(
            f"a {level} code has {_CODE_LENGTH[level]} digits, {text!r} has {len(text)}"
        )
    return text


def _check_geometry(raw: Any) -> MultiPolygon:
    if not isinstance(raw, dict) or "type" not in raw:
        raise ValueError("missing or not a GeoJSON geometry object")
    if raw["type"] not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"must be a Polygon or MultiPolygon, not {raw['type']}")
    try:
        geom = shape(raw)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise ValueError(f"malformed coordinates ({exc.__class__.__name__})") from None
    if geom.is_empty:
        raise ValueError("is empty")
    coords = shapely.get_coordinates(geom)
    if not all(math.isfinite(v) for v in coords.ravel()):
        raise ValueError("has a non-finite coordinate")
    lon, lat = coords[:, 0], coords[:, 1]
    if lon.min() < -180 or lon.max() > 180 or lat.min() < -90 or lat.max() > 90:
        raise ValueError("coordinates are outside lon [-180, 180] / lat [-90, 90]")
    if not geom.is_valid:
        raise ValueError(f"is invalid: {shapely.is_valid_reason(geom)}")
    return as_multipolygon(geom)


def parse_area_features(
    collection: dict[str, Any], *, known_parents: dict[str, str] | None = None
) -> tuple[list[AreaRecord], list[FeatureProblem]]:
    """Return the area records of a GeoJSON FeatureCollection and the problems found.

    Each feature needs ``properties.code``, ``properties.name``, ``properties.level`` and,
    below the city level, ``properties.parent_code``; its parent must be in the same
    collection or in ``known_parents`` (code → level), one level up. CRS: EPSG:4326 or
    EPSG:4490 (``crs`` member), stored unchanged. Codes must be unique in the collection.

    Examples
    --------
    >>> fc = {"type": "FeatureCollection", "features": [{"type": "Feature",
    ...   "properties": {"code": "520100", "name": "贵阳市", "level": "city"},
    ...   "geometry": {"type": "Polygon",
    ...                "coordinates": [[[106, 26], [107, 26], [107, 27], [106, 26]]]}}]}
    >>> records, problems = parse_area_features(fc)
    >>> records[0].code, problems
    ('520100', [])
    """
    problems: list[FeatureProblem] = []
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        return [], [FeatureProblem(-1, "type", "must be a GeoJSON FeatureCollection")]
    crs = collection.get("crs")
    if crs is not None:
        try:
            srid = parse_srid(crs["properties"]["name"])
        except (KeyError, TypeError, ValueError):
            return [], [FeatureProblem(-1, "crs", "unreadable crs member")]
        if srid not in ACCEPTED_INPUT_SRIDS:
            return [], [
                FeatureProblem(
                    -1, "crs", f"EPSG:{srid} is not accepted; use EPSG:4326 or EPSG:4490"
                )
            ]
    features = collection.get("features")
    if not isinstance(features, list) or not features:
        return [], [FeatureProblem(-1, "features", "must be a non-empty list")]

    records: list[AreaRecord] = []
    seen: dict[str, int] = {}
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            problems.append(FeatureProblem(i, "type", "must be a GeoJSON Feature"))
            continue
        props = feat.get("properties") or {}
        level = props.get("level")
        code_value = props.get("code")
        row_problems: list[FeatureProblem] = []
        if level not in LEVELS:
            row_problems.append(
                FeatureProblem(i, "properties.level", f"must be one of {', '.join(LEVELS)}")
            )
            level = None
        try:
            code = _check_code(code_value, level)
        except ValueError as exc:
            row_problems.append(FeatureProblem(i, "properties.code", str(exc)))
            code = None
        name = props.get("name")
        if not isinstance(name, str) or not name.strip():
            row_problems.append(FeatureProblem(i, "properties.name", "must be a non-empty string"))
        parent = props.get("parent_code")
        if level == "city":
            if parent not in (None, ""):
                row_problems.append(
                    FeatureProblem(i, "properties.parent_code", "a city has no parent", code)
                )
            parent = None
        elif level is not None:
            try:
                parent = _check_code(parent, None)
            except ValueError as exc:
                row_problems.append(FeatureProblem(i, "properties.parent_code", str(exc), code))
                parent = None
            if parent and code and level != "district" and not code.startswith(parent):
                row_problems.append(
                    FeatureProblem(
                        i, "properties.code", f"must start with its parent's code {parent}", code
                    )
                )
        try:
            geom = _check_geometry(feat.get("geometry"))
        except ValueError as exc:
            row_problems.append(FeatureProblem(i, "geometry", str(exc), code))
            geom = None
        if code is not None and code in seen:
            row_problems.append(
                FeatureProblem(i, "properties.code", f"duplicate of feature {seen[code]}", code)
            )
        if row_problems:
            problems.extend(row_problems)
            continue
        seen[code] = i
        extra = {
            k: v for k, v in props.items() if k not in ("code", "name", "level", "parent_code")
        }
        records.append(AreaRecord(code, name.strip(), level, parent, geom, extra))

    levels = {r.code: r.level for r in records}
    known = dict(known_parents or {})
    for r in records:
        if r.parent_code is None:
            continue
        parent_level = levels.get(r.parent_code) or known.get(r.parent_code)
        index = seen[r.code]
        if parent_level is None:
            problems.append(
                FeatureProblem(
                    index, "properties.parent_code", f"unknown parent {r.parent_code}", r.code
                )
            )
        elif LEVELS.index(parent_level) != LEVELS.index(r.level) - 1:
            problems.append(
                FeatureProblem(
                    index,
                    "properties.parent_code",
                    f"parent {r.parent_code} is a {parent_level}, a {r.level} needs a "
                    f"{LEVELS[LEVELS.index(r.level) - 1]}",
                    r.code,
                )
            )
    return records, sorted(problems, key=lambda p: p.index)

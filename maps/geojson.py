"""Check the GeoJSON handed to the page builders and measure it (pure: no I/O).

The builders take plain GeoJSON dicts (from the service's layer queries, or hand-made in
tests); a malformed layer is refused here, naming the layer, the feature and what is wrong,
rather than surfacing later as a blank map in someone's browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "PageDataError",
    "check_collection",
    "check_feature",
    "collection",
    "bounds_of",
    "merge_bounds",
]

POLYGONAL = ("Polygon", "MultiPolygon")
POINT = ("Point",)


class PageDataError(ValueError):
    """Data a page cannot be built from; the message names the layer and feature at fault."""


def collection(features: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a GeoJSON FeatureCollection of ``features``."""
    return {"type": "FeatureCollection", "features": list(features)}


def _positions(coords: Any) -> Iterable[Sequence[float]]:
    if coords and isinstance(coords[0], (int, float)):
        yield coords
        return
    for part in coords:
        yield from _positions(part)


def check_feature(
    feature: Any,
    *,
    layer: str,
    index: int = 0,
    geometry: Sequence[str] = POLYGONAL,
    required: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> dict[str, Any]:
    """Return ``feature`` if it is a GeoJSON Feature fit for ``layer``, else refuse it.

    Parameters
    ----------
    feature : dict
        A GeoJSON Feature.
    layer : str
        The layer's name, for messages.
    index : int
        The feature's position in its collection, for messages.
    geometry : sequence of str
        Allowed geometry types.
    required : sequence of str
        Properties that must be present and not empty.
    numeric : sequence of str
        Properties that must be non-negative numbers (or None).

    Raises
    ------
    PageDataError
        Naming the layer, the feature and the problem.
    """
    where = f"{layer}: feature {index}"
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise PageDataError(f"{where} is not a GeoJSON Feature")
    geom = feature.get("geometry")
    if not isinstance(geom, Mapping) or geom.get("type") not in geometry:
        kind = geom.get("type") if isinstance(geom, Mapping) else type(geom).__name__
        raise PageDataError(f"{where} has a {kind} geometry; {layer} takes {'/'.join(geometry)}")
    coords = geom.get("coordinates")
    try:
        positions = list(_positions(coords))
    except TypeError:
        positions = []
    if not positions or any(
        len(p) < 2 or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in p[:2])
        for p in positions
    ):
        raise PageDataError(f"{where} has no valid coordinates")
    if any(not (-180 <= p[0] <= 180 and -90 <= p[1] <= 90) for p in positions):
        raise PageDataError(f"{where} lies outside lon/lat range: coordinates must be WGS84")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise PageDataError(f"{where} has no properties object")
    for name in required:
        if props.get(name) in (None, ""):
            raise PageDataError(f"{where} lacks the property {name!r}")
    for name in numeric:
        value = props.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PageDataError(
                f"{where}: property {name!r} must be a non-negative number, not {value!r}"
            )
    return dict(feature)


def check_collection(
    data: Any,
    *,
    layer: str,
    geometry: Sequence[str] = POLYGONAL,
    required: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> dict[str, Any]:
    """Return ``data`` as a checked FeatureCollection (every feature as in :func:`check_feature`).

    Raises
    ------
    PageDataError
        When ``data`` is not a FeatureCollection or one of its features is unfit.
    """
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise PageDataError(f"{layer}: expected a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise PageDataError(f"{layer}: 'features' must be a list")
    return collection(
        check_feature(
            f, layer=layer, index=i, geometry=geometry, required=required, numeric=numeric
        )
        for i, f in enumerate(features)
    )


def bounds_of(features: Iterable[Mapping[str, Any]]) -> list[float] | None:
    """Return [min_lon, min_lat, max_lon, max_lat] of ``features`` (None when there are none)."""
    xs: list[float] = []
    ys: list[float] = []
    for feature in features:
        for p in _positions(feature["geometry"]["coordinates"]):
            xs.append(p[0])
            ys.append(p[1])
    if not xs:
        return None
    return [min(xs), min(ys), max(xs), max(ys)]


def merge_bounds(*boxes: Sequence[float] | None) -> list[float] | None:
    """Return the box covering every given box (None ones are skipped)."""
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return [
        min(b[0] for b in real),
        min(b[1] for b in real),
        max(b[2] for b in real),
        max(b[3] for b in real),
    ]

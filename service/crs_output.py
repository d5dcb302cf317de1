"""Answers in the client's coordinate system: the ``crs`` parameter of reads.

Everything is stored in WGS84. A client drawing on an Amap or Tencent (GCJ-02) or a Baidu
(BD-09) map asks for ``crs=GCJ-02`` / ``crs=BD-09`` and gets coordinates shifted here, on
the server, with the vectorised kernels of :mod:`geo.coords` that convert the input: a
point written in GCJ-02 and read back in GCJ-02 comes back to < 1e-6° (7 decimals are
sent; the inverse is exact to 1e-9°). The names are those every ``crs`` input takes
(:func:`geo.coords.parse_crs`), plus the URIs of :data:`geo.coords.CRS_URIS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from geo.coords import CRS_URIS, EPSG_4326, SHIFTED_CRS, from_wgs84, parse_crs, to_wgs84
from service.errors import WanggeError

__all__ = [
    "UnknownCrsError",
    "output_crs",
    "content_crs",
    "shift_point",
    "shift_items",
    "shift_geojson",
    "shifted_wkb",
    "bbox_to_wgs84",
]


class UnknownCrsError(WanggeError):
    """A ``crs`` the service cannot answer in (400, naming it)."""

    status = 400
    title = "Unsupported coordinate system"


def output_crs(raw: str | None, *, field: str = "crs", status: int = 400) -> str:
    """Return the canonical name of the ``crs`` asked for (EPSG:4326 when absent); refused
    if unknown, naming it and what is accepted: 400 in OGC API and tiles, ``status=422`` in
    the REST API (its status for every invalid parameter)."""
    if raw is None:
        return EPSG_4326
    try:
        return parse_crs(raw)
    except ValueError as exc:
        accepted = ", ".join(CRS_URIS.values())
        error = UnknownCrsError(f"{field}: {exc}; or the URIs {accepted}", field=field)
        error.status = status
        raise error from None


def content_crs(name: str) -> dict[str, str]:
    """Return the ``Content-Crs`` header saying which system the coordinates are in."""
    return {"Content-Crs": f"<{CRS_URIS[name]}>"}


def shift_point(lon: float | None, lat: float | None, crs: str) -> tuple[Any, Any]:
    """Return the WGS84 point in ``crs`` (None stays None)."""
    if lon is None or lat is None or crs not in SHIFTED_CRS:
        return lon, lat
    x, y = from_wgs84(float(lon), float(lat), crs)
    return x, y


def shift_items(items: list[dict[str, Any]], crs: str) -> list[dict[str, Any]]:
    """Return entity reads (dicts with ``lon``, ``lat``) with their point in ``crs``, all
    converted in one kernel call; items without a point are left as they are."""
    if crs not in SHIFTED_CRS:
        return items
    located = [i for i in items if i.get("lon") is not None and i.get("lat") is not None]
    if located:
        x, y = from_wgs84(
            np.array([i["lon"] for i in located], dtype=float),
            np.array([i["lat"] for i in located], dtype=float),
            crs,
        )
        for item, lon, lat in zip(located, x.tolist(), y.tolist(), strict=True):
            item["lon"], item["lat"] = lon, lat
    return items


def _kernel(crs: str, digits: int | None):
    def shift(coords: np.ndarray) -> np.ndarray:
        x, y = from_wgs84(coords[:, 0], coords[:, 1], crs)
        out = np.column_stack([x, y])
        return out if digits is None else np.round(out, digits)

    return shift


def shifted_wkb(wkbs: list[bytes | None], crs: str) -> np.ndarray:
    """Return the geometries of ``wkbs`` (WGS84) in ``crs``, as shapely geometries.

    All vertices of all geometries go through the kernel in one call.
    """
    geoms = shapely.from_wkb(np.asarray(wkbs, dtype=object))
    return shapely.transform(geoms, _kernel(crs, None))


def shift_geojson(wkbs: list[bytes | None], crs: str, digits: int) -> list[str]:
    """Return GeoJSON geometry texts of WGS84 ``wkbs`` in ``crs``, ``digits`` decimals.

    A missing geometry is ``null``.
    """
    if not wkbs:
        return []
    geoms = shapely.from_wkb(np.asarray(wkbs, dtype=object))
    shifted = shapely.transform(geoms, _kernel(crs, digits))
    return [t if t is not None else "null" for t in shapely.to_geojson(shifted).tolist()]


def bbox_to_wgs84(
    bbox: tuple[float, float, float, float], crs: str
) -> tuple[float, float, float, float]:
    """Return the WGS84 box holding a box given in ``crs`` (its edges converted).

    The shift is smooth and small, so the converted box's extremes lie on its converted
    edges; 17 points an edge, padded by 1e-7°, hold them.
    """
    if crs not in SHIFTED_CRS:
        return bbox
    x0, y0, x1, y1 = bbox
    t = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(17, x1), x1 - (x1 - x0) * t, np.full(17, x0)])
    ys = np.concatenate([np.full(17, y0), y0 + (y1 - y0) * t, np.full(17, y1), y1 - (y1 - y0) * t])
    lon, lat = to_wgs84(xs, ys, crs)
    pad = 1e-7
    return (
        float(lon.min()) - pad,
        float(lat.min()) - pad,
        float(lon.max()) + pad,
        float(lat.max()) + pad,
    )

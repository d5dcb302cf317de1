"""Return WGS84 coordinates from the coordinate systems field data arrives in, and check them.

Chinese field data arrives in four systems:

* ``EPSG:4326`` – WGS84, from GPS receivers;
* ``EPSG:4490`` – CGCS2000, from surveys; centimetres from WGS84, so taken unchanged
  (see :mod:`geo.crs`);
* ``GCJ-02`` – the obfuscated system required of Chinese web maps (Amap/Gaode, Tencent,
  Apple and Google maps inside China): a non-linear shift of 100–700 m;
* ``BD-09`` – Baidu's system: GCJ-02 shifted and rotated again (about 1 km in all).

Storing GCJ-02 or BD-09 unconverted puts an incident in the wrong grid, so everything is
converted to WGS84 before it is stored. The forward transforms are the published formulas
(Krasovsky 1940 ellipsoid; Baidu's ``x_pi = π·3000/180``). They have no closed-form
inverse, so the inverses refine the usual one-step approximation (metre-level) by a
fixed-point iteration to better than 1e-9° (0.1 mm). Everything is vectorised over numpy
arrays; scalars in give floats out.

Examples
--------
>>> lon, lat = gcj02_to_wgs84(106.703743, 26.596456)   # a point from Amap
>>> round(lon, 6), round(lat, 6)
(106.7, 26.6)
>>> to_wgs84(106.703743, 26.596456, "amap") == (lon, lat)
True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from geo.crs import CGCS2000, WGS84, parse_point_crs

__all__ = [
    "EPSG_4326",
    "EPSG_4490",
    "GCJ02",
    "BD09",
    "INPUT_CRS",
    "CHINA_BBOX",
    "GCJ02_BBOX",
    "KRASOVSKY_A",
    "KRASOVSKY_EE",
    "REASONS",
    "CoordinateError",
    "PointProblem",
    "parse_input_crs",
    "parse_crs",
    "crs_uri",
    "CRS_URIS",
    "SHIFTED_CRS",
    "wgs84_to_gcj02",
    "gcj02_to_wgs84",
    "gcj02_to_bd09",
    "bd09_to_gcj02",
    "wgs84_to_bd09",
    "bd09_to_wgs84",
    "to_wgs84",
    "from_wgs84",
    "in_china",
    "point_reasons",
    "check_points",
    "validate_point",
]

#: Canonical names returned by :func:`parse_input_crs`.
EPSG_4326 = f"EPSG:{WGS84}"
EPSG_4490 = f"EPSG:{CGCS2000}"
GCJ02 = "GCJ-02"
BD09 = "BD-09"
INPUT_CRS = (EPSG_4326, EPSG_4490, GCJ02, BD09)
#: The systems whose coordinates differ from the stored WGS84 ones (output is shifted).
SHIFTED_CRS = (GCJ02, BD09)
#: A URI per canonical name, for OGC API – Features' ``crs`` lists and ``Content-Crs``.
#: WGS84 is OGC's CRS84 (lon/lat order, as GeoJSON); GCJ-02 and BD-09 have no registered
#: URI, so they get URNs of their own (``parse_crs`` reads all of these back).
CRS_URIS = {
    EPSG_4326: "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
    EPSG_4490: "http://www.opengis.net/def/crs/EPSG/0/4490",
    GCJ02: "urn:x-wangge:def:crs:GCJ-02",
    BD09: "urn:x-wangge:def:crs:BD-09",
}

#: Coarse "in China" test used by validation, as (min lon, min lat, max lon, max lat).
#: It covers the mainland, Hainan and Taiwan and also strips of the neighbouring countries
#: (Mongolia, the Koreas, northern Vietnam, …) and leaves out the South China Sea islands
#: (Sansha), all south of 18.1°N. Good enough to catch swapped or foreign coordinates, not
#: to decide a border.
CHINA_BBOX = (73.5, 18.1, 135.1, 53.6)
#: The box inside which the published GCJ-02 code (eviltransform, prcoords) applies its
#: shift, as (min lon, min lat, max lon, max lat); points outside it are returned unchanged.
GCJ02_BBOX = (72.004, 0.8293, 137.8347, 55.8271)

#: Krasovsky 1940 ellipsoid (semi-major axis, m; eccentricity squared), as the GCJ-02
#: formulas use it.
KRASOVSKY_A = 6378245.0
KRASOVSKY_EE = 0.00669342162296594323
_A = KRASOVSKY_A
_EE = KRASOVSKY_EE
_X_PI = np.pi * 3000.0 / 180.0
_BD_DLON = 0.0065
_BD_DLAT = 0.006

_TOL_DEG = 1e-9
_MAX_ITER = 10

#: Reason codes of :func:`point_reasons`, in the order they are checked.
REASONS = ("nan", "infinite", "swapped", "out_of_range", "outside_china")


class CoordinateError(ValueError):
    """A coordinate the service must refuse; ``field`` is "lon", "lat" or "lon,lat"."""

    def __init__(self, message: str, *, field: str, code: str):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass(frozen=True)
class PointProblem:
    """Why the point at ``index`` is refused: a code from :data:`REASONS` and a message."""

    index: int
    code: str
    field: str
    message: str


# --------------------------------------------------------------------------- CRS names

_NAMES = {
    "WGS84": EPSG_4326,
    "WGS-84": EPSG_4326,
    "WGS 84": EPSG_4326,
    "GPS": EPSG_4326,
    "CGCS2000": EPSG_4490,
    "CGCS-2000": EPSG_4490,
    "GCJ02": GCJ02,
    "GCJ-02": GCJ02,
    "GCJ": GCJ02,
    "AMAP": GCJ02,
    "GAODE": GCJ02,
    "TENCENT": GCJ02,
    "QQ": GCJ02,
    "BD09": BD09,
    "BD-09": BD09,
    "BD09LL": BD09,
    "BAIDU": BD09,
    "URN:X-WANGGE:DEF:CRS:GCJ-02": GCJ02,
    "URN:X-WANGGE:DEF:CRS:BD-09": BD09,
}
_ACCEPTED_TEXT = (
    "EPSG:4326 (wgs84, 4326), EPSG:4490 (cgcs2000, 4490), "
    "GCJ-02 (gcj02, amap, gaode, tencent), BD-09 (bd09, bd09ll, baidu)"
)


def parse_input_crs(value: str | int) -> str:
    """Return the canonical name ("EPSG:4326", "EPSG:4490", "GCJ-02" or "BD-09") of ``value``.

    Names are case-insensitive; EPSG codes may be bare numbers, ``EPSG:n``, URNs or URLs (as
    :func:`geo.crs.parse_point_crs` reads them). Anything else raises ValueError naming the
    accepted values.

    Examples
    --------
    >>> parse_input_crs("Amap"), parse_input_crs("bd-09"), parse_input_crs(4490)
    ('GCJ-02', 'BD-09', 'EPSG:4490')
    >>> parse_input_crs("EPSG:3857")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unsupported crs 'EPSG:3857'; accepted: EPSG:4326 (wgs84, 4326), ...
    """
    key = str(value).strip().upper()
    name = _NAMES.get(key)
    if name is not None:
        return name
    if key in ("BD09MC", "BD-09MC"):
        # Baidu's Web Mercator metres: a different projection, not a datum shift.
        raise ValueError(
            f"unsupported crs {value!r}: Baidu Mercator metres; send BD-09 lon/lat (bd09ll)"
        )
    try:
        srid = parse_point_crs(value)
    except ValueError:
        raise ValueError(f"unsupported crs {value!r}; accepted: {_ACCEPTED_TEXT}") from None
    return f"EPSG:{srid}"


#: The one parser of ``crs`` parameters, for what a client sends and what it asks to get.
parse_crs = parse_input_crs


def crs_uri(value: str | int) -> str:
    """Return the URI of a coordinate system (see :data:`CRS_URIS`).

    Examples
    --------
    >>> crs_uri("amap")
    'urn:x-wangge:def:crs:GCJ-02'
    >>> crs_uri(4326)
    'http://www.opengis.net/def/crs/OGC/1.3/CRS84'
    """
    return CRS_URIS[parse_crs(value)]


# --------------------------------------------------------------------------- helpers

# Large inputs are cut into chunks that stay in the CPU cache and run on a thread each
# (numpy releases the GIL inside its loops); small ones, like an API request's, run inline.
_CHUNK = 1 << 16


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _as_arrays(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    scalar = lon_a.ndim == 0 and lat_a.ndim == 0
    lon_a, lat_a = np.broadcast_arrays(lon_a, lat_a)
    return lon_a, lat_a, scalar


def _out(lon: np.ndarray, lat: np.ndarray, scalar: bool):
    if scalar:
        return float(lon), float(lat)
    return lon, lat


_Kernel = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _apply(kernel: _Kernel, lon: Any, lat: Any):
    """Return ``kernel`` applied to the points, shaped like the input (floats for scalars)."""
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    shape = lon_a.shape
    flat_lon = np.ascontiguousarray(lon_a).reshape(-1)
    flat_lat = np.ascontiguousarray(lat_a).reshape(-1)
    n = flat_lon.size
    # NaN/inf in give NaN/inf out, and points outside China may overflow in the discarded
    # branch of np.where: neither deserves a warning.
    with np.errstate(all="ignore"):
        if n <= 2 * _CHUNK:
            out_lon, out_lat = kernel(flat_lon, flat_lat)
        else:
            out_lon = np.empty(n)
            out_lat = np.empty(n)

            def run(start: int) -> None:
                part = slice(start, start + _CHUNK)
                with np.errstate(all="ignore"):  # errstate is per thread
                    out_lon[part], out_lat[part] = kernel(flat_lon[part], flat_lat[part])

            with ThreadPoolExecutor(min(_workers(), -(-n // _CHUNK))) as pool:
                list(pool.map(run, range(0, n, _CHUNK)))
    return _out(out_lon.reshape(shape), out_lat.reshape(shape), scalar)


def _in_box(lon: np.ndarray, lat: np.ndarray, box: tuple[float, float, float, float]):
    # NaN compares False, so NaN points are never inside.
    return (lon >= box[0]) & (lon <= box[2]) & (lat >= box[1]) & (lat <= box[3])


def _gcj_forward(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return GCJ-02 of WGS84 ``lon``, ``lat`` with no in-China test (the bare formula).

    The published formula takes eleven sines; sin(xπ), sin(2xπ) and sin(6xπ) follow here
    from sin/cos(xπ/3) by the triple- and double-angle identities, and cos(lat) from
    sin(lat), which nearly halves the time (sines dominate it) and changes the result by
    < 1e-13°.
    """
    x = lon - 105.0
    y = lat - 35.0
    sx3 = np.sin(x * (np.pi / 3.0))
    cx3 = np.cos(x * (np.pi / 3.0))
    sx1 = sx3 * (3.0 - 4.0 * sx3 * sx3)  # sin(xπ)
    cx1 = cx3 * (4.0 * cx3 * cx3 - 3.0)  # cos(xπ)
    sx2 = 2.0 * sx1 * cx1  # sin(2xπ)
    sx6 = sx2 * (3.0 - 4.0 * sx2 * sx2)  # sin(6xπ)
    sy3 = np.sin(y * (np.pi / 3.0))
    sy1 = sy3 * (3.0 - 4.0 * sy3 * sy3)  # sin(yπ)
    sqrt_ax = np.sqrt(np.abs(x))
    xy = x * y
    common = 20.0 * sx6 + 20.0 * sx2
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * xy
        + 0.2 * sqrt_ax
        + (
            common
            + 20.0 * sy1
            + 40.0 * sy3
            + 160.0 * np.sin(y * (np.pi / 12.0))
            + 320.0 * np.sin(y * (np.pi / 30.0))
        )
        * (2.0 / 3.0)
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * xy
        + 0.1 * sqrt_ax
        + (
            common
            + 20.0 * sx1
            + 40.0 * sx3
            + 150.0 * np.sin(x * (np.pi / 12.0))
            + 300.0 * np.sin(x * (np.pi / 30.0))
        )
        * (2.0 / 3.0)
    )
    sin2_lat = np.sin(lat * (np.pi / 180.0)) ** 2
    magic = 1.0 - _EE * sin2_lat
    sqrt_magic = np.sqrt(magic)
    cos_lat = np.sqrt(1.0 - sin2_lat)  # |lat| <= 90°, so cos(lat) >= 0
    # The offsets above are arc lengths in metres; divide by the length of a degree.
    dlat = dlat * 180.0 / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * cos_lat * np.pi)
    return lon + dlon, lat + dlat


def _bd_forward(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return BD-09 of GCJ-02 ``lon``, ``lat`` (Baidu's published formula)."""
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + _BD_DLON, z * np.sin(theta) + _BD_DLAT


def _bd_backward_approx(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the one-step GCJ-02 approximation of BD-09 ``lon``, ``lat`` (~2e-6° off)."""
    x = lon - _BD_DLON
    y = lat - _BD_DLAT
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(
    forward: _Kernel,
    lon: np.ndarray,
    lat: np.ndarray,
    start_lon: np.ndarray,
    start_lat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return p with forward(p) = (lon, lat), by p ← p − (forward(p) − target) from start.

    Both transforms are the identity plus a shift whose gradient is < 1e-2, so each step
    shrinks a point's error over a hundredfold. The step just taken is the old p's residual
    and, the map being near-linear at this scale, the new p's error is about that step times
    the point's observed contraction (this step / its last). The loop stops when every
    point's step, or ten times that error estimate, is below 1e-9°: after 3 steps for
    GCJ-02 and 2–3 for BD-09, instead of the 4 that waiting for a step < 1e-9° would take.
    """
    p_lon, p_lat = start_lon, start_lat
    last = None
    for _ in range(_MAX_ITER):
        f_lon, f_lat = forward(p_lon, p_lat)
        e_lon = f_lon - lon
        e_lat = f_lat - lat
        p_lon = p_lon - e_lon
        p_lat = p_lat - e_lat
        step = np.maximum(np.abs(e_lon), np.abs(e_lat))
        # Non-finite input stays non-finite; it must not keep the loop going.
        step[~np.isfinite(step)] = 0.0
        if step.max(initial=0.0) < _TOL_DEG:
            break
        if last is not None:
            estimate = np.divide(step * step, last, out=np.zeros_like(step), where=last > 0)
            if 10.0 * estimate.max() < _TOL_DEG:
                break
        last = step
    return p_lon, p_lat


def _wgs_to_gcj_kernel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inside = _in_box(lon, lat, GCJ02_BBOX)
    g_lon, g_lat = _gcj_forward(lon, lat)
    return np.where(inside, g_lon, lon), np.where(inside, g_lat, lat)


def _gcj_to_wgs_kernel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inside = _in_box(lon, lat, GCJ02_BBOX)
    out_lon = lon.copy()
    out_lat = lat.copy()
    if inside.all():
        t_lon, t_lat = lon, lat
    elif inside.any():
        t_lon, t_lat = lon[inside], lat[inside]
    else:
        return out_lon, out_lat
    f_lon, f_lat = _gcj_forward(t_lon, t_lat)
    # One-step start: WGS84 ≈ GCJ-02 − offset(GCJ-02), metres off.
    w_lon, w_lat = _invert(_gcj_forward, t_lon, t_lat, 2.0 * t_lon - f_lon, 2.0 * t_lat - f_lat)
    out_lon[inside] = w_lon
    out_lat[inside] = w_lat
    return out_lon, out_lat


def _bd_to_gcj_kernel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _invert(_bd_forward, lon, lat, *_bd_backward_approx(lon, lat))


def _wgs_to_bd_kernel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _bd_forward(*_wgs_to_gcj_kernel(lon, lat))


def _bd_to_wgs_kernel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gcj_to_wgs_kernel(*_bd_to_gcj_kernel(lon, lat))


# --------------------------------------------------------------------------- conversions


def wgs84_to_gcj02(lon, lat):
    """Return GCJ-02 ``(lon, lat)`` of WGS84 points; points outside :data:`GCJ02_BBOX` unchanged.

    Accepts scalars (returns floats) or array-likes of one shape (returns arrays).

    Examples
    --------
    >>> lon, lat = wgs84_to_gcj02(106.7, 26.6)
    >>> round(lon, 6), round(lat, 6)
    (106.703743, 26.596456)
    >>> wgs84_to_gcj02(2.35, 48.86)   # Paris: outside China, unchanged
    (2.35, 48.86)
    """
    return _apply(_wgs_to_gcj_kernel, lon, lat)


def gcj02_to_wgs84(lon, lat):
    """Return WGS84 ``(lon, lat)`` of GCJ-02 points, exact to < 1e-9°; outside China unchanged.

    Inverts :func:`wgs84_to_gcj02` by fixed-point iteration from the one-step approximation.
    Points outside :data:`GCJ02_BBOX` (judged on the GCJ-02 input) are returned unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> lon, lat = gcj02_to_wgs84(np.array([106.703743, 116.397475]),
    ...                           np.array([26.596456, 39.908692]))
    >>> np.round(lon, 6).tolist(), np.round(lat, 6).tolist()
    ([106.7, 116.391234], [26.6, 39.907291])
    """
    return _apply(_gcj_to_wgs_kernel, lon, lat)


def gcj02_to_bd09(lon, lat):
    """Return BD-09 ``(lon, lat)`` of GCJ-02 points (Baidu's formula; applied everywhere).

    Examples
    --------
    >>> lon, lat = gcj02_to_bd09(106.703743, 26.596456)
    >>> round(lon, 6), round(lat, 6)
    (106.710203, 26.602555)
    """
    return _apply(_bd_forward, lon, lat)


def bd09_to_gcj02(lon, lat):
    """Return GCJ-02 ``(lon, lat)`` of BD-09 points, exact to < 1e-9° (iterated inverse).

    Examples
    --------
    >>> lon, lat = bd09_to_gcj02(106.710203, 26.602555)
    >>> round(lon, 6), round(lat, 6)
    (106.703743, 26.596456)
    """
    return _apply(_bd_to_gcj_kernel, lon, lat)


def wgs84_to_bd09(lon, lat):
    """Return BD-09 ``(lon, lat)`` of WGS84 points (WGS84 → GCJ-02 → BD-09).

    Examples
    --------
    >>> lon, lat = wgs84_to_bd09(106.7, 26.6)
    >>> round(lon, 6), round(lat, 6)
    (106.710202, 26.602555)
    """
    return _apply(_wgs_to_bd_kernel, lon, lat)


def bd09_to_wgs84(lon, lat):
    """Return WGS84 ``(lon, lat)`` of BD-09 points (BD-09 → GCJ-02 → WGS84, both iterated).

    Examples
    --------
    >>> lon, lat = bd09_to_wgs84(106.710202, 26.602555)
    >>> round(lon, 6), round(lat, 6)
    (106.7, 26.6)
    """
    return _apply(_bd_to_wgs_kernel, lon, lat)


def to_wgs84(lon, lat, crs: str | int):
    """Return WGS84 ``(lon, lat)`` of points in ``crs`` (a name :func:`parse_input_crs` reads).

    EPSG:4326 and EPSG:4490 come back unchanged (as float arrays, or floats for scalars).

    Examples
    --------
    >>> to_wgs84(106.7, 26.6, "cgcs2000")
    (106.7, 26.6)
    >>> lon, lat = to_wgs84(106.710202, 26.602555, "baidu")
    >>> round(lon, 6), round(lat, 6)
    (106.7, 26.6)
    """
    name = parse_input_crs(crs)
    if name == GCJ02:
        return gcj02_to_wgs84(lon, lat)
    if name == BD09:
        return bd09_to_wgs84(lon, lat)
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    return _out(lon_a.copy(), lat_a.copy(), scalar)


def from_wgs84(lon, lat, crs: str | int):
    """Return ``(lon, lat)`` in ``crs`` of WGS84 points: the inverse of :func:`to_wgs84`.

    GCJ-02 and BD-09 use the forward formulas (exact by definition); :func:`to_wgs84` of the
    result gives the points back to < 1e-9°. EPSG:4326 and EPSG:4490 come back unchanged.

    Examples
    --------
    >>> lon, lat = from_wgs84(106.7, 26.6, "GCJ-02")
    >>> round(lon, 6), round(lat, 6)
    (106.703743, 26.596456)
    >>> x, y = to_wgs84(*from_wgs84(106.7, 26.6, "bd09"), "bd09")
    >>> abs(x - 106.7) < 1e-9 and abs(y - 26.6) < 1e-9
    True
    """
    name = parse_crs(crs)
    if name == GCJ02:
        return wgs84_to_gcj02(lon, lat)
    if name == BD09:
        return wgs84_to_bd09(lon, lat)
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    return _out(lon_a.copy(), lat_a.copy(), scalar)


# --------------------------------------------------------------------------- validation


def in_china(lon, lat):
    """Return a boolean mask (or bool) of points inside the coarse :data:`CHINA_BBOX`.

    Examples
    --------
    >>> in_china([106.7, 2.35], [26.6, 48.86]).tolist()
    [True, False]
    """
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    mask = _in_box(lon_a, lat_a, CHINA_BBOX)
    return bool(mask) if scalar else mask


def point_reasons(lon, lat, *, crs: str | int = EPSG_4326, require_china: bool = True):
    """Return, per point, the reason code it is refused for, or "" where it is acceptable.

    Codes, first match wins (see :data:`REASONS`):

    * ``nan`` – lon or lat is NaN;
    * ``infinite`` – lon or lat is ±infinity;
    * ``swapped`` – the pair is outside China but (lat, lon) is inside: lat/lon swapped;
    * ``out_of_range`` – lon ∉ [-180, 180] or lat ∉ [-90, 90];
    * ``outside_china`` – outside :data:`CHINA_BBOX`.

    ``require_china=False`` accepts points anywhere for EPSG:4326/4490 (and then reports
    ``swapped`` only where the pair as given is out of range); GCJ-02 and BD-09 points are
    meaningless outside China and are always required to be inside.

    Examples
    --------
    >>> point_reasons([106.7, 26.6, float("nan"), 2.35], [26.6, 106.7, 26.6, 48.86]).tolist()
    ['', 'swapped', 'nan', 'outside_china']
    """
    name = parse_input_crs(crs)
    lon_a, lat_a, _ = _as_arrays(lon, lat)
    require = require_china or name in (GCJ02, BD09)
    nan = np.isnan(lon_a) | np.isnan(lat_a)
    inf = np.isinf(lon_a) | np.isinf(lat_a)
    out_of_range = (np.abs(lon_a) > 180.0) | (np.abs(lat_a) > 90.0)
    inside = _in_box(lon_a, lat_a, CHINA_BBOX)
    swapped = ~inside & _in_box(lat_a, lon_a, CHINA_BBOX)
    if not require:
        swapped &= out_of_range
    # np.select takes the first true condition, which gives the documented precedence.
    return np.select(
        [nan, inf, swapped, out_of_range, ~inside if require else np.zeros_like(nan)],
        list(REASONS),
        default="",
    )


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def _which(bad_lon: bool, bad_lat: bool) -> str:
    return "lon,lat" if bad_lon and bad_lat else ("lon" if bad_lon else "lat")


def _problem(index: int, code: str, lon: float, lat: float, crs_name: str) -> PointProblem:
    pair = f"({_fmt(lon)}, {_fmt(lat)})"
    if code == "nan":
        field = _which(np.isnan(lon), np.isnan(lat))
        verb = "are" if field == "lon,lat" else "is"
        message = f"{field.replace(',', ' and ')} {verb} NaN"
    elif code == "infinite":
        field = _which(np.isinf(lon), np.isinf(lat))
        message = f"{field.replace(',', ' and ')} must be finite, got {pair}"
    elif code == "swapped":
        field = "lon,lat"
        message = (
            f"lat/lon look swapped: {pair} is outside China, "
            f"({_fmt(lat)}, {_fmt(lon)}) is inside; send lon first"
        )
    elif code == "out_of_range":
        parts = []
        if abs(lon) > 180.0:
            parts.append(f"lon {_fmt(lon)} is outside [-180, 180]")
        if abs(lat) > 90.0:
            parts.append(f"lat {_fmt(lat)} is outside [-90, 90]")
        field = _which(abs(lon) > 180.0, abs(lat) > 90.0)
        message = "; ".join(parts)
    else:
        field = "lon,lat"
        lo_lon, lo_lat, hi_lon, hi_lat = CHINA_BBOX
        message = (
            f"{pair} ({crs_name}) is outside China (lon {lo_lon}..{hi_lon}, lat {lo_lat}..{hi_lat})"
        )
    return PointProblem(index=index, code=code, field=field, message=message)


def check_points(
    lon, lat, *, crs: str | int = EPSG_4326, require_china: bool = True
) -> list[PointProblem]:
    """Return the problems of the refused points (index into the flattened input), in order.

    The test itself is vectorised (:func:`point_reasons`); messages are built only for the
    refused points. An empty list means every point is acceptable.

    Examples
    --------
    >>> [p.code for p in check_points([106.7, 26.6], [26.6, 106.7], crs="gcj02")]
    ['swapped']
    >>> check_points([106.7, 26.6], [26.6, 106.7])[0].message
    'lat/lon look swapped: (26.6, 106.7) is outside China, (106.7, 26.6) is inside; send lon first'
    """
    name = parse_input_crs(crs)
    lon_a, lat_a, _ = _as_arrays(lon, lat)
    reasons = point_reasons(lon_a, lat_a, crs=name, require_china=require_china).ravel()
    flat_lon = lon_a.ravel()
    flat_lat = lat_a.ravel()
    return [
        _problem(int(i), str(reasons[i]), float(flat_lon[i]), float(flat_lat[i]), name)
        for i in np.flatnonzero(reasons != "")
    ]


def validate_point(lon, lat, crs: str | int = EPSG_4326, *, require_china: bool = True) -> None:
    """Return None if the point is acceptable; raise :class:`CoordinateError` saying why not.

    The error's ``code`` is one of :data:`REASONS`, or ``not_a_number`` when ``lon`` or
    ``lat`` does not convert to a float; ``field`` names the offending coordinate(s).

    Examples
    --------
    >>> validate_point(106.7, 26.6, "bd09")
    >>> validate_point(2.35, 48.86, "gcj02")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geo.coords.CoordinateError: (2.35, 48.86) (GCJ-02) is outside China (lon 73.5..135.1, ...)
    """
    values = []
    for field, value in (("lon", lon), ("lat", lat)):
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            raise CoordinateError(
                f"{field} must be a number, got {value!r}", field=field, code="not_a_number"
            ) from None
    problems = check_points(values[0], values[1], crs=crs, require_china=require_china)
    if problems:
        p = problems[0]
        raise CoordinateError(p.message, field=p.field, code=p.code)

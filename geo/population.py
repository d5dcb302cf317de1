"""Plausible population density surfaces, and integer apportionment.

Pure: numpy and shapely only. Nothing here claims to be real census data: a
:class:`PopulationSurface` is a smooth, seeded stand-in (town centres as Gaussian
kernels over a rural base density) that lets the demo data generator hand out grids
and staff in proportion to where people would plausibly live.

Distances are measured in a :class:`LocalFrame`, an equirectangular projection about
a reference point. It is affine in lon/lat, so a straight line in the frame is a
straight line in lon/lat; its scale error is below 1 % within ±0.6° of latitude of the
reference point, which is ample for a county.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = [
    "EARTH_RADIUS_M",
    "LocalFrame",
    "Kernel",
    "PopulationSurface",
    "random_surface",
    "apportion",
]

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True)
class LocalFrame:
    """Equirectangular metric frame centred on (``lon0``, ``lat0``).

    ``x_m = (lon - lon0) * cos(lat0) * R * pi / 180`` and ``y_m = (lat - lat0) * R * pi / 180``.
    """

    lon0: float
    lat0: float

    @classmethod
    def around(cls, geom: BaseGeometry) -> LocalFrame:
        """Return the frame centred on the middle of ``geom``'s bounding box."""
        minx, miny, maxx, maxy = shapely.total_bounds(geom)
        if not np.isfinite([minx, miny, maxx, maxy]).all():
            raise ValueError("cannot centre a frame on an empty geometry")
        return cls(0.5 * (minx + maxx), 0.5 * (miny + maxy))

    @property
    def m_per_deg_lon(self) -> float:
        """Return metres per degree of longitude at ``lat0``."""
        return _M_PER_DEG * math.cos(math.radians(self.lat0))

    @property
    def m_per_deg_lat(self) -> float:
        """Return metres per degree of latitude."""
        return _M_PER_DEG

    def forward(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (x_m, y_m) of lon/lat arrays."""
        lon = np.asarray(lon, dtype=float)
        lat = np.asarray(lat, dtype=float)
        return (lon - self.lon0) * self.m_per_deg_lon, (lat - self.lat0) * self.m_per_deg_lat

    def inverse(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (lon, lat) of metric arrays."""
        x_m = np.asarray(x_m, dtype=float)
        y_m = np.asarray(y_m, dtype=float)
        return x_m / self.m_per_deg_lon + self.lon0, y_m / self.m_per_deg_lat + self.lat0

    def to_metric(self, geom):
        """Return ``geom`` (or an array of geometries) with coordinates in metres."""

        def fwd(xy: np.ndarray) -> np.ndarray:
            x, y = self.forward(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return shapely.transform(geom, fwd)

    def to_lonlat(self, geom):
        """Return ``geom`` (or an array of geometries) with coordinates in lon/lat."""

        def inv(xy: np.ndarray) -> np.ndarray:
            lon, lat = self.inverse(xy[:, 0], xy[:, 1])
            return np.column_stack([lon, lat])

        return shapely.transform(geom, inv)


@dataclass(frozen=True)
class Kernel:
    """One isotropic Gaussian bump of population density.

    ``peak_per_km2`` is the density added at the centre; it falls to ~61 % at
    ``sigma_m`` metres. It holds ``peak_per_km2 * 2 * pi * sigma_km**2`` people in all.
    """

    lon: float
    lat: float
    peak_per_km2: float
    sigma_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lon) and math.isfinite(self.lat)):
            raise ValueError("kernel centre must be finite")
        if not (math.isfinite(self.peak_per_km2) and self.peak_per_km2 >= 0):
            raise ValueError(f"peak_per_km2 must be finite and >= 0, got {self.peak_per_km2}")
        if not (math.isfinite(self.sigma_m) and self.sigma_m > 0):
            raise ValueError(f"sigma_m must be finite and > 0, got {self.sigma_m}")


@dataclass(frozen=True)
class PopulationSurface:
    """Population density, people per km²: ``base_per_km2`` plus a sum of kernels.

    Calling the surface is the same as :meth:`density`, so it can be passed wherever a
    ``density(lon, lat)`` function is expected.
    """

    kernels: tuple[Kernel, ...] = ()
    base_per_km2: float = 0.0
    _arrays: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(self.kernels))
        if not (math.isfinite(self.base_per_km2) and self.base_per_km2 >= 0):
            raise ValueError(f"base_per_km2 must be finite and >= 0, got {self.base_per_km2}")
        ks = self.kernels
        arrays = (
            np.array([k.lon for k in ks], dtype=float),
            np.array([k.lat for k in ks], dtype=float),
            np.array([k.peak_per_km2 for k in ks], dtype=float),
            np.array([k.sigma_m for k in ks], dtype=float),
        )
        object.__setattr__(self, "_arrays", arrays)

    def density(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return the density in people per km² at each lon/lat (arrays broadcast)."""
        lon, lat = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        out = np.full(lon.shape, float(self.base_per_km2))
        klon, klat, peak, sigma = self._arrays
        for i in range(len(klon)):
            # Distances in each kernel's own equirectangular frame: exact enough within
            # a few sigma, and keeps the surface independent of any caller's frame.
            dx = (lon - klon[i]) * (_M_PER_DEG * math.cos(math.radians(klat[i])))
            dy = (lat - klat[i]) * _M_PER_DEG
            out += peak[i] * np.exp(-(dx * dx + dy * dy) / (2.0 * sigma[i] * sigma[i]))
        return out

    __call__ = density

    def estimate_population(self, geom: BaseGeometry, *, samples: int = 4096) -> float:
        """Return the number of people living in ``geom`` (lon/lat polygon).

        The mean density over a regular lattice of about ``samples`` points inside the
        polygon, laid in the polygon's :class:`LocalFrame`, times the polygon's exact area.
        Deterministic. A polygon too small to catch a lattice point is valued at the
        density of its representative point.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if geom is None or geom.is_empty:
            return 0.0
        frame = LocalFrame.around(geom)
        geom_m = frame.to_metric(geom)
        area_m2 = float(geom_m.area)
        if area_m2 <= 0:
            return 0.0
        x_m, y_m = lattice_points(geom_m, math.sqrt(area_m2 / samples))
        if len(x_m) == 0:
            p = shapely.point_on_surface(geom)
            mean = float(self.density(np.array([p.x]), np.array([p.y]))[0])
        else:
            lon, lat = frame.inverse(x_m, y_m)
            mean = float(self.density(lon, lat).mean())
        return mean * area_m2 / 1e6


def lattice_points(geom_m: BaseGeometry, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (x_m, y_m) of the square lattice points of ``spacing_m`` inside ``geom_m``.

    The lattice starts half a spacing in from the bounding box's south-west corner, so
    it depends only on the geometry and the spacing.
    """
    minx, miny, maxx, maxy = geom_m.bounds
    xs = np.arange(minx + 0.5 * spacing_m, maxx, spacing_m)
    ys = np.arange(miny + 0.5 * spacing_m, maxy, spacing_m)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    shapely.prepare(geom_m)
    inside = shapely.contains_xy(geom_m, gx, gy)
    return gx[inside], gy[inside]


def random_surface(
    polygon: BaseGeometry,
    *,
    seed: int,
    n_centres: int = 8,
    seat: tuple[float, float] | None = None,
    seat_peak_per_km2: float = 4000.0,
    seat_sigma_m: float | None = None,
    peak_range_per_km2: tuple[float, float] = (150.0, 1200.0),
    sigma_range_m: tuple[float, float] | None = None,
    base_per_km2: float = 60.0,
) -> PopulationSurface:
    """Return a seeded :class:`PopulationSurface` with town centres inside ``polygon``.

    Parameters
    ----------
    polygon
        Lon/lat Polygon or MultiPolygon the centres are placed in (uniformly, by area).
    seed
        Seed of the generator; the same arguments give the same surface.
    n_centres
        Number of secondary centres (townships, villages).
    seat
        Optional (lon, lat) of a dominant centre, e.g. the county seat; it need not lie
        inside ``polygon``.
    seat_peak_per_km2, seat_sigma_m
        Peak density and spread of the dominant centre. ``seat_sigma_m`` defaults to
        5 % of the square root of the polygon's area (2.2 km for a 2,000 km² county).
    peak_range_per_km2, sigma_range_m
        Uniform ranges the secondary centres' peaks and spreads are drawn from.
        ``sigma_range_m`` defaults to 3–8 % of the square root of the polygon's area.
    base_per_km2
        Rural density everywhere.
    """
    if n_centres < 0:
        raise ValueError(f"n_centres must be >= 0, got {n_centres}")
    if polygon is None or polygon.is_empty or polygon.area <= 0:
        raise ValueError("polygon must be a non-empty areal geometry")
    frame = LocalFrame.around(polygon)
    size_m = math.sqrt(frame.to_metric(polygon).area)
    if seat_sigma_m is None:
        seat_sigma_m = 0.05 * size_m
    if sigma_range_m is None:
        sigma_range_m = (0.03 * size_m, 0.08 * size_m)
    rng = np.random.default_rng(seed)
    kernels: list[Kernel] = []
    if seat is not None:
        kernels.append(Kernel(float(seat[0]), float(seat[1]), seat_peak_per_km2, seat_sigma_m))
    minx, miny, maxx, maxy = polygon.bounds
    shapely.prepare(polygon)
    lon = np.empty(0)
    lat = np.empty(0)
    # Rejection sampling in the bounding box; a few rounds suffice for any county shape.
    for _ in range(64):
        if len(lon) >= n_centres:
            break
        cx = rng.uniform(minx, maxx, 4 * n_centres + 16)
        cy = rng.uniform(miny, maxy, 4 * n_centres + 16)
        keep = shapely.contains_xy(polygon, cx, cy)
        lon = np.concatenate([lon, cx[keep]])
        lat = np.concatenate([lat, cy[keep]])
    if len(lon) < n_centres:
        p = shapely.point_on_surface(polygon)
        pad = n_centres - len(lon)
        lon = np.concatenate([lon, np.full(pad, p.x)])
        lat = np.concatenate([lat, np.full(pad, p.y)])
    peaks = rng.uniform(*peak_range_per_km2, n_centres)
    sigmas = rng.uniform(*sigma_range_m, n_centres)
    for i in range(n_centres):
        kernels.append(Kernel(float(lon[i]), float(lat[i]), float(peaks[i]), float(sigmas[i])))
    return PopulationSurface(tuple(kernels), base_per_km2)


def apportion(total: int, weights: Sequence[float], *, minimum: int = 1) -> list[int]:
    """Return integers, one per weight, at least ``minimum`` each, summing to ``total``.

    Largest-remainder (Hamilton) apportionment. Entries whose proportional quota falls
    below ``minimum`` are fixed at ``minimum`` and the rest is apportioned among the
    others in proportion to their weights; leftover units go to the largest fractional
    remainders, ties to the lower index. All-zero weights share equally.

    Raises
    ------
    ValueError
        If ``weights`` is empty, has a negative or non-finite entry, ``minimum`` is
        negative, or ``total < minimum * len(weights)``.

    Examples
    --------
    >>> apportion(10, [1, 1, 1])
    [4, 3, 3]
    >>> apportion(5, [100, 0, 0])
    [3, 1, 1]
    """
    if isinstance(total, bool) or int(total) != total:
        raise ValueError(f"total must be an integer, got {total!r}")
    total = int(total)
    w = np.asarray(list(weights), dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError("weights must be a non-empty sequence of numbers")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    if minimum < 0:
        raise ValueError(f"minimum must be >= 0, got {minimum}")
    n = w.size
    if total < minimum * n:
        raise ValueError(
            f"cannot give {n} entries at least {minimum} each from a total of {total} "
            f"(needs {minimum * n})"
        )
    if w.sum() == 0:
        w = np.ones(n)
    fixed = np.zeros(n, dtype=bool)
    while True:
        free = ~fixed
        remaining = total - minimum * int(fixed.sum())
        wsum = w[free].sum()
        quota = np.zeros(n)
        if wsum > 0:
            quota[free] = remaining * w[free] / wsum
        newly = free & (quota < minimum)
        if not newly.any():
            break
        fixed |= newly
    result = np.where(fixed, minimum, np.floor(quota)).astype(np.int64)
    short = total - int(result.sum())
    if short > 0:
        frac = np.where(fixed, -1.0, quota - np.floor(quota))
        order = np.argsort(-frac, kind="stable")
        result[order[:short]] += 1
    return [int(v) for v in result]

"""Plan metrics: what a set of grids does to balance, compactness and nesting.

Pure: numpy, pandas and shapely 2 array functions. The measures are those redistricting
tools report (Dave's Redistricting App, GerryChain, maup), per grid and for the plan:

- **load**: population, households, units, incidents per year, and incidents per year per
  team member, each with its deviation from the plan's mean (``value / mean - 1``);
- **shape**: area, perimeter, Polsby–Popper ``4πA/P²``, Reock ``A / (π r²)`` with ``r`` the
  radius of the minimum bounding circle, and the convex-hull ratio ``A / A_hull``; all in a
  :class:`~geo.population.LocalFrame` (metres);
- **contiguity**: the number of polygon parts (a contiguous grid has one);
- **nesting**: the communities a grid overlaps by more than a sliver, and how many beyond
  the first it straddles (a valid plan straddles none).

Loads are counted from points: entities (households, units, incidents) as they stand, and
population as weighted sample points (:func:`population_points` spreads an estimate over
its polygon, e.g. a community's ``population_estimate``). A point on a shared edge is
counted in both grids (``covers``): rare with real coordinates.

Interactive edits change a few grids of thousands: :func:`update_plan_metrics` measures only
the changed grids and re-derives the deviations and the plan summary from the kept rows.

Examples
--------
>>> import numpy as np
>>> from shapely.geometry import box
>>> from geo.population import LocalFrame
>>> frame = LocalFrame(0.0, 0.0)
>>> cells = frame.to_lonlat(np.array([box(0, 0, 1000, 1000), box(1000, 0, 2000, 1000)]))
>>> ctx = PlanContext(frame=frame)
>>> m = plan_metrics(["a", "b"], cells, context=ctx)
>>> round(float(m.grids.loc["a", "polsby_popper"]), 3)
0.785
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from geo.population import LocalFrame, lattice_points

__all__ = [
    "STANDARD_TEAM",
    "LOAD_MEASURES",
    "PointLayer",
    "PlanContext",
    "PlanMetrics",
    "population_points",
    "dasymetric_population",
    "measure_shapes",
    "count_in_grids",
    "count_communities",
    "measure_grids",
    "summarize_plan",
    "plan_metrics",
    "update_plan_metrics",
]

#: A grid's team when nobody is assigned yet: the "1+1+1" of instructor, manager, officer.
STANDARD_TEAM = 3
#: The load measures, each with a ``<name>_dev`` column (deviation from the plan's mean).
LOAD_MEASURES = (
    "population",
    "households",
    "units",
    "incidents_per_year",
    "incidents_per_member",
)
#: Share of a grid's area below which an overlap with a community counts as a sliver.
SLIVER_SHARE = 1e-3
#: A grid within this many metres of a community lies in it (no overlap is measured).
LOOSE_M = 1.0

_POINT_LAYERS = ("households", "units", "incidents")


@dataclass(frozen=True)
class PointLayer:
    """Points in lon/lat, optionally weighted (a missing weight counts 1)."""

    lon: np.ndarray
    lat: np.ndarray
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        lon = np.asarray(self.lon, dtype=float).ravel()
        lat = np.asarray(self.lat, dtype=float).ravel()
        if lon.shape != lat.shape:
            raise ValueError(f"lon and lat differ in length: {lon.size} and {lat.size}")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        if self.weight is not None:
            w = np.asarray(self.weight, dtype=float).ravel()
            if w.shape != lon.shape:
                raise ValueError(f"weight has {w.size} values for {lon.size} points")
            object.__setattr__(self, "weight", w)

    @classmethod
    def empty(cls) -> PointLayer:
        return cls(np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return int(self.lon.size)


@dataclass
class PlanContext:
    """What grids are measured against; built once per area, reused across edits.

    Parameters
    ----------
    frame
        Metric frame for areas and lengths (:meth:`LocalFrame.around` the area).
    communities
        ``{code: lon/lat geometry}`` of the communities the grids must nest in.
    population, households, units, incidents
        Point layers; ``population`` is weighted (:func:`population_points`).
    incident_years
        The span the incidents cover, in years (incidents per year = count / span).
    """

    frame: LocalFrame
    communities: Mapping[str, BaseGeometry] = field(default_factory=dict)
    population: PointLayer = field(default_factory=PointLayer.empty)
    households: PointLayer = field(default_factory=PointLayer.empty)
    units: PointLayer = field(default_factory=PointLayer.empty)
    incidents: PointLayer = field(default_factory=PointLayer.empty)
    incident_years: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.incident_years) and self.incident_years > 0):
            raise ValueError(f"incident_years must be > 0, got {self.incident_years}")
        self._trees: dict[str, shapely.STRtree] = {}
        codes = list(self.communities)
        self._community_codes = np.array(codes, dtype=object)
        self._community_geoms = np.array([self.communities[c] for c in codes], dtype=object)
        self._community_tree = shapely.STRtree(self._community_geoms)

    def _loose_tree(self) -> shapely.STRtree:
        """Return the index of the communities grown by :data:`LOOSE_M` (made once)."""
        tree = self._trees.get("loose communities")
        if tree is None:
            grow = LOOSE_M / self.frame.m_per_deg_lat
            tree = shapely.STRtree(shapely.buffer(self._community_geoms, grow, quad_segs=2))
            self._trees["loose communities"] = tree
        return tree

    def _layer(self, name: str) -> PointLayer:
        return getattr(self, name)

    def _tree(self, name: str) -> shapely.STRtree:
        tree = self._trees.get(name)
        if tree is None:
            layer = self._layer(name)
            tree = shapely.STRtree(shapely.points(layer.lon, layer.lat))
            self._trees[name] = tree
        return tree


@dataclass(frozen=True)
class PlanMetrics:
    """Per-grid measures (``grids``, indexed by grid code) and the plan's summary."""

    grids: pd.DataFrame
    plan: dict

    def grid_records(self) -> list[dict]:
        """Return the per-grid rows as JSON-ready dicts (``code`` first, NaN as None)."""
        frame = self.grids.reset_index().rename(columns={"index": "code"})
        frame = frame.astype(object).where(frame.notna(), None)
        return frame.to_dict(orient="records")


def population_points(
    geoms: Sequence[BaseGeometry],
    values: Sequence[float],
    *,
    frame: LocalFrame,
    samples: int = 64,
) -> PointLayer:
    """Return weighted sample points spreading each value evenly over its polygon.

    About ``samples`` lattice points per polygon (at least its representative point),
    each weighted ``value / n``: the areal interpolation of maup, as points.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    arr = np.asarray(list(geoms), dtype=object)
    vals = np.asarray(values, dtype=float)
    if vals.shape != arr.shape:
        raise ValueError(f"{vals.size} values for {arr.size} polygons")
    lons, lats, weights = [], [], []
    metric = frame.to_metric(arr) if arr.size else arr
    for g_m, value in zip(metric, vals, strict=True):
        if g_m is None or g_m.is_empty or value == 0:
            continue
        x, y = lattice_points(g_m, math.sqrt(g_m.area / samples)) if g_m.area > 0 else ([], [])
        if len(x) == 0:
            p = shapely.point_on_surface(g_m)
            x, y = np.array([p.x]), np.array([p.y])
        lon, lat = frame.inverse(x, y)
        lons.append(lon)
        lats.append(lat)
        weights.append(np.full(len(lon), value / len(lon)))
    if not lons:
        return PointLayer.empty()
    return PointLayer(np.concatenate(lons), np.concatenate(lats), np.concatenate(weights))


def dasymetric_population(
    geoms: Sequence[BaseGeometry],
    values: Sequence[float],
    where: PointLayer,
    *,
    frame: LocalFrame,
    min_points: int = 20,
    samples: int = 64,
) -> PointLayer:
    """Return weighted points spreading each polygon's value over the points of ``where``
    inside it (people live where incidents, households and units are), evenly over its
    area (:func:`population_points`) when it holds fewer than ``min_points`` of them.
    """
    arr = np.asarray(list(geoms), dtype=object)
    vals = np.asarray(values, dtype=float)
    if vals.shape != arr.shape:
        raise ValueError(f"{vals.size} values for {arr.size} polygons")
    owner = np.full(len(where), -1)
    if len(where) and arr.size:
        pi, gi = shapely.STRtree(arr).query(
            shapely.points(where.lon, where.lat), predicate="within"
        )
        owner[pi] = gi
    counts = np.bincount(owner[owner >= 0], minlength=arr.size)
    dense = counts >= min_points
    sel = (owner >= 0) & dense[np.maximum(owner, 0)]
    w = np.where(sel, vals[np.maximum(owner, 0)] / np.maximum(counts[np.maximum(owner, 0)], 1), 0)
    sparse = population_points(arr[~dense], vals[~dense], frame=frame, samples=samples)
    weight = sparse.weight if sparse.weight is not None else np.empty(0)
    return PointLayer(
        np.concatenate([where.lon[sel], sparse.lon]),
        np.concatenate([where.lat[sel], sparse.lat]),
        np.concatenate([w[sel], weight]),
    )


def measure_shapes(geoms_m) -> pd.DataFrame:
    """Return area, perimeter, compactness and parts of metric geometries, one row each.

    Columns: ``area_m2``, ``perimeter_m``, ``polsby_popper``, ``reock``,
    ``convex_hull_ratio``, ``parts``, ``contiguous``. An empty geometry scores 0 and 0 parts.
    """
    g = np.asarray(geoms_m, dtype=object)
    area = shapely.area(g)
    perimeter = shapely.length(g)
    radius = shapely.minimum_bounding_radius(g)
    hull = shapely.area(shapely.convex_hull(g))
    parts = np.where(shapely.is_empty(g), 0, shapely.get_num_geometries(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        pp = np.where(perimeter > 0, 4.0 * np.pi * area / perimeter**2, 0.0)
        reock = np.where(radius > 0, area / (np.pi * radius**2), 0.0)
        hull_ratio = np.where(hull > 0, area / hull, 0.0)
    return pd.DataFrame(
        {
            "area_m2": area,
            "perimeter_m": perimeter,
            "polsby_popper": pp,
            "reock": reock,
            "convex_hull_ratio": hull_ratio,
            "parts": parts.astype(int),
            "contiguous": parts == 1,
        }
    )


def count_in_grids(geoms, layer: PointLayer, *, tree: shapely.STRtree | None = None) -> np.ndarray:
    """Return the (weighted) number of ``layer``'s points each lon/lat geometry covers."""
    g = np.asarray(geoms, dtype=object)
    out = np.zeros(g.size)
    if g.size == 0 or len(layer) == 0:
        return out
    if tree is None:
        tree = shapely.STRtree(shapely.points(layer.lon, layer.lat))
    gi, pi = tree.query(g, predicate="covers")
    w = np.ones(pi.size) if layer.weight is None else layer.weight[pi]
    np.add.at(out, gi, w)
    return out


def count_communities(geoms, context: PlanContext) -> tuple[np.ndarray, np.ndarray]:
    """Return, per lon/lat geometry, the main community's code and the communities it overlaps.

    The main community holds the largest share of the grid; overlaps smaller than
    :data:`SLIVER_SHARE` of the grid's area are ignored. A grid outside every community
    has ``None`` and 0.
    """
    g = np.asarray(geoms, dtype=object)
    n = g.size
    main = np.full(n, None, dtype=object)
    count = np.zeros(n, dtype=int)
    if n == 0 or context._community_codes.size == 0:
        return main, count
    tree = context._community_tree
    cg = context._community_geoms
    # Cheap first: a grid within a community (edges may touch) straddles nothing; so does
    # one within a metre of it (coordinates computed apart differ in their last bits).
    wi, wc = context._loose_tree().query(g, predicate="within")
    main[wi] = context._community_codes[wc]
    count[wi] = 1
    rest = np.flatnonzero(count == 0)
    if rest.size:
        ri, rc = tree.query(g[rest], predicate="intersects")
        gi = rest[ri]
        frame = context.frame
        inter = shapely.area(frame.to_metric(shapely.intersection(g[gi], cg[rc])))
        total = shapely.area(frame.to_metric(g[gi]))
        keep = inter > SLIVER_SHARE * np.maximum(total, 1e-9)
        gi, rc, inter = gi[keep], rc[keep], inter[keep]
        np.add.at(count, gi, 1)
        order = np.lexsort((-inter, gi))
        first = np.ones(order.size, dtype=bool)
        first[1:] = gi[order][1:] != gi[order][:-1]
        main[gi[order][first]] = context._community_codes[rc[order][first]]
    return main, count


def measure_grids(
    codes: Sequence[str],
    geoms: Sequence[BaseGeometry],
    *,
    context: PlanContext,
    team_sizes: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Return the raw measures of lon/lat grids (no deviations), indexed by code.

    Columns: the shape measures of :func:`measure_shapes`, ``population``, ``households``,
    ``units``, ``incidents_per_year``, ``team_members`` (from ``team_sizes``, else
    :data:`STANDARD_TEAM`), ``incidents_per_member``, ``community_code``, ``communities``
    and ``straddles`` (communities beyond the first).
    """
    codes = [str(c) for c in codes]
    g = np.asarray(list(geoms), dtype=object)
    if g.size != len(codes):
        raise ValueError(f"{len(codes)} codes for {g.size} geometries")
    if len(set(codes)) != len(codes):
        raise ValueError("grid codes must be unique")
    shapes = measure_shapes(context.frame.to_metric(g) if g.size else g)
    shapes.index = pd.Index(codes, dtype=object)
    shapes["population"] = count_in_grids(g, context.population, tree=context._tree("population"))
    for name in _POINT_LAYERS:
        counts = count_in_grids(g, context._layer(name), tree=context._tree(name))
        if name == "incidents":
            shapes["incidents_per_year"] = counts / context.incident_years
        else:
            shapes[name] = counts
    sizes = team_sizes or {}
    shapes["team_members"] = np.array([int(sizes.get(c, STANDARD_TEAM)) for c in codes])
    with np.errstate(divide="ignore", invalid="ignore"):
        shapes["incidents_per_member"] = np.where(
            shapes["team_members"] > 0,
            shapes["incidents_per_year"] / shapes["team_members"].clip(lower=1),
            np.nan,
        )
    main, count = count_communities(g, context)
    shapes["community_code"] = main
    shapes["communities"] = count
    shapes["straddles"] = np.maximum(count - 1, 0)
    return shapes


def summarize_plan(raw: pd.DataFrame) -> PlanMetrics:
    """Return the metrics with deviations from the plan's means and the plan's summary.

    ``<measure>_dev = value / mean - 1`` over the plan, and
    ``population_dev_in_community``: the deviation from the mean of the grid's community
    (what a plan nested in communities can balance). The summary holds the number of grids,
    totals and means, the largest absolute deviation of each load, compactness means and
    minima, and the counts of non-contiguous and straddling grids.
    """
    grids = raw.copy()
    plan: dict = {"grids": int(len(grids))}
    for m in LOAD_MEASURES:
        values = grids[m].astype(float)
        mean = float(values.mean()) if len(values) else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            grids[f"{m}_dev"] = values / mean - 1.0 if mean > 0 else np.where(values > 0, np.inf, 0)
        plan[f"{m}_total"] = float(values.sum())
        plan[f"{m}_mean"] = mean
        plan[f"{m}_max_abs_dev"] = float(grids[f"{m}_dev"].abs().max()) if len(grids) else 0.0
    if len(grids):
        by_comm = grids.groupby(grids["community_code"].fillna(""))["population"].transform("mean")
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.where(by_comm > 0, grids["population"] / by_comm - 1.0, 0.0)
        grids["population_dev_in_community"] = dev
        plan["population_max_abs_dev_in_community"] = float(np.abs(dev).max())
    else:
        grids["population_dev_in_community"] = pd.Series(dtype=float)
        plan["population_max_abs_dev_in_community"] = 0.0
    plan["area_m2_total"] = float(grids["area_m2"].sum())
    for m in ("polsby_popper", "reock", "convex_hull_ratio"):
        plan[f"{m}_mean"] = float(grids[m].mean()) if len(grids) else 0.0
        plan[f"{m}_min"] = float(grids[m].min()) if len(grids) else 0.0
    plan["noncontiguous"] = int((~grids["contiguous"].astype(bool)).sum())
    plan["straddling"] = int((grids["straddles"] > 0).sum())
    plan["outside_communities"] = int((grids["communities"] == 0).sum())
    return PlanMetrics(grids=grids, plan=plan)


def plan_metrics(
    codes: Sequence[str],
    geoms: Sequence[BaseGeometry],
    *,
    context: PlanContext,
    team_sizes: Mapping[str, int] | None = None,
) -> PlanMetrics:
    """Return the metrics of a whole plan: every grid measured, then summarized."""
    return summarize_plan(measure_grids(codes, geoms, context=context, team_sizes=team_sizes))


def update_plan_metrics(
    metrics: PlanMetrics,
    *,
    changed: Mapping[str, BaseGeometry],
    removed: Iterable[str] = (),
    context: PlanContext,
    team_sizes: Mapping[str, int] | None = None,
) -> PlanMetrics:
    """Return ``metrics`` after an edit: ``removed`` grids dropped, ``changed`` (new or
    reshaped) grids measured afresh, deviations and summary re-derived.

    Only the changed grids are measured, so a split or merge in a plan of thousands of
    grids costs about as much as measuring two or three.
    """
    drop = set(removed) | set(changed)
    raw_cols = [c for c in metrics.grids.columns if not c.endswith("_dev") and "_dev_" not in c]
    kept = metrics.grids.loc[~metrics.grids.index.isin(drop), raw_cols]
    fresh = measure_grids(
        list(changed), list(changed.values()), context=context, team_sizes=team_sizes
    )
    frames = [f for f in (kept, fresh) if len(f)]
    raw = pd.concat(frames) if frames else fresh
    return summarize_plan(raw)

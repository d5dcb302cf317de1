"""Edit a plan's grids: split, merge, move an edge, reassign territory, replace them all.

Pure: shapely only (and :func:`geo.partition.partition_polygon` for balanced splits). Each
edit takes the grids it touches (:class:`PlanGrid`, lon/lat) and returns an
:class:`EditResult`, the keys it removes and the grids it adds, or raises
:class:`PlanEditError` naming why it refuses (``reason``, one of :data:`REASONS`) and the
input at fault (``field``). Nothing else is read: an edit of a 3,000-grid plan costs what
its two or three grids cost.

Every edit keeps the partition valid. The grids it adds:

- are valid single Polygons (a self-intersecting or multipart input is refused, and so is
  an edit that would leave a grid in pieces);
- cover exactly the territory of the grids they replace (within :attr:`Tolerance.area_m2`):
  no gap and no overlap appears, since the rest of the plan is untouched;
- stay in their community: grids of two communities are never merged or traded, and a
  replacement set nests in the communities it is given;
- are no slivers: at least :attr:`Tolerance.min_area_m2` and, as a strip, at least
  :attr:`Tolerance.min_width_m` wide (width ≈ 2·area / perimeter).

Snapping: a drawn line or region is snapped to the vertices of the grids it edits within
:attr:`Tolerance.snap_m`, and a line's ends are extended by as much, so a line drawn to a
corner or just short of the boundary still cuts. Results reuse the grids' own vertices
(shapely overlays), so neighbours keep identical shared edges; specks left by floating point
(holes and parts under the area tolerance) are dropped.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from geo.partition import PartitionError, order_west_east_north_south, partition_polygon
from geo.population import LocalFrame

__all__ = [
    "REASONS",
    "PlanEditError",
    "PlanGrid",
    "EditResult",
    "Tolerance",
    "parse_line",
    "parse_polygon",
    "split_by_line",
    "split_into",
    "merge_grids",
    "move_edge",
    "reassign_territory",
    "replace_all",
    "check_replacement",
    "check_partition",
    "read_grid_file",
]

#: Why an edit is refused (``PlanEditError.reason``).
REASONS = {
    "invalid_geometry": "the geometry is malformed or not of the kind the edit takes",
    "self_intersecting": "the geometry crosses itself",
    "multipart": "a grid must be one polygon; the geometry or the result has several parts",
    "line_misses": "the line does not cut the grid(s) from boundary to boundary",
    "region_misses": "the region does not overlap the grid",
    "not_adjacent": "the grids (or the territory and its new grid) do not share an edge",
    "crosses_community": "the edit would put territory of one community in another's grid",
    "gap": "the edit would leave territory in no grid",
    "overlap": "the edit would put territory in two grids",
    "sliver": "a resulting grid is too small or too thin",
    "too_many_parts": "a grid cannot be split into that many parts",
    "unknown_grid": "the edit names a grid that is not in the plan",
}


class PlanEditError(ValueError):
    """An edit refused: ``reason`` (a key of :data:`REASONS`), a message, the ``field`` at
    fault and the ``keys`` of the grids concerned."""

    def __init__(
        self, reason: str, message: str, *, field: str | None = None, keys: Sequence[str] = ()
    ):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        self.keys = list(keys)


@dataclass(frozen=True)
class PlanGrid:
    """One grid of a plan: ``key`` (None for a grid an edit adds), its base ``code`` while
    unchanged (else None), its community ``parent_code``, ``name`` and lon/lat ``geom``."""

    key: str | None
    parent_code: str
    name: str
    geom: BaseGeometry
    code: str | None = None


@dataclass(frozen=True)
class EditResult:
    """What an edit does: the keys it ``removed`` and the grids it ``added`` (a grid that
    keeps its key, reshaped, is both removed and added)."""

    removed: list[str]
    added: list[PlanGrid]


@dataclass(frozen=True)
class Tolerance:
    """How exact an edit must be, in metres."""

    #: Coverage may differ by this much area (floating point of overlays on lon/lat).
    area_m2: float = 1.0
    #: A grid smaller than this is a sliver.
    min_area_m2: float = 100.0
    #: A grid thinner than this (2·area / perimeter) is a sliver.
    min_width_m: float = 5.0
    #: Drawn vertices this close to a grid's vertex are snapped onto it.
    snap_m: float = 1.0

    def __post_init__(self) -> None:
        for name in ("area_m2", "min_area_m2", "min_width_m", "snap_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


DEFAULT_TOLERANCE = Tolerance()


# --------------------------------------------------------------------------- input


def _geometry_of(raw, field_name: str) -> BaseGeometry:
    if isinstance(raw, BaseGeometry):
        geom = raw
    else:
        if not isinstance(raw, dict) or "type" not in raw:
            raise PlanEditError(
                "invalid_geometry", f"{field_name}: not a GeoJSON geometry", field=field_name
            )
        try:
            geom = shape(raw)
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise PlanEditError(
                "invalid_geometry",
                f"{field_name}: malformed coordinates ({exc.__class__.__name__})",
                field=field_name,
            ) from None
    if geom.is_empty:
        raise PlanEditError("invalid_geometry", f"{field_name}: is empty", field=field_name)
    # Heights ([lon, lat, z] from a 3D-aware tool, PolygonZ from QGIS) mean nothing to a
    # grid and overlays would carry them into grids the 2D table refuses: drop them.
    if shapely.has_z(geom):
        geom = shapely.force_2d(geom)
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise PlanEditError(
            "invalid_geometry", f"{field_name}: has a non-finite coordinate", field=field_name
        )
    if (np.abs(coords[:, 0]) > 180).any() or (np.abs(coords[:, 1]) > 90).any():
        raise PlanEditError(
            "invalid_geometry",
            f"{field_name}: coordinates are outside lon [-180, 180] / lat [-90, 90]",
            field=field_name,
        )
    return geom


def parse_line(raw, field_name: str = "line") -> LineString:
    """Return a simple LineString from GeoJSON (or shapely); refuse multipart, self-crossing."""
    geom = _geometry_of(raw, field_name)
    if geom.geom_type == "MultiLineString":
        raise PlanEditError(
            "multipart", f"{field_name}: one LineString, not a {geom.geom_type}", field=field_name
        )
    if geom.geom_type != "LineString":
        raise PlanEditError(
            "invalid_geometry",
            f"{field_name}: must be a LineString, not a {geom.geom_type}",
            field=field_name,
        )
    if not geom.is_simple:
        raise PlanEditError(
            "self_intersecting", f"{field_name}: the line crosses itself", field=field_name
        )
    return geom


def parse_polygon(raw, field_name: str = "region") -> Polygon:
    """Return a valid single Polygon from GeoJSON (or shapely); refuse multipart and
    self-intersecting rings, naming where."""
    return _one_polygon(_geometry_of(raw, field_name), field_name)


def _one_polygon(geom: BaseGeometry, field_name: str, label: str | None = None) -> Polygon:
    """Return ``geom`` as one valid Polygon (a MultiPolygon of one part is its part), or
    refuse it: ``multipart``, ``invalid_geometry`` or ``self_intersecting``, saying
    ``label`` (default ``field_name``) and naming ``field_name``."""
    label = label or field_name
    if isinstance(geom, MultiPolygon):
        if len(geom.geoms) != 1:
            raise PlanEditError(
                "multipart",
                f"{label}: must be one Polygon, not a MultiPolygon of {len(geom.geoms)} parts",
                field=field_name,
            )
        geom = geom.geoms[0]
    if not isinstance(geom, Polygon):
        raise PlanEditError(
            "invalid_geometry",
            f"{label}: must be a Polygon, not a {geom.geom_type}",
            field=field_name,
        )
    if not geom.is_valid:
        why = shapely.is_valid_reason(geom)
        reason = "self_intersecting" if "Self-intersection" in why else "invalid_geometry"
        raise PlanEditError(reason, f"{label}: is invalid: {why}", field=field_name)
    return geom


# --------------------------------------------------------------------------- helpers


class _Frame:
    """Metric measures around the edited grids (equirectangular: areas scale by a constant)."""

    def __init__(self, geoms: Iterable[BaseGeometry]):
        arr = np.array(list(geoms), dtype=object)
        self.frame = LocalFrame.around(arr)
        self.m2_per_deg2 = self.frame.m_per_deg_lon * self.frame.m_per_deg_lat
        self.deg_per_m = 1.0 / self.frame.m_per_deg_lat

    def area_m2(self, geom) -> float:
        return float(shapely.area(geom)) * self.m2_per_deg2

    def width_m(self, geom) -> float:
        g = self.frame.to_metric(geom)
        return 2.0 * g.area / g.length if g.length > 0 else 0.0


def _parts(geom: BaseGeometry) -> list[Polygon]:
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def _clean(geom: BaseGeometry, frame: _Frame, tol: Tolerance) -> BaseGeometry:
    """Return ``geom`` without the specks overlays leave: polygon parts and holes whose area
    is under the tolerance, and anything that is not a polygon."""
    parts = []
    for p in _parts(geom):
        if frame.area_m2(p) <= tol.area_m2:
            continue
        holes = [h for h in p.interiors if frame.area_m2(Polygon(h)) > tol.area_m2]
        parts.append(Polygon(p.exterior, holes) if len(holes) != len(p.interiors) else p)
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _single(geom: BaseGeometry, key: str | None, what: str) -> Polygon:
    parts = _parts(geom)
    if len(parts) != 1:
        raise PlanEditError(
            "multipart",
            f"{what} would be {len(parts)} separate pieces; a grid must be one polygon",
            keys=[key] if key else [],
        )
    return parts[0]


def _same_community(grids: Sequence[PlanGrid]) -> str:
    parents = sorted({g.parent_code for g in grids})
    if len(parents) > 1:
        raise PlanEditError(
            "crosses_community",
            f"grids {', '.join(str(g.key) for g in grids)} lie in communities "
            f"{', '.join(parents)}; an edit keeps each grid in its community",
            keys=[g.key for g in grids if g.key],
        )
    return parents[0]


def _snap(geom: BaseGeometry, grids: Sequence[PlanGrid], frame: _Frame, tol: Tolerance):
    """Return ``geom`` with each of its vertices within the tolerance of a grid vertex moved
    onto the nearest one.

    Vertex to vertex only: GEOS's ``snap`` also inserts the grid vertices that lie near a
    drawn segment, and where a boundary's vertices are closer than the tolerance it walks
    the line along the boundary from one to the next (slivers, and minutes on a dense one).
    """
    if tol.snap_m <= 0:
        return geom
    ref = np.unique(shapely.get_coordinates([g.geom for g in grids]), axis=0)
    tree = shapely.STRtree(shapely.points(ref))
    max_deg = tol.snap_m * frame.deg_per_m

    def onto(xy: np.ndarray) -> np.ndarray:
        near, hit = tree.query_nearest(shapely.points(xy), max_distance=max_deg, all_matches=False)
        out = xy.copy()
        out[near] = ref[hit]
        return out

    return shapely.transform(geom, onto)


def _extend(line: LineString, by_deg: float) -> LineString:
    """Return ``line`` with both ends pushed out by ``by_deg`` along their last segments."""
    if by_deg <= 0:
        return line
    xy = np.asarray(line.coords, dtype=float)

    def push(end: np.ndarray, inner: np.ndarray) -> np.ndarray:
        d = end - inner
        n = math.hypot(*d)
        return end if n == 0 else end + d / n * by_deg

    xy[0] = push(xy[0], xy[1])
    xy[-1] = push(xy[-1], xy[-2])
    return LineString(xy)


def _cut(polygon: BaseGeometry, line: LineString) -> list[Polygon]:
    """Return the faces of ``polygon`` cut along ``line`` (dangling ends are ignored)."""
    edges = shapely.union(shapely.boundary(polygon), line)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(edges)))
    # A face belongs to the polygon if an interior point of it lies in the polygon.
    return [f for f in faces if polygon.covers(shapely.point_on_surface(f))]


def _check_new(grids: Sequence[PlanGrid], frame: _Frame, tol: Tolerance) -> None:
    for g in grids:
        if g.code is not None:
            continue  # a current grid, unchanged: accepted as it is
        if not isinstance(g.geom, Polygon):
            _single(g.geom, g.key, _label(g))
        if not g.geom.is_valid:
            raise _refused(g, "invalid_geometry", f"is invalid: {shapely.is_valid_reason(g.geom)}")
        area = frame.area_m2(g.geom)
        if area < tol.min_area_m2:
            raise _refused(
                g,
                "sliver",
                f"would be {area:.0f} m², under the {tol.min_area_m2:.0f} m² a grid needs",
            )
        width = frame.width_m(g.geom)
        if width < tol.min_width_m:
            raise _refused(
                g,
                "sliver",
                f"would be a strip {width:.1f} m wide, under the {tol.min_width_m:.0f} m a grid "
                "needs",
            )


def _label(g: PlanGrid) -> str:
    return f"grid {g.key}" if g.key else f"new grid {g.name!r}"


def _refused(g: PlanGrid, reason: str, what: str, sep: str = " ") -> PlanEditError:
    """Return the refusal of grid ``g`` (``what`` it would be), naming it and its key."""
    return PlanEditError(reason, f"{_label(g)}{sep}{what}", keys=[g.key] if g.key else [])


def check_replacement(
    old: Sequence[PlanGrid],
    new: Sequence[PlanGrid],
    *,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    communities: dict[str, BaseGeometry] | None = None,
) -> None:
    """Raise :class:`PlanEditError` unless ``new`` may replace ``old`` in a valid partition.

    ``new`` must be valid single polygons, no slivers, not overlapping one another, and
    cover exactly the territory of ``old``; with ``communities`` ({code: geometry}) each new
    grid must lie in its parent community.
    """
    frame = _Frame([g.geom for g in (*old, *new)])
    _check_new(new, frame, tolerance)
    if communities is not None:
        for g in new:
            parent = communities.get(g.parent_code)
            if parent is None:
                raise _refused(
                    g,
                    "crosses_community",
                    f"its community {g.parent_code} is not in the plan's area",
                    sep=": ",
                )
            outside = frame.area_m2(shapely.difference(g.geom, parent))
            if outside > tolerance.area_m2:
                raise _refused(
                    g,
                    "crosses_community",
                    f"{outside:.0f} m² of it lie outside its community {g.parent_code}",
                    sep=": ",
                )
    new_geoms = np.array([g.geom for g in new], dtype=object)
    if len(new) > 1:
        tree = shapely.STRtree(new_geoms)
        left, right = tree.query(new_geoms, predicate="intersects")
        pairs = left < right
        if pairs.any():
            shared = shapely.area(
                shapely.intersection(new_geoms[left[pairs]], new_geoms[right[pairs]])
            )
            worst = int(np.argmax(shared))
            if shared[worst] * frame.m2_per_deg2 > tolerance.area_m2:
                a, b = new[left[pairs][worst]], new[right[pairs][worst]]
                raise PlanEditError(
                    "overlap",
                    f"grids {a.key or a.name!r} and {b.key or b.name!r} would overlap by "
                    f"{shared[worst] * frame.m2_per_deg2:.0f} m²",
                    keys=[k for k in (a.key, b.key) if k],
                )
    before = shapely.union_all([g.geom for g in old])
    after = shapely.union_all(new_geoms)
    gap = frame.area_m2(shapely.difference(before, after))
    if gap > tolerance.area_m2:
        raise PlanEditError(
            "gap",
            f"{gap:.0f} m² of the territory the edit covers would be left in no grid",
            keys=[g.key for g in old if g.key],
        )
    extra = frame.area_m2(shapely.difference(after, before))
    if extra > tolerance.area_m2:
        raise PlanEditError(
            "overlap",
            f"{extra:.0f} m² would be added beyond the territory the edit covers (it belongs "
            "to other grids or to no community of the plan)",
            keys=[g.key for g in old if g.key],
        )


def check_partition(
    grids: Sequence[PlanGrid],
    outline: BaseGeometry,
    *,
    communities: dict[str, BaseGeometry] | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """Raise :class:`PlanEditError` unless ``grids`` tile ``outline`` (a whole plan's check)."""
    check_replacement(
        [PlanGrid(None, "", "outline", outline)],
        grids,
        tolerance=tolerance,
        communities=communities,
    )


def _result(old: Sequence[PlanGrid], new: list[PlanGrid], tol: Tolerance, **kw) -> EditResult:
    check_replacement(old, new, tolerance=tol, **kw)
    return EditResult(removed=[g.key for g in old if g.key], added=new)


def _numbered(name: str, i: int, n: int) -> str:
    return f"{name} ({i}/{n})"


# --------------------------------------------------------------------------- edits


def split_by_line(
    grid: PlanGrid, line, *, tolerance: Tolerance = DEFAULT_TOLERANCE, names=None
) -> EditResult:
    """Return ``grid`` cut by ``line`` (GeoJSON or shapely LineString) into its pieces.

    The line must run across the grid, from boundary to boundary (its ends may stick out;
    within the snap tolerance they may fall short). Pieces are numbered west→east,
    north→south and named ``"<name> (i/n)"`` unless ``names`` are given.
    """
    line = parse_line(line)
    frame = _Frame([grid.geom])
    line = _extend(_snap(line, [grid], frame, tolerance), tolerance.snap_m * frame.deg_per_m)
    faces = _cut(grid.geom, line)
    if len(faces) < 2:
        raise PlanEditError(
            "line_misses",
            f"the line does not cut grid {grid.key} in two: draw it across the grid, from "
            "boundary to boundary",
            field="line",
            keys=[grid.key] if grid.key else [],
        )
    order = order_west_east_north_south(faces)
    faces = [faces[i] for i in order]
    new = [
        PlanGrid(
            None,
            grid.parent_code,
            names[i] if names and i < len(names) else _numbered(grid.name, i + 1, len(faces)),
            _clean(f, frame, tolerance),
        )
        for i, f in enumerate(faces)
    ]
    return _result([grid], new, tolerance)


def split_into(
    grid: PlanGrid,
    parts: int,
    *,
    density: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> EditResult:
    """Return ``grid`` split into ``parts`` compact pieces balanced by ``density`` (people
    per km², :func:`geo.partition.partition_polygon`) or, without one, by area."""
    if isinstance(parts, bool) or not isinstance(parts, int) or not 2 <= parts <= 50:
        raise PlanEditError(
            "too_many_parts",
            f"parts must be an integer from 2 to 50, got {parts!r}",
            field="parts",
        )
    poly = _single(grid.geom, grid.key, f"grid {grid.key}")
    try:
        pieces = partition_polygon(poly, parts, density=density, seed=seed)
    except PartitionError as exc:
        raise PlanEditError(
            "too_many_parts",
            f"grid {grid.key} cannot be split in {parts}: {exc}",
            field="parts",
            keys=[grid.key] if grid.key else [],
        ) from None
    frame = _Frame([grid.geom])
    new = [
        PlanGrid(
            None, grid.parent_code, _numbered(grid.name, i + 1, parts), _clean(p, frame, tolerance)
        )
        for i, p in enumerate(pieces)
    ]
    return _result([grid], new, tolerance)


def merge_grids(
    grids: Sequence[PlanGrid], *, name: str | None = None, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> EditResult:
    """Return ``grids`` (two or more, of one community, together one polygon) merged into one
    grid, named ``name`` or after the first."""
    if len(grids) < 2:
        raise PlanEditError("unknown_grid", "a merge takes two or more grids", field="keys")
    parent = _same_community(grids)
    frame = _Frame([g.geom for g in grids])
    merged = _clean(shapely.union_all([g.geom for g in grids]), frame, tolerance)
    if len(_parts(merged)) != 1:
        raise PlanEditError(
            "not_adjacent",
            f"grids {', '.join(g.key or '' for g in grids)} do not form one connected area: "
            "merge grids that share an edge",
            field="keys",
            keys=[g.key for g in grids if g.key],
        )
    new = [PlanGrid(None, parent, name or grids[0].name, merged)]
    return _result(grids, new, tolerance)


def move_edge(
    a: PlanGrid, b: PlanGrid, line, *, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> EditResult:
    """Return neighbours ``a`` and ``b`` with their shared edge redrawn along ``line``.

    The line runs across the two grids' joint territory; each piece it cuts goes to the grid
    that held most of it. Both grids keep their keys (and lose their codes: they are
    redrawn).
    """
    line = parse_line(line)
    _same_community([a, b])
    frame = _Frame([a.geom, b.geom])
    joint = _clean(shapely.union(a.geom, b.geom), frame, tolerance)
    if len(_parts(joint)) != 1:
        raise PlanEditError(
            "not_adjacent",
            f"grids {a.key} and {b.key} do not share an edge",
            field="keys",
            keys=[a.key, b.key],
        )
    line = _extend(_snap(line, [a, b], frame, tolerance), tolerance.snap_m * frame.deg_per_m)
    faces = _cut(joint, line)
    if len(faces) < 2:
        raise PlanEditError(
            "line_misses",
            f"the line does not cut across grids {a.key} and {b.key}: draw the new edge from "
            "boundary to boundary of the two",
            field="line",
            keys=[a.key, b.key],
        )
    farr = np.array(faces, dtype=object)
    to_a = shapely.area(shapely.intersection(farr, a.geom)) >= shapely.area(
        shapely.intersection(farr, b.geom)
    )
    new = []
    for grid, mask in ((a, to_a), (b, ~to_a)):
        if not mask.any():
            raise PlanEditError(
                "line_misses",
                f"grid {grid.key} would get no territory: the line must run between the two grids",
                field="line",
                keys=[a.key, b.key],
            )
        geom = _clean(shapely.union_all(farr[mask]), frame, tolerance)
        _single(geom, grid.key, f"grid {grid.key}")
        new.append(replace(grid, code=None, geom=geom))
    return _result([a, b], new, tolerance)


def reassign_territory(
    source: PlanGrid, target: PlanGrid, region, *, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> EditResult:
    """Return ``source`` and its neighbour ``target`` after the part of ``source`` inside
    ``region`` (a Polygon) moved to ``target``. Both keep their keys, not their codes."""
    region = parse_polygon(region)
    _same_community([source, target])
    frame = _Frame([source.geom, target.geom])
    region = _snap(region, [source, target], frame, tolerance)
    if not region.is_valid:
        region = shapely.make_valid(region)
    moved = _clean(shapely.intersection(source.geom, region), frame, tolerance)
    if moved.is_empty:
        raise PlanEditError(
            "region_misses",
            f"the region does not overlap grid {source.key}",
            field="region",
            keys=[source.key],
        )
    rest = _clean(shapely.difference(source.geom, region), frame, tolerance)
    if rest.is_empty:
        raise PlanEditError(
            "gap",
            f"the region covers all of grid {source.key}: merge the grids instead",
            field="region",
            keys=[source.key],
        )
    grown = _clean(shapely.union(target.geom, moved), frame, tolerance)
    if len(_parts(grown)) != 1:
        raise PlanEditError(
            "not_adjacent",
            f"the territory taken from grid {source.key} does not touch grid {target.key}",
            field="region",
            keys=[source.key, target.key],
        )
    _single(rest, source.key, f"the rest of grid {source.key}")
    new = [replace(source, code=None, geom=rest), replace(target, code=None, geom=grown)]
    return _result([source, target], new, tolerance)


def replace_all(
    old: Sequence[PlanGrid],
    features: Sequence[dict],
    *,
    communities: dict[str, BaseGeometry],
    base: Sequence[PlanGrid] = (),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> EditResult:
    """Return the plan's grids replaced by ``features`` (dicts: ``geometry`` (GeoJSON or
    shapely), ``name``, optional ``parent_code`` and ``code``).

    See :func:`_replace_all`. A set refused for gaps, overlaps or grids outside their
    community that fits far better read as GCJ-02 or BD-09 (traced over Amap, Tencent or
    Baidu and saved as WGS84) is refused saying so.
    """
    kw = {"communities": communities, "base": base, "tolerance": tolerance}
    try:
        return _replace_all(old, features, **kw)
    except PlanEditError as exc:
        if exc.reason not in ("gap", "overlap", "crosses_community"):
            raise
        datum = _shifted_datum(old, features, kw)
        if datum is None:
            raise
        raise PlanEditError(
            exc.reason,
            f"{exc.message}. The set fits far better read as {datum} coordinates: it was likely "
            f"traced over a {datum} map; convert it to WGS84 (EPSG:4326) and upload it again",
            field=exc.field,
            keys=exc.keys,
        ) from None


def _shifted_datum(old, features, kw) -> str | None:
    """Return "GCJ-02" or "BD-09" if ``features`` read in that datum fit the territory of
    ``old`` far better (a fifth of the misfit or less) than as given."""
    from geo.coords import to_wgs84

    try:
        geoms = [_geometry_of(f.get("geometry"), "geometry") for f in features]
    except PlanEditError:
        return None
    territory = shapely.union_all([g.geom for g in old])

    def misfit(gs) -> float:
        return float(shapely.symmetric_difference(shapely.union_all(gs), territory).area)

    given = misfit(geoms)
    for datum in ("GCJ-02", "BD-09"):
        try:
            moved = [
                shapely.transform(
                    g, lambda xy, d=datum: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], d))
                )
                for g in geoms
            ]
        except Exception:  # outside China, where the datum is undefined
            continue
        if misfit(moved) <= 0.2 * given:
            return datum
    return None


def _replace_all(
    old: Sequence[PlanGrid],
    features: Sequence[dict],
    *,
    communities: dict[str, BaseGeometry],
    base: Sequence[PlanGrid] = (),
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> EditResult:
    """Return the plan's grids replaced by ``features``.

    A feature without ``parent_code`` goes to the community holding most of it. A feature
    whose ``code`` names a grid of ``old`` or of ``base`` (the grids the plan was drawn
    from) that it equals (within the area tolerance, same community) is that grid again:
    its code is its key and stays; every other feature is a new grid. The set must tile the
    territory of ``old`` and nest in ``communities``. A feature without a code that equals a
    codeless grid of ``old`` (same community and name) is that grid again. Grids of ``old``
    that come back unchanged (same key, code and name) are neither removed nor added.
    """
    if not features:
        raise PlanEditError("gap", "the file has no grids", field="features")
    codes = list(communities)
    cgeoms = np.array([communities[c] for c in codes], dtype=object)
    by_code = {g.code: g for g in base if g.code} | {g.code: g for g in old if g.code}
    frame = _Frame([g.geom for g in old])
    # Vertices drawn within the snap tolerance of the plan's grids' vertices land on them.
    old_edges = np.array([shapely.boundary(g.geom) for g in old], dtype=object)
    edge_tree = shapely.STRtree(old_edges)
    snap_deg = tolerance.snap_m * frame.deg_per_m
    uncoded: dict[tuple[str, str], list[PlanGrid]] = {}
    for g in old:
        if not isinstance(g.code, str) and g.key:  # None (or NaN read through pandas)
            uncoded.setdefault((g.parent_code, g.name), []).append(g)
    taken: set[str] = set()
    new: list[PlanGrid] = []
    for i, f in enumerate(features):
        where = f"features[{i}]"
        geom = _geometry_of(f.get("geometry"), f"{where}.geometry")
        if snap_deg > 0 and isinstance(geom, Polygon | MultiPolygon) and geom.is_valid:
            near = edge_tree.query(geom, predicate="dwithin", distance=snap_deg)
            if len(near):
                snapped = shapely.snap(geom, shapely.union_all(old_edges[near]), snap_deg)
                if snapped.is_valid and not snapped.is_empty:
                    geom = snapped
        geom = _one_polygon(geom, f"{where}.geometry", where)
        parent = f.get("parent_code")
        if parent is None:
            shared = shapely.area(shapely.intersection(cgeoms, geom))
            if not len(shared) or shared.max() <= 0:
                raise PlanEditError(
                    "crosses_community",
                    f"{where}: lies in none of the plan's communities",
                    field=f"{where}.geometry",
                )
            parent = codes[int(np.argmax(shared))]
        name = str(f.get("name") or "").strip() or f"Grid {i + 1}"
        code = f.get("code")
        base = by_code.get(str(code)) if code is not None else None
        if (
            base is not None
            and base.parent_code == parent
            and frame.area_m2(shapely.symmetric_difference(base.geom, geom)) <= tolerance.area_m2
        ):
            new.append(PlanGrid(base.key, parent, name, base.geom, code=base.code))
            continue
        # A codeless feature equal to a grid an edit drew (same community and name) is that
        # grid again: the same file saved twice changes nothing.
        again = next(
            (
                g
                for g in uncoded.get((str(parent), name), ())
                if g.key not in taken
                and frame.area_m2(shapely.symmetric_difference(g.geom, geom)) <= tolerance.area_m2
            ),
            None,
        )
        if again is not None:
            taken.add(again.key)
            new.append(PlanGrid(again.key, again.parent_code, name, again.geom))
        else:
            new.append(PlanGrid(None, str(parent), name, geom))
    codes_kept = [g.code for g in new if g.code]
    if len(codes_kept) != len(set(codes_kept)):
        raise PlanEditError("overlap", "two features claim the same grid code", field="features")
    check_replacement(old, new, tolerance=tolerance, communities=communities)
    old_by_key = {g.key: g for g in old if g.key}
    same = {
        g.key
        for g in new
        if g.key in old_by_key
        and old_by_key[g.key].code == g.code
        and old_by_key[g.key].name == g.name
    }
    return EditResult(
        removed=[g.key for g in old if g.key and g.key not in same],
        added=[g for g in new if g.key not in same],
    )


_CGCS2000 = 4490
_GRID_FIELDS = ("name", "parent_code", "code")


def _refuse_file(filename: str, what: str) -> PlanEditError:
    return PlanEditError("invalid_geometry", f"{filename}: {what}", field="file")


def _flat_zip(data: bytes, filename: str) -> bytes:
    """Return the zip's files at its top level (QGIS users zip the folder a Shapefile is in;
    GDAL reads a zip's layers only there); refuse a zip that holds no layer GDAL would find
    (a Shapefile's parts without its .shp, say), naming what it holds."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {}
            for info in z.infolist():
                base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if info.is_dir() or not base or info.filename.startswith("__MACOSX/"):
                    continue
                members.setdefault(base, info)
            layers = [n for n in members if n.lower().endswith(_LAYER_SUFFIXES)]
            if not layers:
                held = ", ".join(sorted(members)[:8]) or "nothing"
                raise _refuse_file(
                    filename,
                    f"the zip holds no .shp (nor GeoPackage, GeoJSON or KML); it holds {held}. "
                    "A zipped Shapefile needs its .shp, .shx, .dbf and .prj together",
                )
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as flat:
                for base, info in members.items():
                    flat.writestr(base, z.read(info))
    except PlanEditError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError):  # ValueError: a corrupt member
        raise _refuse_file(filename, "is not a readable zip file") from None
    return out.getvalue()


#: What a zip must hold for GDAL to find a layer in it.
_LAYER_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".kml")


def read_grid_file(data: bytes, filename: str, *, layer: str | None = None) -> list[dict]:
    """Return the polygons of a GeoJSON, GeoPackage, KML or zipped Shapefile as features for
    :func:`replace_all` (``geometry`` in lon/lat, ``name``, ``parent_code``, ``code`` when
    the file has those fields, in any case). Other CRSs than EPSG:4326 and CGCS2000 are
    transformed; a file without one is taken as lon/lat. An empty file, a zip without a
    layer, a file of points or lines, or one without rows is refused naming the file."""
    import pyogrio
    import pyogrio.errors

    if not data:
        raise _refuse_file(filename, "the file is empty")
    if data[:4] == b"PK\x03\x04":
        data = _flat_zip(data, filename)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL on in-memory file names
            frame = pyogrio.read_dataframe(io.BytesIO(data), layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        # GDAL names the in-memory path it read (/vsimem/...): say what it found, not where.
        why = str(exc).split("; ")[0]
        why = " ".join(w for w in why.split() if "/vsi" not in w and "pyogrio" not in w)
        raise _refuse_file(
            filename, f"not a GeoJSON, GeoPackage, KML or zipped Shapefile GDAL can read ({why})"
        ) from None
    if len(frame) == 0:
        raise _refuse_file(filename, "has no grids (its layer has no rows)")
    if frame.crs is not None and frame.crs.to_epsg() not in (4326, _CGCS2000):
        frame = frame.to_crs(4326)
    # A Shapefile keeps 10 characters of a field name (parent_code → parent_cod).
    columns = {c.lower(): c for c in frame.columns if c != "geometry"}
    columns |= {n: columns[n[:10]] for n in _GRID_FIELDS if n not in columns and n[:10] in columns}
    features = []
    for i, geom in enumerate(frame.geometry):
        if geom is None:
            raise _refuse_file(filename, f"row {i} has no geometry")
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise _refuse_file(
                filename, f"row {i} is a {geom.geom_type}; grids are polygons (Polygon layers)"
            )
        feature: dict = {"geometry": geom}
        for name in _GRID_FIELDS:
            if name in columns:
                value = frame[columns[name]].iloc[i]
                if value is not None and value == value:  # not NaN
                    feature[name] = str(value)
        features.append(feature)
    return features

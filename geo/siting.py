"""Where to put new facilities: maximal covering (MCLP) and location set covering (LSCP).

Pure: numpy, scipy, shapely; the models are ``spopt.locate.MCLP`` / ``LSCP`` solved by
PuLP with HiGHS (``pulp.HiGHS``, from the highspy package) or, without it, CBC.

Demand points (care households, units) carry weights; a demand point is covered when a
facility lies within ``radius_m`` (straight line, in metres: the caller divides the walk
by its detour factor, see :func:`geo.reach.reach_radius_m`). Existing facilities are
kept: demand they already cover is left out of the model, so the model chooses the ``k``
candidates that add most (MCLP), or the fewest that cover all the rest it can (LSCP).

Problem sizes stay bounded (the models are dense ``demand × candidates`` matrices built
in Python by spopt):

* at most :data:`MAX_CANDIDATES` (2,000) candidates; a lattice is spaced to fit
  (:func:`candidate_lattice`), supplied lists longer than that are refused by the caller;
* more than :data:`MAX_DEMAND_POINTS` (5,000) demand points are summed into the cells of
  a square lattice (:func:`aggregate_demand`), each cell a point at its weighted mean;
* exact reductions before solving: demand already covered, demand no candidate reaches
  and candidates that reach no such demand are dropped; candidates whose coverage is a
  subset of another's are dropped (never better); demand points covered by the same
  candidates are merged (weights summed).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry

from geo.population import lattice_points

__all__ = [
    "MAX_CANDIDATES",
    "MAX_DEMAND_POINTS",
    "MIN_SPACING_M",
    "SitingError",
    "SitingResult",
    "candidate_lattice",
    "aggregate_demand",
    "covered_by",
    "make_solver",
    "site_facilities",
]

MAX_CANDIDATES = 2_000
MAX_DEMAND_POINTS = 5_000
#: Finest automatic lattice spacing, metres.
MIN_SPACING_M = 100.0


class SitingError(ValueError):
    """A siting problem that cannot be posed; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def _xy(x, y) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError("x and y differ in length")
    return np.column_stack([x, y]) if len(x) else np.empty((0, 2))


def covered_by(demand_x, demand_y, site_x, site_y, radius_m: float) -> np.ndarray:
    """Return, per demand point, whether some site lies within ``radius_m`` (inclusive)."""
    demand = _xy(demand_x, demand_y)
    sites = _xy(site_x, site_y)
    if len(demand) == 0 or len(sites) == 0:
        return np.zeros(len(demand), dtype=bool)
    dist, _ = cKDTree(sites).query(demand, k=1, distance_upper_bound=radius_m * (1 + 1e-12))
    return np.isfinite(dist)


def candidate_lattice(
    area_m: BaseGeometry,
    *,
    spacing_m: float | None = None,
    max_candidates: int = MAX_CANDIDATES,
    near: tuple[np.ndarray, np.ndarray, float] | None = None,
    min_spacing_m: float = MIN_SPACING_M,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (x_m, y_m, spacing_m) of candidate sites on a square lattice inside ``area_m``.

    Parameters
    ----------
    area_m
        Polygon in metres.
    spacing_m
        Lattice spacing. ``None`` picks the finest spacing (not below ``min_spacing_m``)
        whose useful candidates number at most ``max_candidates``.
    near
        (x_m, y_m, radius_m): keep only lattice points within ``radius_m`` of one of these
        points (candidates reaching no uncovered demand cannot help).

    Raises
    ------
    SitingError
        When an explicit ``spacing_m`` gives more than ``max_candidates`` (field
        ``spacing_m``, with the spacing that would fit).
    """
    area = float(area_m.area)
    if area <= 0:
        raise SitingError("the area has no extent to place candidates in", field="area")

    def useful(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if near is None or len(x) == 0:
            return x, y
        nx, ny, radius = near
        if len(nx) == 0:
            return x[:0], y[:0]
        keep = covered_by(x, y, nx, ny, radius)
        return x[keep], y[keep]

    if spacing_m is not None:
        if not (math.isfinite(spacing_m) and spacing_m > 0):
            raise SitingError(f"spacing_m must be positive, got {spacing_m!r}", field="spacing_m")
        x, y = useful(*lattice_points(area_m, spacing_m))
        if len(x) > max_candidates:
            fit = spacing_m * math.sqrt(len(x) / max_candidates) * 1.05
            raise SitingError(
                f"spacing_m={spacing_m:g} gives {len(x):,} candidates, more than the "
                f"{max_candidates:,} allowed; use spacing_m >= {math.ceil(fit):,}",
                field="spacing_m",
            )
        return x, y, float(spacing_m)

    spacing = max(min_spacing_m, math.sqrt(area / max_candidates))
    x, y = useful(*lattice_points(area_m, spacing))
    # Most of the area may need nothing: spend the budget where candidates can help.
    if len(x) and len(x) < 0.8 * max_candidates and spacing > min_spacing_m:
        finer = max(min_spacing_m, spacing * math.sqrt(len(x) / max_candidates))
        for _ in range(20):
            fx, fy = useful(*lattice_points(area_m, finer))
            if len(fx) <= max_candidates:
                if len(fx) >= len(x):
                    x, y, spacing = fx, fy, finer
                break
            finer *= 1.1
    while len(x) > max_candidates:  # rare: a ragged outline can hold more than expected
        spacing *= 1.05
        x, y = useful(*lattice_points(area_m, spacing))
    return x, y, float(spacing)


def aggregate_demand(
    x_m, y_m, weights, *, max_points: int = MAX_DEMAND_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """Return (x, y, weights, cell_m): demand summed into lattice cells if too many points.

    At most ``max_points`` points come back. When there were more, points are binned into
    square cells (side ``cell_m``, grown until few enough cells are occupied) and each
    cell becomes one point at the weighted mean of its points; ``cell_m`` is None when
    nothing was aggregated.
    """
    xy = _xy(x_m, y_m)
    w = np.asarray(weights, dtype=float).ravel()
    if len(w) != len(xy):
        raise ValueError("weights differ in length from the points")
    keep = w > 0
    xy, w = xy[keep], w[keep]
    if len(xy) <= max_points:
        return xy[:, 0], xy[:, 1], w, None
    x0, y0 = xy.min(axis=0)
    span = np.ptp(xy, axis=0)
    cell = max(1.0, math.sqrt(max(span[0] * span[1], 1.0) / max_points))
    for _ in range(200):
        ij = np.floor((xy - (x0, y0)) / cell).astype(np.int64)
        keys, inverse = np.unique(ij, axis=0, return_inverse=True)
        if len(keys) <= max_points:
            break
        cell *= 1.15
    inverse = inverse.ravel()
    tot = np.bincount(inverse, weights=w)
    mx = np.bincount(inverse, weights=w * xy[:, 0]) / tot
    my = np.bincount(inverse, weights=w * xy[:, 1]) / tot
    return mx, my, tot, float(cell)


_BANNER_LOCK = threading.Lock()
_banner_done = False


def _silence_highs_banner() -> None:
    """Create the process's first HiGHS instance with the C stdout muted.

    HiGHS prints its banner from C on the first ``Highs()`` of a process, before PuLP can
    set ``output_flag``: it would land in the middle of a CLI's JSON output.
    """
    global _banner_done
    with _BANNER_LOCK:
        if _banner_done:
            return
        _banner_done = True
        try:
            import highspy
        except ImportError:
            return
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def make_solver(time_limit_s: float = 60.0):
    """Return a quiet PuLP solver: HiGHS when highspy is installed, else CBC."""
    import pulp

    highs = pulp.HiGHS(msg=False, timeLimit=time_limit_s)
    if highs.available():
        _silence_highs_banner()
        return highs
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


@dataclass
class SitingResult:
    """Chosen sites and what they cover.

    ``chosen`` indexes the candidates, in order of what each adds (greedy attribution:
    the first adds most, each next adds most of what is still uncovered); ``gains`` is
    that added weight per chosen site. Weights: ``total``; already covered by existing
    facilities: ``covered_before``; with the chosen sites too: ``covered_after``;
    reached by no candidate and no existing facility: ``unreachable``.
    """

    method: str
    solver: str
    chosen: np.ndarray
    gains: np.ndarray
    total: float
    covered_before: float
    covered_after: float
    unreachable: float
    model: dict = field(default_factory=dict)
    note: str | None = None


def _coverage_matrix(demand: np.ndarray, sites: np.ndarray, radius_m: float) -> csr_matrix:
    """Return the boolean demand × sites matrix "site within radius of demand point"."""
    if len(demand) == 0 or len(sites) == 0:
        return csr_matrix((len(demand), len(sites)), dtype=bool)
    lists = cKDTree(sites).query_ball_point(demand, r=radius_m * (1 + 1e-12))
    indptr = np.zeros(len(demand) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(lst) for lst in lists])
    indices = np.fromiter(
        (j for lst in lists for j in sorted(lst)), dtype=np.int64, count=int(indptr[-1])
    )
    return csr_matrix(
        (np.ones(len(indices), dtype=bool), indices, indptr), shape=(len(demand), len(sites))
    )


def _drop_dominated_columns(a: csr_matrix) -> np.ndarray:
    """Return the columns to keep: none whose rows are a subset of another kept column's."""
    n = a.shape[1]
    ai = a.astype(np.int32)
    colsum = np.asarray(ai.sum(axis=0)).ravel()
    overlap = (ai.T @ ai).tocoo()
    r, c, v = overlap.row, overlap.col, overlap.data
    dominated_by = (
        (r != c)
        & (v == colsum[r])
        & ((colsum[c] > colsum[r]) | ((colsum[c] == colsum[r]) & (c < r)))
    )
    keep = np.ones(n, dtype=bool)
    keep[np.unique(r[dominated_by])] = False
    return np.flatnonzero(keep & (colsum > 0))


def _merge_rows(a: csr_matrix, w: np.ndarray) -> tuple[csr_matrix, np.ndarray]:
    """Return the distinct rows of ``a`` with the summed weights of identical rows."""
    keys: dict[bytes, int] = {}
    rows: list[int] = []
    merged: list[float] = []
    for i in range(a.shape[0]):
        key = a.indices[a.indptr[i] : a.indptr[i + 1]].tobytes()
        j = keys.get(key)
        if j is None:
            keys[key] = len(rows)
            rows.append(i)
            merged.append(float(w[i]))
        else:
            merged[j] += float(w[i])
    return a[rows], np.asarray(merged)


def _greedy_order(
    chosen: np.ndarray, a: csr_matrix, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the chosen columns ordered by marginal gain, and each one's gain."""
    covered = np.zeros(a.shape[0], dtype=bool)
    left = [int(j) for j in chosen]
    cols = a.tocsc()
    order: list[int] = []
    gains: list[float] = []
    while left:
        best, best_gain = None, -1.0
        for j in left:
            rows = cols.indices[cols.indptr[j] : cols.indptr[j + 1]]
            gain = float(w[rows][~covered[rows]].sum())
            if gain > best_gain:
                best, best_gain = j, gain
        rows = cols.indices[cols.indptr[best] : cols.indptr[best + 1]]
        covered[rows] = True
        order.append(best)
        gains.append(best_gain)
        left.remove(best)
    return np.asarray(order, dtype=np.int64), np.asarray(gains)


def site_facilities(
    demand_x,
    demand_y,
    weights,
    candidate_x,
    candidate_y,
    radius_m: float,
    *,
    k: int | None = None,
    lscp: bool = False,
    existing_x=(),
    existing_y=(),
    solver=None,
) -> SitingResult:
    """Return the candidates to open: the ``k`` adding most coverage, or the fewest covering all.

    Parameters
    ----------
    demand_x, demand_y, weights
        Demand points (metres) and their weights (households, units, …).
    candidate_x, candidate_y
        Candidate sites (metres).
    radius_m
        Coverage radius (straight line).
    k
        MCLP: how many new facilities to open (fewer come back when fewer candidates can
        add anything).
    lscp
        LSCP instead: the fewest candidates so that every demand point that some
        candidate (or existing facility) reaches is covered.
    existing_x, existing_y
        Facilities already open; what they cover is not counted again.
    solver
        A PuLP solver (default :func:`make_solver`).

    Examples
    --------
    Three candidates; the middle one reaches four of the five households:

    >>> r = site_facilities([0, 10, 20, 30, 500], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1],
    ...                     [-400, 15, 400], [0, 0, 0], 20.0, k=1)
    >>> r.chosen.tolist(), r.covered_after
    ([1], 4.0)
    """
    from spopt.locate import LSCP, MCLP

    if lscp == (k is not None):
        raise SitingError("give either k (maximal covering) or lscp (set covering)", field="k")
    if k is not None and (int(k) != k or k < 1):
        raise SitingError(f"k must be a positive integer, got {k!r}", field="k")
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise SitingError(f"radius must be positive, got {radius_m!r}", field="minutes")
    demand = _xy(demand_x, demand_y)
    w = np.asarray(weights, dtype=float).ravel()
    if len(w) != len(demand):
        raise ValueError("weights differ in length from the demand points")
    cands = _xy(candidate_x, candidate_y)
    existing = _xy(existing_x, existing_y)
    method = "lscp" if lscp else "mclp"
    solver = solver or make_solver()
    solver_name = type(solver).__name__

    total = float(w.sum())
    before = covered_by(demand[:, 0], demand[:, 1], existing[:, 0], existing[:, 1], radius_m)
    covered_before = float(w[before].sum())
    open_rows = np.flatnonzero(~before & (w > 0))
    a_full = _coverage_matrix(demand[open_rows], cands, radius_m)
    reachable = np.diff(a_full.indptr) > 0
    unreachable = float(w[open_rows[~reachable]].sum())
    rows = open_rows[reachable]
    a = a_full[reachable]
    model = {"demand_points": int(len(demand)), "candidates": int(len(cands))}

    def result(chosen: np.ndarray, note: str | None = None) -> SitingResult:
        if len(chosen):
            local, gains = _greedy_order(
                np.arange(len(chosen)),
                _coverage_matrix(demand, cands[chosen], radius_m),
                np.where(before, 0.0, w),
            )
            order = np.asarray(chosen, dtype=np.int64)[local]
        else:
            order, gains = np.empty(0, dtype=np.int64), np.empty(0)
        after = before | covered_by(
            demand[:, 0], demand[:, 1], cands[order, 0], cands[order, 1], radius_m
        )
        return SitingResult(
            method=method,
            solver=solver_name,
            chosen=order,
            gains=gains,
            total=total,
            covered_before=covered_before,
            covered_after=float(w[after].sum()),
            unreachable=unreachable,
            model=model,
            note=note,
        )

    if a.shape[0] == 0:
        if total == 0:
            note = "there is no demand to cover"
        elif unreachable == 0:
            note = "existing facilities already cover all demand"
        else:
            note = "no candidate reaches any demand left uncovered"
        return result(np.empty(0, dtype=np.int64), note)

    cols = _drop_dominated_columns(a)
    a = a[:, cols]
    a, w_rows = _merge_rows(a, w[rows])
    model.update(model_rows=int(a.shape[0]), model_columns=int(a.shape[1]))
    # spopt takes a cost matrix and a service radius: 0 where covered, 1 where not.
    cost = np.where(a.toarray(), 0.0, 1.0)
    note = None
    with warnings.catch_warnings():
        # spopt builds its variables the way PuLP 3.x deprecates (one warning per variable).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pulp")
        if lscp:
            problem = LSCP.from_cost_matrix(cost, service_radius=0.5)
        else:
            p = min(int(k), a.shape[1])
            if p < k:
                note = f"only {p} candidates can add coverage; all of them are chosen"
            problem = MCLP.from_cost_matrix(cost, w_rows, service_radius=0.5, p_facilities=p)
    try:
        problem.solve(solver, results=False)
    except RuntimeError as exc:  # spopt: the model was not solved to optimality
        raise SitingError(f"the {method.upper()} model was not solved: {exc}") from None
    picked = np.asarray([j for j, v in enumerate(problem.fac_vars) if (v.value() or 0) > 0.5])
    chosen = cols[picked] if len(picked) else np.empty(0, dtype=np.int64)
    return result(chosen, note)

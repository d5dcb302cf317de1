"""Cut an administrative polygon into N compact, population-balanced pieces that tile it.

Pure: numpy, scipy and shapely only. Used by the demo data generator to make townships,
communities and grids where no real boundaries exist.

How :func:`partition_polygon` works
-----------------------------------
1. Lay a regular lattice of sample points over the polygon in a
   :class:`~geo.population.LocalFrame` (metres), refined where the population density
   is high so that every piece gets roughly the same number of samples. Each sample
   carries the population of its cell.
2. Place N sites by k-means++ and Lloyd's algorithm on the samples weighted by
   density²: k-means cells have areas that scale like density^-1/2 of what they
   cluster, so clustering density² gives cells whose areas scale like 1/density, i.e.
   roughly equal population. Snap each site to its nearest sample.
3. Give each site a weight: a power diagram assigns a point x to the site s minimising
   |x - s|² - w. Damped Newton on the weights brings every cell to 1/N of the sampled
   population (within 1 %), keeping the compact shapes Lloyd found.
4. Build the power diagram's edges once, from the lower convex hull of the lifted sites
   (each diagram vertex is computed once and shared by every edge that meets it), map
   them to lon/lat (the frame is affine, so straight stays straight), node them together
   with the polygon's own boundary and polygonize. The faces inside the polygon tile it
   exactly and neighbours share identical edge coordinates; each face goes to the site
   whose cell holds it, and each piece is the union of its faces.
5. A cell clipped by a concave boundary can fall apart: every fragment but the largest
   is handed to the neighbouring piece it shares the longest boundary with, until each
   piece of a single Polygon is a single Polygon. As that upsets the balance, a layout
   in which a piece misses its share by more than 15 % is retried (up to 4 times) with
   a Lloyd step that hands detached sample clusters over as well, and the best kept.
   Strongly concave outlines (combs, spirals) can still end up out of balance.

A MultiPolygon is split part by part: its parts share the N pieces in proportion to
their population (:func:`~geo.population.apportion`, minimum 0), and a part too small to
earn a piece of its own (an island holding less than about half a piece's population)
is added to the nearest piece, which then is a MultiPolygon. This is the only case in
which a piece has more than one part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, cKDTree
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geo.population import LocalFrame, apportion, lattice_points

__all__ = [
    "PartitionError",
    "partition_polygon",
    "order_west_east_north_south",
    "polsby_popper",
]

DensityFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Bound on parts² × samples per part (the size of the sample-to-site distance matrix),
#: to keep memory and time bounded: about 220 parts at the default sampling.
_MAX_WORK = 10_000_000
#: Finest lattice subdivision in dense places (up to this squared samples per cell).
_MAX_SUBDIVISION = 6
_LLOYD_ROUNDS = 15
_FINAL_STEPS = 40
#: Loads are balanced until every cell is within this share of its target.
_BALANCE_TOLERANCE = 0.01
#: Newton band half-width, as a share of the cell's area in power-distance units.
_BAND = 0.2
#: Newton steps move 90 % of boundaries by at most this many band widths.
_TRUST = 3.0
_CAPTURE_MARGIN = 1e-9
#: Layouts are retried while some piece misses its share by more than this.
_GOOD_ENOUGH = 0.15
_ATTEMPTS = 4
_ROW_BLOCK = 1024


class PartitionError(ValueError):
    """The polygon cannot be partitioned as asked."""


def partition_polygon(
    polygon: BaseGeometry,
    n_parts: int,
    *,
    density: DensityFunction | None = None,
    seed: int = 0,
    samples_per_part: int = 200,
) -> list[BaseGeometry]:
    """Return ``n_parts`` polygons that tile ``polygon``, balanced by population.

    Parameters
    ----------
    polygon
        Valid lon/lat Polygon or MultiPolygon (EPSG:4326 or CGCS2000).
    n_parts
        Number of pieces, >= 1.
    density
        ``density(lon, lat) -> people per km²`` on numpy arrays, e.g. a
        :class:`~geo.population.PopulationSurface`. ``None`` balances area instead.
    seed
        Seed of the initial site placement. Same inputs and seed give identical pieces.
    samples_per_part
        Lattice samples per piece (in dense places the lattice is refined further);
        more is slower and balances more finely.

    Returns
    -------
    list of shapely geometries
        Exactly ``n_parts`` valid, non-empty pieces in the grid-code numbering order of
        :func:`order_west_east_north_south`. Their union is ``polygon`` (boundaries
        reuse its vertices), they do not overlap, and neighbours share identical edge
        coordinates. For a Polygon input every piece is a Polygon; see the module notes
        for MultiPolygons.

    Raises
    ------
    PartitionError
        If ``n_parts`` < 1, the polygon is empty, invalid or not areal, the density is
        negative or not finite, or ``n_parts`` is too large for the sampling.
    """
    if isinstance(n_parts, bool) or not isinstance(n_parts, int | np.integer):
        raise PartitionError(f"n_parts must be an integer, got {n_parts!r}")
    n_parts = int(n_parts)
    if n_parts < 1:
        raise PartitionError(f"n_parts must be >= 1, got {n_parts}")
    if samples_per_part < 4:
        raise PartitionError(f"samples_per_part must be >= 4, got {samples_per_part}")
    if not isinstance(polygon, Polygon | MultiPolygon):
        kind = getattr(polygon, "geom_type", type(polygon).__name__)
        raise PartitionError(f"expected a Polygon or MultiPolygon, got {kind}")
    if polygon.is_empty:
        raise PartitionError("cannot partition an empty polygon")
    if not polygon.is_valid:
        raise PartitionError(f"invalid polygon: {shapely.is_valid_reason(polygon)}")
    if polygon.area <= 0:
        raise PartitionError("cannot partition a polygon without area")
    if n_parts * n_parts * samples_per_part > _MAX_WORK:
        raise PartitionError(
            f"n_parts={n_parts} is too large for one call with {samples_per_part} samples "
            f"per part; partition hierarchically (e.g. townships, then grids)"
        )
    if n_parts == 1:
        return [polygon]

    frame = LocalFrame.around(polygon)
    parts_ll = list(polygon.geoms) if isinstance(polygon, MultiPolygon) else [polygon]
    parts_m = [frame.to_metric(p) for p in parts_ll]
    poly_m = frame.to_metric(polygon)
    xy, mass, cell_area = _samples(poly_m, frame, n_parts, samples_per_part, density)
    if len(xy) < n_parts:
        raise PartitionError(
            f"n_parts={n_parts} is too large: only {len(xy)} sample points fit in the polygon"
        )

    if len(parts_m) == 1:
        part_of = np.zeros(len(xy), dtype=np.int64)
    else:
        part_of = np.full(len(xy), -1, dtype=np.int64)
        for i, pm in enumerate(parts_m):
            shapely.prepare(pm)
            part_of[(part_of < 0) & shapely.contains_xy(pm, xy[:, 0], xy[:, 1])] = i
    part_mass = np.bincount(
        part_of[part_of >= 0], weights=mass[part_of >= 0], minlength=len(parts_m)
    )
    counts = apportion(n_parts, part_mass, minimum=0)

    rng = np.random.default_rng(seed)
    pieces: list[BaseGeometry] = []
    islands: list[int] = []
    for i, k in enumerate(counts):
        if k == 0:
            islands.append(i)
            continue
        sel = part_of == i
        if int(sel.sum()) < k:
            raise PartitionError(
                f"n_parts={n_parts} is too large: part {i} has {int(sel.sum())} samples "
                f"for {k} pieces"
            )
        pieces.extend(
            _partition_part(
                parts_ll[i], parts_m[i], k, xy[sel], mass[sel], cell_area[sel], frame, rng
            )
        )
    if islands:
        pieces_m = frame.to_metric(np.array(pieces, dtype=object))
        for i in islands:
            # Ties (several touching pieces) go to the lower index: deterministic.
            j = int(np.argmin(shapely.distance(parts_m[i], pieces_m)))
            pieces[j] = shapely.union(pieces[j], parts_ll[i])
            pieces_m[j] = frame.to_metric(pieces[j])
    order = order_west_east_north_south(pieces)
    return [pieces[i] for i in order]


def order_west_east_north_south(geoms: Sequence[BaseGeometry]) -> list[int]:
    """Return the indices of ``geoms`` in grid-code numbering order (CJ/T 213).

    Rows run from north to south and, within a row, from west to east. Each geometry
    is placed by its representative point (:func:`shapely.point_on_surface`). Rows are
    bands of height ``sqrt(mean area)`` measured in a :class:`~geo.population.LocalFrame`:
    band ``i`` holds the points whose northing lies within half a band of
    ``y_north - i * height``, where ``y_north`` is the northernmost point. Ties keep the
    input order.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> order_west_east_north_south([box(1, 0, 2, 1), box(0, 0, 1, 1), box(0, 1, 1, 2)])
    [2, 1, 0]
    """
    arr = np.asarray(list(geoms), dtype=object)
    if arr.size == 0:
        return []
    frame = LocalFrame.around(arr)
    reps = shapely.point_on_surface(arr)
    x_m, y_m = frame.forward(shapely.get_x(reps), shapely.get_y(reps))
    area_m2 = shapely.area(frame.to_metric(arr))
    band_m = math.sqrt(float(np.mean(area_m2)))
    if not band_m > 0:
        band_m = 1.0
    band = np.floor((y_m.max() - y_m) / band_m + 0.5)
    return [int(i) for i in np.lexsort((np.arange(arr.size), x_m, band))]


def polsby_popper(geom: BaseGeometry) -> float:
    """Return the Polsby–Popper compactness 4πA/P² of ``geom``, measured in metres.

    1 for a disc, about 0.785 for a square, towards 0 for slivers. A MultiPolygon is
    scored on its total area and total perimeter. An empty geometry scores 0.
    """
    if geom is None or geom.is_empty:
        return 0.0
    g = LocalFrame.around(geom).to_metric(geom)
    perimeter_m = g.length
    if perimeter_m <= 0:
        return 0.0
    return 4.0 * math.pi * g.area / perimeter_m**2


# --------------------------------------------------------------------------- sampling


def _samples(
    poly_m: BaseGeometry,
    frame: LocalFrame,
    n_parts: int,
    samples_per_part: int,
    density: DensityFunction | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return sample points (metres), their population and their cell area (m²)."""
    area_m2 = float(poly_m.area)
    target = n_parts * samples_per_part
    spacing_m = math.sqrt(area_m2 / target)
    x, y = lattice_points(poly_m, spacing_m)
    # A ragged outline can hold far fewer lattice points than its area suggests.
    for _ in range(3):
        if len(x) >= target // 2:
            break
        spacing_m /= 2
        x, y = lattice_points(poly_m, spacing_m)
    if density is None:
        xy = np.column_stack([x, y])
        cell = np.full(len(x), spacing_m**2)
        return xy, cell.copy(), cell

    rho = _evaluate(density, frame, x, y)
    mean_rho = float(rho.mean()) if len(rho) else 0.0
    if mean_rho <= 0:
        xy = np.column_stack([x, y])
        cell = np.full(len(x), spacing_m**2)
        return xy, cell.copy(), cell
    # Subdivide lattice cells where density is above average, so that dense places,
    # whose pieces are small, still get enough samples to balance them finely.
    level = np.clip(np.floor(np.sqrt(rho / mean_rho) + 0.5), 1, _MAX_SUBDIVISION).astype(int)
    xs, ys, areas = (
        [x[level == 1]],
        [y[level == 1]],
        [np.full(int((level == 1).sum()), spacing_m**2)],
    )
    rhos = [rho[level == 1]]
    for s in range(2, _MAX_SUBDIVISION + 1):
        sel = level == s
        if not sel.any():
            continue
        offsets = ((np.arange(s) + 0.5) / s - 0.5) * spacing_m
        ox, oy = np.meshgrid(offsets, offsets)
        sx = (x[sel][:, None] + ox.ravel()[None, :]).ravel()
        sy = (y[sel][:, None] + oy.ravel()[None, :]).ravel()
        inside = shapely.contains_xy(poly_m, sx, sy)
        sx, sy = sx[inside], sy[inside]
        xs.append(sx)
        ys.append(sy)
        areas.append(np.full(len(sx), (spacing_m / s) ** 2))
        rhos.append(_evaluate(density, frame, sx, sy))
    x, y = np.concatenate(xs), np.concatenate(ys)
    cell = np.concatenate(areas)
    rho = np.concatenate(rhos)
    return np.column_stack([x, y]), rho * cell, cell


def _evaluate(
    density: DensityFunction, frame: LocalFrame, x_m: np.ndarray, y_m: np.ndarray
) -> np.ndarray:
    lon, lat = frame.inverse(x_m, y_m)
    rho = np.asarray(density(lon, lat), dtype=float)
    if rho.shape != lon.shape:
        raise PartitionError(f"density returned shape {rho.shape}, expected {lon.shape}")
    if not np.isfinite(rho).all() or (rho < 0).any():
        raise PartitionError("density must be finite and >= 0")
    return rho


# ------------------------------------------------------------------- optimisation


def _power_assign(
    u: np.ndarray, sites: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each sample's power cell and its power distances to every site.

    The distances omit the sample's own squared norm, which does not change which
    site is nearest nor any difference between two sites.
    """
    d = np.empty((len(u), len(sites)))
    scaled = -2.0 * sites.T
    # Row blocks keep each product below OpenBLAS's threading threshold: threads cost
    # more than they save on a product this thin, and far more on a busy machine.
    for i in range(0, len(u), _ROW_BLOCK):
        np.matmul(u[i : i + _ROW_BLOCK], scaled, out=d[i : i + _ROW_BLOCK])
    d += ((sites * sites).sum(1) - weights)[None, :]
    return np.argmin(d, axis=1), d


def _kmeans_pp(u: np.ndarray, mass: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Return indices of ``k`` distinct samples chosen by mass-weighted k-means++."""
    chosen = [int(rng.choice(len(u), p=mass / mass.sum()))]
    d2 = ((u - u[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        p = mass * d2
        total = p.sum()
        if total <= 0:
            # Every remaining sample coincides with a chosen one or carries no mass.
            nxt = int(np.setdiff1d(np.arange(len(u)), chosen)[0])
        else:
            nxt = int(rng.choice(len(u), p=p / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, ((u - u[nxt]) ** 2).sum(1))
    return np.array(chosen)


def _centroids(u: np.ndarray, wt: np.ndarray, owner: np.ndarray, sites: np.ndarray) -> np.ndarray:
    """Return ``sites`` moved to the ``wt``-weighted centroid of their samples."""
    k = len(sites)
    total = np.bincount(owner, weights=wt, minlength=k)
    has = total > 0
    cx = np.bincount(owner, weights=wt * u[:, 0], minlength=k)
    cy = np.bincount(owner, weights=wt * u[:, 1], minlength=k)
    out = sites.copy()
    out[has] = np.column_stack([cx[has] / total[has], cy[has] / total[has]])
    return out


def _balance_weights(u, mass, cell, sites, weights, target, max_steps):
    """Return power weights giving every cell ``target`` mass (within 1 %), and the owners.

    Damped Newton on the loads: ``L δ = target - load`` where ``L`` is the load's
    derivative, estimated from the samples within a narrow band of each cell boundary.
    Steps are scaled down so boundaries move by about the band width, then halved
    until the load error falls.
    """
    k, m = len(sites), len(u)
    rows = np.arange(m)

    def evaluate(w):
        owner, d = _power_assign(u, sites, w)
        return owner, d, np.bincount(owner, weights=mass, minlength=k)

    weights = weights.copy()
    owner, d, load = evaluate(weights)
    for _ in range(max_steps):
        best = d[rows, owner]
        empty = np.flatnonzero(np.bincount(owner, minlength=k) == 0)
        if empty.size:
            for j in empty:
                # Just enough weight to capture the sample nearest in power distance.
                weights[j] += float((d[:, j] - best).min()) + _CAPTURE_MARGIN
            owner, d, load = evaluate(weights)
            continue
        residual = target - load
        error = float(np.sqrt((residual * residual).sum()))
        if np.abs(residual).max() <= _BALANCE_TOLERANCE * target:
            break
        area = np.bincount(owner, weights=cell, minlength=k)
        d[rows, owner] = np.inf
        second = np.argmin(d, axis=1)
        gap = d[rows, second] - best
        # Band half-width in power distance: a tenth of the cell's side either way.
        eps = _BAND * area[owner]
        band = gap < eps
        o, s = owner[band], second[band]
        flux = mass[band] / (2.0 * eps[band])
        hessian = np.zeros((k, k))
        np.add.at(hessian, (o, s), -flux)
        np.add.at(hessian, (s, o), -flux)
        np.add.at(hessian, (o, o), flux)
        np.add.at(hessian, (s, s), flux)
        step = np.linalg.lstsq(hessian, residual, rcond=None)[0]
        jump = np.abs(step[o] - step[s]) / eps[band]
        alpha = min(1.0, _TRUST / float(np.quantile(jump, 0.9))) if jump.size else 1.0
        for _ in range(8):
            trial = weights + alpha * step
            t_owner, t_d, t_load = evaluate(trial)
            t_res = target - t_load
            if t_load.min() > 0 and float(np.sqrt((t_res * t_res).sum())) < error:
                break
            alpha *= 0.5
        else:
            break  # no step helps: as balanced as this sampling allows
        weights, owner, d, load = trial, t_owner, t_d, t_load
    return weights, owner


def _sample_graph(u: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the edges (i, j) joining neighbouring samples of the lattice."""
    m = len(u)
    nn = min(9, m)
    dist, idx = cKDTree(u).query(u, k=nn)
    spacing = np.sqrt(cell)
    i = np.repeat(np.arange(m), nn)
    j = idx.ravel()
    # Neighbours are at most a diagonal of the coarser of the two lattice cells apart.
    keep = (i < j) & (dist.ravel() <= 1.5 * np.maximum(spacing[i], spacing[j]))
    return i[keep], j[keep]


def _contiguous(owner: np.ndarray, graph, cell: np.ndarray, k: int) -> np.ndarray:
    """Return ``owner`` after handing each cell's detached sample clusters to a neighbour.

    The sample-level twin of :func:`_merge_fragments`: a cluster of a cell's samples
    not joined to its largest cluster goes to the cell it has most graph edges with.
    """
    ei, ej = graph
    m = len(owner)
    owner = owner.copy()
    for _ in range(8):
        same = owner[ei] == owner[ej]
        adj = coo_matrix((np.ones(int(same.sum())), (ei[same], ej[same])), shape=(m, m))
        ncomp, comp = connected_components(adj, directed=False)
        comp_group = np.zeros(ncomp, dtype=np.int64)
        comp_group[comp] = owner
        if ncomp == len(np.unique(comp_group)):
            break
        comp_area = np.bincount(comp, weights=cell, minlength=ncomp)
        order = np.lexsort((np.arange(ncomp), -comp_area))
        _, first = np.unique(comp_group[order], return_index=True)
        fragment = np.ones(ncomp, dtype=bool)
        fragment[order[first]] = False
        cross = ~same
        ci = np.concatenate([comp[ei[cross]], comp[ej[cross]]])
        gj = np.concatenate([owner[ej[cross]], owner[ei[cross]]])
        sel = fragment[ci]
        if not sel.any():
            break
        pair, count = np.unique(ci[sel] * k + gj[sel], return_counts=True)
        pc, pg = pair // k, pair % k
        # Most edges first, then the lower piece index: deterministic.
        best = np.lexsort((pg, -count, pc))
        _, first = np.unique(pc[best], return_index=True)
        new_group = comp_group.copy()
        new_group[pc[best][first]] = pg[best][first]
        owner = new_group[comp]
    return owner


def _optimise_sites(u, mass, cell, k, rng, graph=None):
    """Return (sites, weights) of a compact, population-balanced power diagram.

    With a sample ``graph``, each Lloyd step first hands every cell's detached
    clusters of samples to a neighbour (:func:`_contiguous`), so that a site is not
    pulled towards a part of its cell it cannot keep.
    """
    target = mass.sum() / k
    # k-means on density² × area: its cells' areas scale like 1/density, so they start
    # out holding roughly equal population.
    rho = mass / cell
    wt = rho * mass
    sites = u[_kmeans_pp(u, wt, k, rng)].copy()
    zero = np.zeros(k)
    for _ in range(_LLOYD_ROUNDS):
        owner, _ = _power_assign(u, sites, zero)
        if graph is not None:
            owner = _contiguous(owner, graph, cell, k)
        sites = _centroids(u, wt, owner, sites)
    # Snap each site to its nearest own sample: keeps every site inside the polygon.
    owner, _ = _power_assign(u, sites, zero)
    for j in range(k):
        own = np.flatnonzero(owner == j)
        if own.size:
            sites[j] = u[own[np.argmin(((u[own] - sites[j]) ** 2).sum(1))]]
    # Then only the power weights move: moving sites as well (a capacity-constrained
    # Lloyd) was tried and diverges, because the weights are only valid for the sites
    # they were solved for.
    weights, owner = _balance_weights(u, mass, cell, sites, zero, target, _FINAL_STEPS)
    if np.bincount(owner, minlength=k).min() == 0:
        # Every site must own a sample, or its piece could come out empty. A plain
        # Voronoi diagram of distinct sample sites guarantees it.
        weights = zero
    return sites, weights


# ------------------------------------------------------------------------ geometry


def _power_edges(
    sites: np.ndarray, weights: np.ndarray, extent: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the power diagram's vertices and its finite edges between real sites.

    Edges are pairs of vertex indices, so edges meeting at a vertex share its exact
    coordinates. Eight dummy sites far beyond ``extent`` (the distance from the origin
    to the farthest point of interest) make every real cell bounded.
    """
    k = len(sites)
    radius = max(float(np.sqrt((sites**2).sum(1)).max()), extent) + 1.0
    far = 8.0 * radius
    ring = (
        np.array(
            [[-1, -1], [0, -1], [1, -1], [1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0]], dtype=float
        )
        * far
    )
    pts = np.vstack([sites, ring])
    # Dummies as weak as the weakest site: their cells stay beyond 3.5 × radius, far
    # outside everything a real cell must cover.
    w = np.concatenate([weights, np.full(len(ring), weights.min())])
    lifted = np.column_stack([pts, (pts**2).sum(1) - w])
    hull = ConvexHull(lifted)
    eq = hull.equations
    lower = eq[:, 2] < -1e-12
    # A lower facet z = a·x + b·y + c is the power function of its diagram vertex (a/2, b/2).
    nz = np.where(lower, eq[:, 2], -1.0)
    vert = np.column_stack([-eq[:, 0] / (2.0 * nz), -eq[:, 1] / (2.0 * nz)])
    edges = []
    simp, nb = hull.simplices, hull.neighbors
    for f in np.flatnonzero(lower):
        for i in range(3):
            g = nb[f, i]
            if g <= f or not lower[g]:
                continue
            a, b = (simp[f, j] for j in range(3) if j != i)
            if a < k and b < k:
                edges.append((f, g))
    edges_arr = np.array(edges, dtype=np.int64).reshape(-1, 2)
    return vert, edges_arr


def _partition_part(
    part_ll: Polygon,
    part_m: Polygon,
    k: int,
    xy: np.ndarray,
    mass: np.ndarray,
    cell: np.ndarray,
    frame: LocalFrame,
    rng: np.random.Generator,
) -> list[BaseGeometry]:
    """Return ``k`` Polygons tiling the single Polygon ``part_ll``.

    Lloyd's algorithm only finds a local optimum; on a concave outline that can be a
    diagram whose cells fall apart, and handing the fragments over then upsets the
    balance. So a layout whose pieces miss their share by more than
    ``_GOOD_ENOUGH`` is retried from another k-means++ start with a Lloyd step that
    keeps cells contiguous, up to ``_ATTEMPTS`` times, and the best kept.
    """
    if k == 1:
        return [part_ll]
    if mass.sum() <= 0:
        mass = cell.copy()
    minx, miny, maxx, maxy = part_m.bounds
    origin = np.array([0.5 * (minx + maxx), 0.5 * (miny + maxy)])
    # Unit = side of an average piece: keeps weights and lifted coordinates well scaled.
    unit_m = math.sqrt(part_m.area / k)
    u = (xy - origin) / unit_m
    lon, lat = frame.inverse(xy[:, 0], xy[:, 1])
    target = mass.sum() / k
    best: tuple[float, list[BaseGeometry]] | None = None
    graph = None
    for attempt in range(_ATTEMPTS):
        if attempt == 1:
            graph = _sample_graph(u, cell / unit_m**2)
        sites, weights = _optimise_sites(u, mass, cell / unit_m**2, k, rng, graph)
        faces, owner, cell_owner = _faces(part_ll, sites, weights, frame, origin, unit_m)
        # Loads of the final pieces: the power cells' loads, corrected for the faces
        # that changed hands.
        load = np.bincount(_power_assign(u, sites, weights)[0], weights=mass, minlength=k)
        for f in np.flatnonzero(owner != cell_owner):
            inside = shapely.contains_xy(faces[f], lon, lat)
            moved = float(mass[inside].sum())
            load[cell_owner[f]] -= moved
            load[owner[f]] += moved
        score = float(np.abs(load / target - 1.0).max())
        if best is None or score < best[0]:
            best = (score, [shapely.union_all(faces[owner == j]) for j in range(k)])
        if score <= _GOOD_ENOUGH:
            break
    return best[1]


def _faces(part_ll, sites, weights, frame, origin, unit_m):
    """Return the faces tiling ``part_ll``, their final piece and their power cell."""
    k = len(sites)
    minx, miny, maxx, maxy = part_ll.bounds
    # Farthest bounding-box corner from the origin, in units.
    cx, cy = frame.forward(np.array([minx, maxx, minx, maxx]), np.array([miny, miny, maxy, maxy]))
    extent = float(np.hypot(cx - origin[0], cy - origin[1]).max()) / unit_m
    vert_u, edges = _power_edges(sites, weights, extent)
    vlon, vlat = frame.inverse(vert_u[:, 0] * unit_m + origin[0], vert_u[:, 1] * unit_m + origin[1])
    vert_ll = np.column_stack([vlon, vlat])
    seg = vert_ll[edges]
    seg = seg[(seg[:, 0] != seg[:, 1]).any(axis=1)]
    lines = shapely.linestrings(seg)
    noded = shapely.union_all(np.concatenate([lines, [part_ll.boundary]]))
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    faces = _inside_faces(faces, part_ll)

    reps = shapely.point_on_surface(faces)
    rx, ry = frame.forward(shapely.get_x(reps), shapely.get_y(reps))
    ru = (np.column_stack([rx, ry]) - origin) / unit_m
    cell_owner, _ = _power_assign(ru, sites, weights)
    owner = _fill_empty_groups(cell_owner, faces, k)
    owner = _merge_fragments(faces, owner, k)
    return faces, owner, cell_owner


def _inside_faces(faces: np.ndarray, part_ll: Polygon) -> np.ndarray:
    """Return the faces that lie inside ``part_ll``."""
    shapely.prepare(part_ll)
    inside = shapely.contains(part_ll, shapely.point_on_surface(faces))
    total = float(shapely.area(faces[inside]).sum())
    if abs(total - part_ll.area) > 1e-12 * part_ll.area:
        # The interior point of a sliver face can land on the boundary: decide by area.
        overlap = shapely.area(shapely.intersection(faces, part_ll))
        inside = overlap > 0.5 * shapely.area(faces)
    return faces[inside]


def _fill_empty_groups(owner: np.ndarray, faces: np.ndarray, k: int) -> np.ndarray:
    """Return ``owner`` with every piece holding at least one face."""
    owner = owner.copy()
    areas = shapely.area(faces)
    for j in range(k):
        if (owner == j).any():
            continue
        counts = np.bincount(owner, minlength=k)
        donors = np.flatnonzero(counts[owner] > 1)
        if donors.size == 0:
            raise PartitionError(f"cannot make {k} pieces: the cuts left too few faces")
        owner[donors[np.argmax(areas[donors])]] = j
    return owner


def _face_adjacency(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (i, j, shared boundary length) for faces sharing an edge, i < j."""
    tree = shapely.STRtree(faces)
    i, j = tree.query(faces, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    shared = shapely.length(
        shapely.intersection(shapely.boundary(faces[i]), shapely.boundary(faces[j]))
    )
    keep = shared > 0
    return i[keep], j[keep], shared[keep]


def _merge_fragments(faces: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """Return ``owner`` where every piece is edge-connected, where possible.

    Repeatedly hands the smallest fragment (a connected set of a piece's faces other
    than its largest) to the neighbouring piece it shares the longest boundary with.
    Each hand-over joins the fragment to that piece, so the number of fragments drops
    and the loop ends.
    """
    owner = owner.copy()
    n = len(faces)
    if n == 0:
        return owner
    ai, aj, shared = _face_adjacency(faces)
    areas = shapely.area(faces)
    for _ in range(n):
        same = owner[ai] == owner[aj]
        graph = coo_matrix((np.ones(int(same.sum())), (ai[same], aj[same])), shape=(n, n))
        ncomp, comp = connected_components(graph, directed=False)
        if ncomp == k:
            break
        comp_area = np.bincount(comp, weights=areas, minlength=ncomp)
        comp_group = np.zeros(ncomp, dtype=np.int64)
        comp_group[comp] = owner
        # The main component of each piece: largest area, ties to the lowest component.
        main = np.full(k, -1)
        for c in np.lexsort((np.arange(ncomp), -comp_area)):
            if main[comp_group[c]] < 0:
                main[comp_group[c]] = c
        fragments = [
            c for c in np.lexsort((np.arange(ncomp), comp_area)) if main[comp_group[c]] != c
        ]
        moved = False
        for c in fragments:
            cross = (comp[ai] == c) ^ (comp[aj] == c)
            if not cross.any():
                continue  # an island with no neighbours: nothing to join
            other = np.where(comp[ai[cross]] == c, owner[aj[cross]], owner[ai[cross]])
            length = np.bincount(other, weights=shared[cross], minlength=k)
            length[comp_group[c]] = -1.0
            owner[comp == c] = int(np.argmax(length))
            moved = True
            break
        if not moved:
            break
    return owner

"""Automatic proposals: an area cut into k balanced, contiguous grids nested in its communities.

Pure: numpy, shapely, networkx and GerryChain (the redistricting field's library).

How :func:`propose_grids` works
-------------------------------
1. **Blocks** (:func:`make_blocks`): a square lattice in a
   :class:`~geo.population.LocalFrame`, refined as a quadtree where a cell would weigh more
   than a small share of a grid, noded with each region's boundary and polygonized. The
   blocks of a region tile it exactly (neighbours share identical edge coordinates, and the
   region's own vertices are kept), so grids dissolved from blocks tile it too. Rook
   adjacency (a shared edge of positive length) makes the block graph.
2. **Weights** (:func:`weigh_blocks`): each block's population, households, units and
   incidents (weighted points counted in it); the balanced quantity is a blend of their
   shares (population alone by default).
3. **Grids per community**: the k grids are apportioned to the communities by weight
   (largest remainder, at least one each), so that no grid straddles a community.
4. **Partition**: GerryChain's recursive spanning-tree partition
   (``recursive_tree_part``) cuts each community's block graph into its grids, every grid
   a connected set of blocks within ``epsilon`` of the community's ideal; then
   ``short bursts`` of ReCom moves (GerryChain's ``SingleMetricOptimizer``) shorten the
   total boundary between grids, i.e. make them more compact, keeping the balance.
5. **Dissolve**: each grid is the coverage union of its blocks, numbered west→east,
   north→south within its community (CJ/T 213).

Nesting has a price: a community's grids can only share its weight, so the county-wide
deviation is bounded below by the apportionment (a community worth 3.5 grids gets 3 or 4).
:attr:`Proposal.max_abs_dev_in_community` is what the partition controls;
:attr:`Proposal.max_abs_dev` is the plan's deviation from the county-wide mean.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import networkx as nx
import numpy as np
import shapely
from gerrychain import Graph, Partition
from gerrychain.constraints import within_percent_of_ideal_population
from gerrychain.optimization import SingleMetricOptimizer
from gerrychain.partition.initial_partition_generators import recursive_tree_part
from gerrychain.proposals import recom
from gerrychain.tree import bipartition_tree
from shapely.geometry.base import BaseGeometry

from geo.partition import order_west_east_north_south
from geo.planmetrics import PointLayer, count_in_grids
from geo.population import LocalFrame, apportion

__all__ = [
    "ProposalError",
    "Blocks",
    "Proposal",
    "make_blocks",
    "weigh_blocks",
    "block_graph",
    "region_graph",
    "partition_blocks",
    "dissolve",
    "Prepared",
    "prepare_blocks",
    "finish_proposal",
    "propose_grids",
]

#: Quadtree refinement: a cell heavier than this share of a grid's ideal weight is split.
MAX_BLOCK_SHARE = 0.05
_MAX_DEPTH = 4
_MEASURES = ("population", "households", "units", "incidents", "area")


class ProposalError(ValueError):
    """The area cannot be cut as asked (too few blocks, a region without weight, ...)."""


@dataclass
class Blocks:
    """Building blocks: lon/lat polygons, the region (community) of each, their loads."""

    geoms: np.ndarray
    region: np.ndarray
    loads: dict[str, np.ndarray] = field(default_factory=dict)
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.geoms.size)


@dataclass(frozen=True)
class Proposal:
    """A proposed plan: grid codes, lon/lat geometries, their community and weight."""

    codes: list[str]
    geoms: list[BaseGeometry]
    communities: list[str]
    weights: np.ndarray
    assignment: np.ndarray
    seconds: float

    @property
    def max_abs_dev(self) -> float:
        """Largest |weight / mean - 1| over the plan."""
        w = np.asarray(self.weights, dtype=float)
        return float(np.abs(w / w.mean() - 1).max()) if w.size and w.mean() > 0 else 0.0

    @property
    def max_abs_dev_in_community(self) -> float:
        """Largest |weight / community mean - 1|: the balance the partition controls."""
        w = np.asarray(self.weights, dtype=float)
        comm = np.asarray(self.communities, dtype=object)
        worst = 0.0
        for c in set(self.communities):
            sel = w[comm == c]
            if sel.mean() > 0:
                worst = max(worst, float(np.abs(sel / sel.mean() - 1).max()))
        return worst


def _cells(regions_m, block_m: float, density_xy, max_weight: float):
    """Return metric boxes (x0, y0, size) covering the regions, refined where heavy."""
    minx, miny, maxx, maxy = shapely.total_bounds(regions_m)
    nx_, ny_ = int(math.ceil((maxx - minx) / block_m)), int(math.ceil((maxy - miny) / block_m))
    ii, jj = np.meshgrid(np.arange(nx_), np.arange(ny_), indexing="ij")
    x0 = minx + ii.ravel() * block_m
    y0 = miny + jj.ravel() * block_m
    size = np.full(x0.size, block_m)
    tree = shapely.STRtree(regions_m)
    boxes = shapely.box(x0, y0, x0 + size, y0 + size)
    hit = np.unique(tree.query(boxes, predicate="intersects")[0])
    x0, y0, size = x0[hit], y0[hit], size[hit]
    if density_xy is None:
        return x0, y0, size
    px, py, pw = density_xy
    out = []
    for _depth in range(_MAX_DEPTH + 1):
        heavy = np.zeros(x0.size, dtype=bool)
        if _depth < _MAX_DEPTH and px.size:
            # Weight per cell: the points in it.
            wsum = np.zeros(x0.size)
            cell_tree = shapely.STRtree(shapely.box(x0, y0, x0 + size, y0 + size))
            ci, pi = cell_tree.query(shapely.points(px, py), predicate="intersects")[::-1]
            np.add.at(wsum, ci, pw[pi])
            heavy = wsum > max_weight
        out.append((x0[~heavy], y0[~heavy], size[~heavy]))
        if not heavy.any():
            break
        hx, hy, hs = x0[heavy], y0[heavy], size[heavy] / 2
        x0 = np.concatenate([hx, hx + hs, hx, hx + hs])
        y0 = np.concatenate([hy, hy, hy + hs, hy + hs])
        size = np.concatenate([hs, hs, hs, hs])
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def make_blocks(
    regions: Mapping[str, BaseGeometry],
    *,
    frame: LocalFrame,
    block_m: float,
    density: PointLayer | None = None,
    max_block_weight: float | None = None,
) -> Blocks:
    """Return blocks tiling each lon/lat region: lattice cells of ``block_m`` metres, split
    in four (up to 4 times) while heavier than ``max_block_weight`` of ``density``'s weighted
    points, noded with the region's boundary and polygonized.
    """
    if not (math.isfinite(block_m) and block_m > 0):
        raise ProposalError(f"block_m must be > 0, got {block_m}")
    codes = list(regions)
    if not codes:
        raise ProposalError("no regions to cut into blocks")
    geoms_ll = np.array([regions[c] for c in codes], dtype=object)
    if shapely.is_empty(geoms_ll).any() or not shapely.is_valid(geoms_ll).all():
        raise ProposalError("every region must be a valid, non-empty polygon")
    regions_m = frame.to_metric(geoms_ll)
    dens = None
    if density is not None and len(density) and max_block_weight:
        x, y = frame.forward(density.lon, density.lat)
        w = np.ones(x.size) if density.weight is None else density.weight
        dens = (x, y, w)
    x0, y0, size = _cells(regions_m, block_m, dens, max_block_weight or math.inf)
    boxes_m = shapely.box(x0, y0, x0 + size, y0 + size)
    boxes_ll = frame.to_lonlat(boxes_m)
    box_tree = shapely.STRtree(boxes_ll)
    out_geoms, out_region = [], []
    for code, geom in zip(codes, geoms_ll, strict=True):
        idx = box_tree.query(geom, predicate="intersects")
        if idx.size == 0:
            out_geoms.append(np.array([geom], dtype=object))
            out_region.append([code])
            continue
        lines = shapely.union_all(
            np.concatenate([shapely.boundary(boxes_ll[idx]), [shapely.boundary(geom)]])
        )
        faces = shapely.get_parts(shapely.polygonize([lines]))
        shapely.prepare(geom)
        inside = shapely.contains(geom, shapely.point_on_surface(faces))
        faces = faces[inside]
        out_geoms.append(faces)
        out_region.extend([code] * faces.size)
    return Blocks(
        geoms=np.concatenate(out_geoms), region=np.array(out_region, dtype=object), loads={}
    )


def weigh_blocks(
    blocks: Blocks,
    layers: Mapping[str, PointLayer],
    *,
    balance: Mapping[str, float] | None = None,
    frame: LocalFrame | None = None,
) -> Blocks:
    """Return ``blocks`` with each layer counted per block and the balanced weight.

    ``layers`` maps ``population``, ``households``, ``units``, ``incidents`` to weighted
    points; ``area`` (m², given ``frame``) is a measure too. ``balance`` maps measures to
    importance (default ``{"population": 1}``); the weight is
    ``sum(importance * load / total load)`` scaled to the population total (or to the first
    measure's total), so it reads in people.
    """
    balance = dict(balance or {"population": 1.0})
    unknown = sorted(set(balance) - set(_MEASURES))
    if unknown:
        raise ProposalError(f"unknown balance measure(s): {', '.join(unknown)}")
    missing = sorted(m for m in balance if m not in layers and m != "area")
    if missing:
        raise ProposalError(f"no points for balance measure(s): {', '.join(missing)}")
    loads = {name: count_in_grids(blocks.geoms, layer) for name, layer in layers.items()}
    if frame is not None:
        loads["area"] = shapely.area(frame.to_metric(blocks.geoms))
    elif "area" in balance:
        raise ProposalError("balancing area needs the metric frame")
    share = np.zeros(len(blocks))
    for m, imp in balance.items():
        total = loads[m].sum()
        if total <= 0:
            raise ProposalError(f"the area has no {m} to balance")
        share += float(imp) * loads[m] / total
    scale_m = "population" if "population" in balance else next(iter(balance))
    weight = share / share.sum() * loads[scale_m].sum()
    return Blocks(geoms=blocks.geoms, region=blocks.region, loads=loads, weight=weight)


def block_graph(blocks: Blocks, *, frame: LocalFrame) -> nx.Graph:
    """Return the rook adjacency graph of the blocks (shared edge > 0), edges weighted by
    the shared length in metres, nodes carrying ``weight`` and ``region``."""
    g = nx.Graph()
    weight = blocks.weight if blocks.weight is not None else np.ones(len(blocks))
    for i in range(len(blocks)):
        g.add_node(i, weight=float(weight[i]), region=blocks.region[i])
    tree = shapely.STRtree(blocks.geoms)
    a, b = tree.query(blocks.geoms, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    shared = shapely.length(frame.to_metric(shapely.intersection(blocks.geoms[a], blocks.geoms[b])))
    for i, j, length in zip(a[shared > 0], b[shared > 0], shared[shared > 0], strict=True):
        g.add_edge(int(i), int(j), shared_m=float(length))
    return g


def _connect(sub: nx.Graph, blocks: Blocks) -> nx.Graph:
    """Join a region's disconnected pieces (islands) to their nearest piece by one edge."""
    comps = [list(c) for c in nx.connected_components(sub)]
    if len(comps) <= 1:
        return sub
    sub = sub.copy()
    comps.sort(key=len, reverse=True)
    main = comps[0]
    for comp in comps[1:]:
        tree = shapely.STRtree(blocks.geoms[main])
        ci, mi = tree.query_nearest(blocks.geoms[comp], all_matches=False)
        sub.add_edge(int(comp[ci[0]]), int(main[mi[0]]), shared_m=0.0)
        main = main + comp
    return sub


def _cut_length(shared: dict):
    def score(part: Partition) -> float:
        return sum(shared[e] for e in part["cut_edges"])

    return score


def region_graph(graph: nx.Graph, blocks: Blocks, region: str) -> nx.Graph:
    """Return the block graph of one region, nodes renumbered from 0 (attribute ``block``:
    the block's index), islands joined to their nearest piece."""
    nodes = [n for n in graph.nodes if graph.nodes[n]["region"] == region]
    sub = _connect(graph.subgraph(nodes), blocks)
    return nx.convert_node_labels_to_integers(sub, label_attribute="block")


def partition_blocks(
    graph: nx.Graph,
    blocks: Blocks,
    k_by_region: Mapping[str, int],
    *,
    epsilon: float = 0.04,
    seed: int = 0,
    bursts: int = 10,
    burst_length: int = 5,
) -> np.ndarray:
    """Return each block's grid number: every region's blocks cut into its ``k`` grids,
    connected and within ``epsilon`` of the region's ideal weight, then made more compact
    by ``bursts`` short bursts of ReCom (shorter total boundary, same balance)."""
    if not 0 < epsilon < 1:
        raise ProposalError(f"epsilon must be in (0, 1), got {epsilon}")
    assignment = np.full(len(blocks), -1, dtype=int)
    next_part = 0
    rng = random.Random(seed)
    for region, k in k_by_region.items():
        nodes = [n for n in graph.nodes if graph.nodes[n]["region"] == region]
        if k < 1 or not nodes:
            raise ProposalError(f"community {region} has no blocks or no grids")
        if len(nodes) < k:
            raise ProposalError(
                f"community {region} has {len(nodes)} blocks for {k} grids; use smaller blocks"
            )
        if k == 1:
            assignment[nodes] = next_part
            next_part += 1
            continue
        local = region_graph(graph, blocks, region)
        gc_graph = Graph.from_networkx(local)
        total = sum(d["weight"] for _, d in local.nodes(data=True))
        target = total / k
        parts = list(range(k))
        flips = None
        for attempt in range(8):
            try:
                flips = recursive_tree_part(
                    gc_graph,
                    parts,
                    target,
                    "weight",
                    epsilon,
                    bipartition_tree_fn=partial(bipartition_tree, max_attempts=2000),
                    rng=rng.randrange(2**31) + attempt,
                )
                break
            except Exception:  # gerrychain raises several kinds when no balanced cut is found
                continue
        if flips is None:
            raise ProposalError(
                f"could not cut community {region} into {k} grids within "
                f"{epsilon:.0%}: use smaller blocks or a looser balance"
            )
        if bursts > 0:
            shared = {}
            for u, v, d in local.edges(data=True):
                shared[(u, v)] = shared[(v, u)] = d.get("shared_m", 0.0)
            proposal = partial(
                recom,
                pop_col="weight",
                pop_target=target,
                epsilon=epsilon,
                rng=rng.randrange(2**31),
            )
            part = Partition(
                gc_graph,
                flips,
                updaters={
                    "weight": _tally("weight"),
                    "cut_edges": _cut_edges_updater(),
                },
            )
            opt = SingleMetricOptimizer(
                proposal_fn=proposal,
                constraints=[within_percent_of_ideal_population(part, epsilon, pop_key="weight")],
                initial_state=part,
                optimization_metric_fn=_cut_length(shared),
                maximize=False,
                rng=rng.randrange(2**31),
            )
            for _ in opt.short_bursts(burst_length, bursts):
                pass
            flips = dict(opt.best_part.assignment)
        for node, p in flips.items():
            assignment[local.nodes[node]["block"]] = next_part + int(p)
        next_part += k
    return assignment


def _tally(col: str):
    from gerrychain.updaters import Tally

    return Tally(col, alias=col)


def _cut_edges_updater():
    from gerrychain.updaters import cut_edges

    return cut_edges


def dissolve(blocks: Blocks, assignment: np.ndarray) -> list[BaseGeometry]:
    """Return one geometry per grid number: the coverage union of its blocks."""
    k = int(assignment.max()) + 1
    out = []
    for p in range(k):
        parts = blocks.geoms[assignment == p]
        out.append(shapely.coverage_union_all(parts))
    return out


@dataclass
class Prepared:
    """The weighted blocks of an area, their graph and the grids each region gets."""

    blocks: Blocks
    graph: nx.Graph
    k_by_region: dict[str, int]
    frame: LocalFrame
    #: the community each block lies in (its region when nested)
    home: np.ndarray


def prepare_blocks(
    communities: Mapping[str, BaseGeometry],
    k: int,
    layers: Mapping[str, PointLayer],
    *,
    balance: Mapping[str, float] | None = None,
    blocks_per_grid: int = 25,
    nest: bool = True,
) -> Prepared:
    """Return the blocks of :func:`propose_grids` (steps 1–3), weighted, with their graph."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ProposalError(f"k must be a positive integer, got {k!r}")
    if not communities:
        raise ProposalError("no communities to cut")
    if nest and k < len(communities):
        raise ProposalError(
            f"k={k} is fewer than the {len(communities)} communities; each needs a grid"
        )
    geoms = np.array(list(communities.values()), dtype=object)
    frame = LocalFrame.around(geoms)
    if nest:
        regions = dict(communities)
    else:
        regions = {"*": shapely.coverage_union_all(geoms)}
    total_m2 = float(shapely.area(frame.to_metric(geoms)).sum())
    block_m = math.sqrt(total_m2 / (k * blocks_per_grid))
    scale_layer = layers.get("population") if balance is None else None
    if scale_layer is None and balance:
        scale_layer = layers.get(next(iter(balance)))
    if isinstance(balance, Mapping) and "area" in balance:
        scale_layer = None
    heavy = None
    if scale_layer is not None and len(scale_layer):
        w = np.ones(len(scale_layer)) if scale_layer.weight is None else scale_layer.weight
        heavy = MAX_BLOCK_SHARE * float(w.sum()) / k
    blocks = make_blocks(
        regions, frame=frame, block_m=block_m, density=scale_layer, max_block_weight=heavy
    )
    if nest:
        home = blocks.region
    else:
        # Blocks keep the community they lie in (for the proposal's numbering).
        tree = shapely.STRtree(geoms)
        codes = np.array(list(communities), dtype=object)
        reps = shapely.point_on_surface(blocks.geoms)
        bi, ci = tree.query(reps, predicate="within")
        home = np.full(len(blocks), next(iter(communities)), dtype=object)
        home[bi] = codes[ci]
    blocks = weigh_blocks(blocks, layers, balance=balance, frame=frame)
    graph = block_graph(blocks, frame=frame)
    if nest:
        region_w = {c: float(blocks.weight[blocks.region == c].sum()) for c in regions}
        counts = apportion(k, list(region_w.values()), minimum=1)
        k_by_region = dict(zip(region_w, counts, strict=True))
    else:
        k_by_region = {"*": k}
    return Prepared(blocks, graph, k_by_region, frame, home)


def finish_proposal(prepared: Prepared, assignment: np.ndarray, *, started: float) -> Proposal:
    """Return the proposal of a block assignment: grids dissolved, weighed and numbered."""
    blocks, home = prepared.blocks, prepared.home
    k = int(assignment.max()) + 1
    grid_geoms = dissolve(blocks, assignment)
    weights = np.bincount(assignment, weights=blocks.weight, minlength=k)
    grid_comm = []
    for p in range(k):
        vals, cnt = np.unique(home[assignment == p].astype(str), return_counts=True)
        grid_comm.append(str(vals[np.argmax(cnt)]))
    codes_out = [""] * k
    for c in dict.fromkeys(grid_comm):
        idx = [p for p in range(k) if grid_comm[p] == c]
        order = order_west_east_north_south([grid_geoms[p] for p in idx])
        for seq, o in enumerate(order, start=1):
            codes_out[idx[o]] = f"{c}{seq:03d}"
    return Proposal(
        codes=codes_out,
        geoms=grid_geoms,
        communities=grid_comm,
        weights=weights,
        assignment=assignment,
        seconds=time.perf_counter() - started,
    )


def propose_grids(
    communities: Mapping[str, BaseGeometry],
    k: int,
    layers: Mapping[str, PointLayer],
    *,
    balance: Mapping[str, float] | None = None,
    epsilon: float = 0.04,
    blocks_per_grid: int = 25,
    bursts: int = 10,
    seed: int = 0,
    nest: bool = True,
) -> Proposal:
    """Return a proposal of ``k`` contiguous grids balanced by ``balance`` over ``layers``.

    Parameters
    ----------
    communities
        ``{code: lon/lat polygon}``: the area, and the boundaries grids must not cross.
    k
        Number of grids, at least one per community when ``nest``.
    layers
        ``population``/``households``/``units``/``incidents`` as weighted points.
    balance
        Importance of each measure in the balanced weight (default population only).
    epsilon
        Allowed deviation of a grid from its community's ideal weight.
    blocks_per_grid
        Lattice cells per grid on average (heavy cells are split further).
    bursts
        Short bursts of ReCom spent on compactness per community (0: none).
    nest
        ``False`` treats the area as one region (county-wide balance, grids may straddle).

    Raises
    ------
    ProposalError
        Naming what cannot be done (k too small or too large, no weight, no balanced cut).
    """
    started = time.perf_counter()
    prepared = prepare_blocks(
        communities, k, layers, balance=balance, blocks_per_grid=blocks_per_grid, nest=nest
    )
    assignment = partition_blocks(
        prepared.graph,
        prepared.blocks,
        prepared.k_by_region,
        epsilon=epsilon,
        seed=seed,
        bursts=bursts,
    )
    return finish_proposal(prepared, assignment, started=started)

"""Assign millions of points to grid cells, exactly as PostGIS ``ST_Covers`` would.

Pure: numpy and shapely only. The hot path of imports and of re-mapping after boundaries
change: which cell covers each point, with the project's tie-break for points on a shared
edge or vertex (the covering cell with the **smallest code** wins, codes compared as
strings), and -1 for points outside every cell.

How :class:`CellIndex` works (a "rasterised cell index")
-------------------------------------------------------
A regular raster is laid over the cells' bounding box. Every pixel is one of

- *interior*: no cell boundary comes near it, and it lies inside a cell, whose index the
  pixel stores: a point there is answered by one array read;
- *outside*: no cell boundary comes near it and no cell covers it: the answer is -1;
- *edge*: some cell boundary passes through it (or within a margin of it). The pixel stores
  the short list of cells that may cover a point in it, and those points are tested
  exactly, one candidate cell at a time, in a vectorised winding-number test.

Points outside the raster are outside every cell (-1) at once.

Building it: every boundary segment is cut into pieces at most half a pixel long, and each
piece marks the (at most 2 x 2) pixels its bounding box, grown by a margin, touches: a
superset of the pixels the boundary passes through, which is the safe side. The margin
(a millionth of a pixel, at least 1,024 ulps of the largest coordinate) dwarfs the
rounding error of any coordinate arithmetic here or in PostGIS, so a pixel is only ever
called interior or outside when every point that lands in it is far, in floating-point
terms, from every boundary, where all exact point-in-polygon algorithms agree. The other
pixels are filled by a scanline pass through the pixel centres (even-odd per polygon part),
which is exact for them because no boundary crosses a row near their centre. Cells that
overlap (not expected of a grid, but handled) are resolved by a direct query.

Which exact test: PostGIS, not GEOS
-----------------------------------
PostGIS 3.x answers ``ST_Covers(polygon, point)`` without GEOS: after a bounding-box check
it runs its own winding-number test (``point_in_multipolygon`` / ``point_in_ring`` in
``lwgeom_functions_analytic.c`` and ``lwgeom_rtree.c``) in plain double arithmetic: the side
of each segment is ``(x2-x1)*(py-y1) - (px-x1)*(y2-y1)``, a point is on the boundary when
that is exactly 0.0 and the point lies in the segment's bounding box, and otherwise the
winding number decides. GEOS (shapely) uses robust orientation predicates instead. The two
agree everywhere except on points within rounding error of a boundary (for example points
interpolated along an edge): there the naive product can round to exactly zero, PostGIS
then calls the point *on* the boundary, i.e. covered by both neighbours, and the smallest
code wins, where GEOS picks the one side the point is truly on. :class:`CellIndex` repeats
PostGIS's arithmetic operation by operation (numpy float64, no fused multiply-add, as
PostGIS is compiled for plain x86-64), so its answers are identical to
``ST_Covers`` + smallest code on every point, provided the geometries are the ones stored in
PostGIS vertex for vertex (same coordinates, same ring orientation and order: load them as
WKB). ``semantics="geos"`` uses shapely's ``intersects_xy`` (for a point and a polygon the
same as covers) instead, to agree with shapely or geopandas.

Known divergences from PostGIS, all needing pathological input: PostGIS skips a segment
shorter than 1e-12 in its cached (r-tree) code path but only a zero-length one otherwise
(here: only zero-length ones, so the two agree unless a ring has two distinct vertices
closer than 1e-12 degrees); a Polygon (not MultiPolygon) whose exterior boundary and a
hole's interior both claim a point is "on the boundary" in PostGIS's multipolygon path and
"outside" in its single-polygon path (here: on the boundary); and PostGIS's test can call a
point far from a nearly horizontal segment (rise of a few ulps) "on its line", which no
exact method repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

__all__ = ["CellIndex", "CellIndexError", "assign_points_to_cells"]

Semantics = Literal["postgis", "geos"]

#: Default bound on raster pixels (4 bytes each).
_MAX_PIXELS = 12_000_000
#: Automatic resolution: pixel side as a share of a typical cell's side.
_PIXELS_PER_CELL_SIDE = 40.0
#: Edge points are tested in chunks of about this many (point, segment) entries, to
#: bound temporary memory whatever the number of candidates per pixel.
_CHUNK_WORK = 1 << 21
_OUTSIDE = -1
#: Pixel values <= this are edge pixels: value = _EDGE - edge_ordinal.
_EDGE = -2


class CellIndexError(ValueError):
    """The cells or points cannot be indexed or assigned as given."""


class CellIndex:
    """An index of cells that assigns points to them as ``ST_Covers`` + smallest code would.

    Parameters
    ----------
    codes
        One code per cell (strings, unique). Ties between cells covering a point go to
        the smallest code in Python string order, which for strings of digits is the
        order of every PostgreSQL collation.
    geoms
        One valid, non-empty shapely Polygon or MultiPolygon per cell, lon/lat
        (EPSG:4326). For results identical to PostGIS they must be the stored geometries
        vertex for vertex (see the module notes).
    pixel_size
        Raster pixel height in degrees (the width is scaled by 1/cos(latitude) so that
        pixels are square on the ground). ``None`` chooses it from the cells: about
        1/40 of the side of a median cell, within ``max_pixels``.
    max_pixels
        Upper bound on the number of raster pixels (4 bytes each); the pixel size is
        enlarged to respect it.
    semantics
        ``"postgis"`` (default) repeats PostGIS 3's point-in-polygon arithmetic, so
        results equal ``ST_Covers`` exactly; ``"geos"`` uses GEOS's robust predicates, as
        shapely and geopandas do.

    Raises
    ------
    CellIndexError
        If there is no cell, the lengths differ, a code is not a unique string, a geometry
        is not a valid non-empty Polygon/MultiPolygon with finite coordinates, or an
        option is out of range.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> index = CellIndex(["002", "001"], [box(1, 0, 2, 1), box(0, 0, 1, 1)])
    >>> index.assign(np.array([0.5, 1.0, 1.5, 3.0]), np.array([0.5, 0.5, 0.5, 0.5])).tolist()
    [1, 1, 0, -1]
    """

    def __init__(
        self,
        codes: Sequence[str],
        geoms: Sequence[Polygon | MultiPolygon],
        *,
        pixel_size: float | None = None,
        max_pixels: int = _MAX_PIXELS,
        semantics: Semantics = "postgis",
    ) -> None:
        codes = list(codes)
        geoms_arr = np.empty(len(geoms), dtype=object)
        geoms_arr[:] = list(geoms)
        _check_cells(codes, geoms_arr)
        if semantics not in ("postgis", "geos"):
            raise CellIndexError(f"semantics must be 'postgis' or 'geos', got {semantics!r}")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
            raise CellIndexError(f"max_pixels must be an integer, got {max_pixels!r}")
        if max_pixels < 1:
            raise CellIndexError(f"max_pixels must be >= 1, got {max_pixels}")
        if pixel_size is not None and not (
            isinstance(pixel_size, int | float | np.floating)
            and math.isfinite(pixel_size)
            and pixel_size > 0
        ):
            raise CellIndexError(f"pixel_size must be a finite number > 0, got {pixel_size!r}")

        self.codes: tuple[str, ...] = tuple(codes)
        self.geoms = geoms_arr
        self.semantics: Semantics = semantics
        n = len(codes)
        order = sorted(range(n), key=codes.__getitem__)
        #: rank[i]: position of cell i's code in string order.
        self._rank = np.empty(n, dtype=np.int64)
        self._rank[order] = np.arange(n)
        self._by_rank = np.asarray(order, dtype=np.int64)

        self._extract_segments()
        self._choose_raster(pixel_size, int(max_pixels))
        self._classify()
        self._build_slabs()
        if semantics == "geos":
            shapely.prepare(self.geoms)

    # ---------------------------------------------------------------- public API

    @property
    def shape(self) -> tuple[int, int]:
        """Return (rows, columns) of the raster."""
        return self._nrows, self._ncols

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Return (width, height) of a raster pixel in degrees."""
        return self._w, self._h

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Return (west, south, east, north) of the raster; points beyond it get -1 at once."""
        return (
            self._x0,
            self._y0,
            self._x0 + self._ncols * self._w,
            self._y0 + self._nrows * self._h,
        )

    @property
    def edge_fraction(self) -> float:
        """Return the share of raster pixels that are edge pixels (tested exactly)."""
        return self._n_edge / self._pix.size

    def assign(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return, per point, the index of the covering cell with the smallest code, or -1.

        Parameters
        ----------
        lon, lat
            Arrays (any shape, equal shapes) of longitudes and latitudes in degrees.

        Returns
        -------
        numpy.ndarray
            ``intp`` array of the same shape: an index into :attr:`codes`, or -1 for
            points covered by no cell (and for non-finite coordinates).

        Raises
        ------
        CellIndexError
            If the shapes differ.

        Examples
        --------
        >>> from shapely.geometry import box
        >>> index = CellIndex(["b", "a"], [box(0, 0, 1, 1), box(1, 0, 2, 1)])
        >>> index.assign(np.array([1.0]), np.array([0.25])).tolist()  # shared edge: "a"
        [1]
        """
        x = np.asarray(lon, dtype=np.float64)
        y = np.asarray(lat, dtype=np.float64)
        if x.shape != y.shape:
            raise CellIndexError(f"lon and lat shapes differ: {x.shape} vs {y.shape}")
        shape = x.shape
        x = x.ravel()
        y = y.ravel()
        out = np.full(x.size, _OUTSIDE, dtype=np.intp)
        if x.size == 0:
            return out.reshape(shape)
        # Same formula as the build (monotone in x and y): a point lands in the pixel
        # whose marks were computed for it. NaN fails every comparison: outside.
        with np.errstate(over="ignore", invalid="ignore"):
            fx = (x - self._x0) / self._w
            fy = (y - self._y0) / self._h
        inside = (fx >= 0) & (fx < self._ncols) & (fy >= 0) & (fy < self._nrows)
        pts = np.flatnonzero(inside)
        row = fy[pts].astype(np.int64)
        pix = row * self._ncols + fx[pts].astype(np.int64)
        val = self._pix[pix]
        interior = val >= 0
        out[pts[interior]] = val[interior]
        edge = np.flatnonzero(val <= _EDGE)
        ordinal = _EDGE - val[edge]
        work = np.cumsum(self._edge_work[ordinal])
        cuts = np.searchsorted(work, np.arange(_CHUNK_WORK, work[-1] if work.size else 0, _CHUNK_WORK))
        for sel in np.split(np.arange(edge.size), np.unique(cuts)):
            if sel.size:
                p = pts[edge[sel]]
                out[p] = self._exact(x[p], y[p], ordinal[sel])
        return out.reshape(shape)

    def assign_codes(self, lon: np.ndarray, lat: np.ndarray) -> list[str | None]:
        """Return, per point, the code of the covering cell with the smallest code, or None.

        Examples
        --------
        >>> from shapely.geometry import box
        >>> CellIndex(["7"], [box(0, 0, 1, 1)]).assign_codes([0.5, 2.0], [0.5, 0.5])
        ['7', None]
        """
        idx = self.assign(lon, lat).ravel()
        codes = self.codes
        return [codes[i] if i >= 0 else None for i in idx.tolist()]

    # ------------------------------------------------------------------- build

    def _extract_segments(self) -> None:
        parts, part_cell = shapely.get_parts(self.geoms, return_index=True)
        # get_rings lists each polygon's exterior ring first, then its holes in order:
        # the order PostGIS tests them in.
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
        first_of_part = np.ones(len(rings), dtype=bool)
        first_of_part[1:] = ring_part[1:] != ring_part[:-1]
        seg = np.flatnonzero(coord_ring[1:] == coord_ring[:-1])
        x1, y1 = coords[seg, 0], coords[seg, 1]
        x2, y2 = coords[seg + 1, 0], coords[seg + 1, 1]
        ring = coord_ring[seg]
        self._ring_part = ring_part.astype(np.int64)
        self._ring_is_hole = ~first_of_part
        self._part_cell = part_cell.astype(np.int64)
        self._sx1, self._sy1, self._sx2, self._sy2 = x1, y1, x2, y2
        self._seg_ring = ring.astype(np.int64)
        self._seg_part = self._ring_part[self._seg_ring]
        self._seg_cell = self._part_cell[self._seg_part]
        self._bounds = (
            float(coords[:, 0].min()),
            float(coords[:, 1].min()),
            float(coords[:, 0].max()),
            float(coords[:, 1].max()),
        )

    def _choose_raster(self, pixel_size: float | None, max_pixels: int) -> None:
        minx, miny, maxx, maxy = self._bounds
        mid_lat = math.radians(0.5 * (miny + maxy))
        aspect = 1.0 / max(math.cos(mid_lat), 0.05)  # width / height, square on the ground
        if pixel_size is None:
            # A typical cell's side in degrees of latitude, from its bounding box area.
            b = shapely.bounds(self.geoms)
            side = np.sqrt(np.maximum((b[:, 2] - b[:, 0]) / aspect * (b[:, 3] - b[:, 1]), 0))
            side = side[side > 0]
            typical = float(np.median(side)) if side.size else max(maxx - minx, maxy - miny)
            h = typical / _PIXELS_PER_CELL_SIDE
        else:
            h = float(pixel_size)
        span_x = max(maxx - minx, 0.0)
        span_y = max(maxy - miny, 0.0)
        if not h > 0:
            h = max(span_x / aspect, span_y, 1e-9)
        # Enlarge the pixels until the raster fits (never below one pixel).
        while (math.floor(span_x / (h * aspect)) + 1) * (math.floor(span_y / h) + 1) > max_pixels:
            h *= 1.1
        self._w = h * aspect
        self._h = h
        self._x0, self._y0 = minx, miny
        # Columns/rows by the formula assign() uses: the largest coordinate lands inside.
        self._ncols = int(math.floor((maxx - minx) / self._w)) + 1
        self._nrows = int(math.floor((maxy - miny) / self._h)) + 1
        scale = max(abs(minx), abs(maxx), abs(miny), abs(maxy), 1.0)
        # Far wider than any rounding error of coordinate arithmetic (ulps), far narrower
        # than a pixel: pixels within it of a boundary are edge pixels.
        self._margin = max(1e-6 * min(self._w, self._h), 1024 * np.finfo(float).eps * scale)

    def _col(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((x - self._x0) / self._w), 0, self._ncols - 1).astype(np.int64)

    def _row(self, y: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((y - self._y0) / self._h), 0, self._nrows - 1).astype(np.int64)

    def _classify(self) -> None:
        ncols, nrows = self._ncols, self._nrows
        n_cells = len(self.codes)
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        m = self._margin

        # 1. Edge marks: pieces at most half a pixel long, each marking the pixels its
        # grown bounding box touches (at most 2 x 2, as it is narrower than a pixel).
        dx, dy = x2 - x1, y2 - y1
        n_pieces = np.maximum(
            np.ceil(np.maximum(np.abs(dx) / self._w, np.abs(dy) / self._h) * 2.0), 1
        ).astype(np.int64)
        seg = np.repeat(np.arange(dx.size), n_pieces)
        k = _ragged_arange(np.zeros_like(n_pieces), n_pieces).astype(np.float64)
        t0 = k / n_pieces[seg]
        t1 = (k + 1) / n_pieces[seg]
        ax, ay = x1[seg] + dx[seg] * t0, y1[seg] + dy[seg] * t0
        bx = np.where(t1 == 1.0, x2[seg], x1[seg] + dx[seg] * t1)
        by = np.where(t1 == 1.0, y2[seg], y1[seg] + dy[seg] * t1)
        c0, c1 = self._col(np.minimum(ax, bx) - m), self._col(np.maximum(ax, bx) + m)
        r0, r1 = self._row(np.minimum(ay, by) - m), self._row(np.maximum(ay, by) + m)
        rank = self._rank[self._seg_cell[seg]]
        del ax, ay, bx, by, t0, t1, k
        mark_keys = np.concatenate(
            [
                (r * ncols + c) * n_cells + rank
                for r, c in ((r0, c0), (r0, c1), (r1, c0), (r1, c1))
            ]
        )
        mark_keys = _unique(mark_keys)
        edge_pixels = _unique(mark_keys // n_cells)

        # 2. Scanline fill through pixel centres: count and sum of (cell + 1) per pixel.
        count, total = self._fill()

        pix = np.full(nrows * ncols, _OUTSIDE, dtype=np.int32)
        single = count == 1
        pix[single] = total[single] - 1
        # Overlapping cells (count >= 2): the smallest code among the cells holding the
        # pixel centre; rare, so a direct query.
        multi = np.flatnonzero(count >= 2)
        is_edge = np.zeros(nrows * ncols, dtype=bool)
        is_edge[edge_pixels] = True
        multi_inner = multi[~is_edge[multi]]
        if multi_inner.size:
            pix[multi_inner] = self._min_rank_cell_at(*self._centres(multi_inner))

        # 3. Candidates of edge pixels: cells whose boundary marks them, plus cells that
        # may hold the whole pixel (by the fill; or, where cells overlap, any cell whose
        # geometry meets the pixel).
        extra = [mark_keys]
        one = edge_pixels[single[edge_pixels]]
        if one.size:
            extra.append(one * n_cells + self._rank[total[one] - 1])
        many = edge_pixels[count[edge_pixels] >= 2]
        if many.size:
            extra.append(self._meeting_pixels(many, n_cells))
        cand_keys = _unique(np.concatenate(extra))
        cand_pix = cand_keys // n_cells
        cand_rank = cand_keys % n_cells
        ordinal = np.searchsorted(edge_pixels, cand_pix)
        self._cand_start = np.searchsorted(ordinal, np.arange(edge_pixels.size + 1))
        self._cand_cell = self._by_rank[cand_rank]
        self._cand_row = cand_pix // ncols
        pix[edge_pixels] = _EDGE - np.arange(edge_pixels.size, dtype=np.int32)
        self._pix = pix
        self._n_edge = int(edge_pixels.size)

    def _fill(self) -> tuple[np.ndarray, np.ndarray]:
        """Return per pixel the number of cells holding its centre and the sum of (cell+1)."""
        ncols, nrows = self._ncols, self._nrows
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        yc_all = self._y0 + (np.arange(nrows) + 0.5) * self._h
        ylo, yhi = np.minimum(y1, y2), np.maximum(y1, y2)
        sloped = np.flatnonzero(ylo < yhi)
        lo = np.clip(np.floor((ylo[sloped] - self._y0) / self._h - 0.5), 0, nrows - 1)
        hi = np.clip(np.ceil((yhi[sloped] - self._y0) / self._h - 0.5), 0, nrows - 1)
        lo, hi = lo.astype(np.int64), hi.astype(np.int64)
        counts = hi - lo + 1
        seg = np.repeat(sloped, counts)
        row = _ragged_arange(lo, counts)
        yc = yc_all[row]
        # Half-open rule by exact comparison with the very same centre value, so that at a
        # vertex on a centre line exactly the right segments count, whatever the rounding.
        keep = (ylo[seg] <= yc) & (yc < yhi[seg])
        seg, row, yc = seg[keep], row[keep], yc[keep]
        xc = x1[seg] + (yc - y1[seg]) * (x2[seg] - x1[seg]) / (y2[seg] - y1[seg])
        group = self._seg_part[seg] * nrows + row
        order = np.lexsort((xc, group))
        group, xc, row, seg = group[order], xc[order], row[order], seg[order]
        # Even-odd per polygon part (exterior and holes together): crossings pair up.
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        pos = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
        a = np.flatnonzero(pos % 2 == 0)
        a = a[a + 1 < group.size]
        a = a[group[a + 1] == group[a]]
        xa, xb, r = xc[a], xc[a + 1], row[a]
        cell1 = (self._seg_cell[seg[a]] + 1).astype(np.int64)
        ca = np.clip(np.ceil((xa - self._x0) / self._w - 0.5), 0, ncols).astype(np.int64)
        cb = np.clip(np.ceil((xb - self._x0) / self._w - 0.5), 0, ncols).astype(np.int64)
        nonempty = cb > ca
        ca, cb, r, cell1 = ca[nonempty], cb[nonempty], r[nonempty], cell1[nonempty]
        width = ncols + 1
        count = np.zeros(nrows * width, dtype=np.int32)
        total = np.zeros(nrows * width, dtype=np.int32)
        np.add.at(count, r * width + ca, 1)
        np.add.at(count, r * width + cb, -1)
        np.add.at(total, r * width + ca, cell1)
        np.add.at(total, r * width + cb, -cell1)
        count = np.cumsum(count.reshape(nrows, width), axis=1, dtype=np.int32)
        total = np.cumsum(total.reshape(nrows, width), axis=1, dtype=np.int32)
        return count[:, :ncols].ravel(), total[:, :ncols].ravel()

    def _centres(self, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c = np.divmod(pix, self._ncols)
        return self._x0 + (c + 0.5) * self._w, self._y0 + (r + 0.5) * self._h

    def _tree(self) -> shapely.STRtree:
        if not hasattr(self, "_strtree"):
            self._strtree = shapely.STRtree(self.geoms)
        return self._strtree

    def _min_rank_cell_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the smallest-code cell whose geometry meets each point (GEOS), or -1."""
        pt, cell = self._tree().query(shapely.points(x, y), predicate="intersects")
        best = np.full(x.size, len(self.codes), dtype=np.int64)
        np.minimum.at(best, pt, self._rank[cell])
        found = best < len(self.codes)
        return np.where(found, self._by_rank[np.where(found, best, 0)], _OUTSIDE)

    def _meeting_pixels(self, pix: np.ndarray, n_cells: int) -> np.ndarray:
        """Return candidate keys (pixel * n_cells + rank) of every cell meeting each pixel."""
        r, c = np.divmod(pix, self._ncols)
        m = self._margin
        boxes = shapely.box(
            self._x0 + c * self._w - m,
            self._y0 + r * self._h - m,
            self._x0 + (c + 1) * self._w + m,
            self._y0 + (r + 1) * self._h + m,
        )
        i, cell = self._tree().query(boxes, predicate="intersects")
        return pix[i] * n_cells + self._rank[cell]

    def _build_slabs(self) -> None:
        """Index the segments by raster row and cell, for the exact tests."""
        n_cells = len(self.codes)
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        # Zero-length segments are skipped by PostGIS's winding test, so here as well.
        real = np.flatnonzero((x1 != x2) | (y1 != y2))
        # Same monotone row formula as assign(): a segment whose y-range holds a point's
        # latitude is listed in that point's row.
        r0 = np.floor((np.minimum(y1, y2)[real] - self._y0) / self._h).astype(np.int64)
        r1 = np.floor((np.maximum(y1, y2)[real] - self._y0) / self._h).astype(np.int64)
        counts = r1 - r0 + 1
        seg = np.repeat(real, counts)
        row = _ragged_arange(r0, counts)
        key = row * n_cells + self._seg_cell[seg]
        # Stable: within a (row, cell) key the segments stay in cell, part, ring order.
        order = np.argsort(key, kind="stable")
        self._slab_key = key[order]
        self._slab_seg = seg[order]
        ckey = self._cand_row * n_cells + self._cand_cell
        self._cand_lo = np.searchsorted(self._slab_key, ckey, side="left")
        self._cand_hi = np.searchsorted(self._slab_key, ckey, side="right")
        # Work of one point in each edge pixel: its candidates and their segments.
        per_cand = np.r_[0, np.cumsum(self._cand_hi - self._cand_lo + 1)]
        self._edge_work = per_cand[self._cand_start[1:]] - per_cand[self._cand_start[:-1]]

    # -------------------------------------------------------------------- exact

    def _exact(self, px: np.ndarray, py: np.ndarray, edge: np.ndarray) -> np.ndarray:
        """Return the covering cell with the smallest code for points in edge pixels."""
        out = np.full(px.size, _OUTSIDE, dtype=np.intp)
        cs = self._cand_start[edge]
        nc = self._cand_start[edge + 1] - cs
        pair_pt = np.repeat(np.arange(px.size), nc)
        cand = _ragged_arange(cs, nc)
        cell = self._cand_cell[cand]
        if self.semantics == "geos":
            covered = shapely.intersects_xy(self.geoms[cell], px[pair_pt], py[pair_pt])
        else:
            covered = self._postgis_covers(px, py, pair_pt, cand)
        # Candidates are listed by code: the first covering one per point wins.
        hit = np.flatnonzero(covered)
        first = hit[np.r_[True, pair_pt[hit][1:] != pair_pt[hit][:-1]]] if hit.size else hit
        out[pair_pt[first]] = cell[first]
        return out

    def _postgis_covers(
        self, px: np.ndarray, py: np.ndarray, pair_pt: np.ndarray, cand: np.ndarray
    ) -> np.ndarray:
        """Return, per (point, candidate) pair, whether PostGIS's ST_Covers holds."""
        n_pairs = pair_pt.size
        lo = self._cand_lo[cand]
        nseg = self._cand_hi[cand] - lo
        ent_pair = np.repeat(np.arange(n_pairs), nseg)
        seg = self._slab_seg[_ragged_arange(lo, nseg)]
        qx = px[pair_pt][ent_pair]
        qy = py[pair_pt][ent_pair]
        x1, y1, x2, y2 = self._sx1[seg], self._sy1[seg], self._sx2[seg], self._sy2[seg]
        # determineSide(), operation for operation.
        side = (x2 - x1) * (qy - y1) - (qx - x1) * (y2 - y1)
        # isOnSegment(): inside the segment's bounding box, bounds included.
        on = (
            (side == 0.0)
            & (np.minimum(x1, x2) <= qx)
            & (qx <= np.maximum(x1, x2))
            & (np.minimum(y1, y2) <= qy)
            & (qy <= np.maximum(y1, y2))
        )
        up = (y1 <= qy) & (qy < y2) & (side > 0)
        down = (y2 <= qy) & (qy < y1) & (side < 0)
        wind = up.astype(np.int32) - down.astype(np.int32)
        ring = self._seg_ring[seg]
        # One group per (pair, ring); entries of a pair are contiguous and ring-ordered.
        new = np.ones(ent_pair.size, dtype=bool)
        new[1:] = (ent_pair[1:] != ent_pair[:-1]) | (ring[1:] != ring[:-1])
        g = np.flatnonzero(new)
        covered = np.zeros(n_pairs, dtype=bool)
        if g.size == 0:
            return covered
        g_on = np.logical_or.reduceat(on, g)
        g_wind = np.add.reduceat(wind, g)
        g_pair = ent_pair[g]
        g_ring = ring[g]
        # point_in_ring: 0 on the boundary, 1 inside (winding number != 0), -1 outside.
        status = np.where(g_on, 0, np.where(g_wind != 0, 1, -1))
        keep = status != -1
        g_pair, g_ring, status = g_pair[keep], g_ring[keep], status[keep]
        g_part = self._ring_part[g_ring]
        hole = self._ring_is_hole[g_ring]
        # point_in_multipolygon: a part covers the point if its exterior ring does not
        # leave it outside and the first hole (in ring order) that does not leave it
        # outside, if any, has it on its boundary. Any covering part will do.
        ext = ~hole
        part_key = g_pair * len(self._part_cell) + g_part
        ext_keys = part_key[ext]
        ext_status = status[ext]
        h_keys = part_key[hole]
        h_status = status[hole]
        if h_keys.size:
            # First hole per (pair, part): groups are in ring order within each pair.
            first = np.r_[True, h_keys[1:] != h_keys[:-1]]
            h_keys, h_status = h_keys[first], h_status[first]
            j = np.searchsorted(h_keys, ext_keys)
            j_ok = j < h_keys.size
            has_hole = np.zeros(ext_keys.size, dtype=bool)
            has_hole[j_ok] = h_keys[j[j_ok]] == ext_keys[j_ok]
            hole_in = np.zeros(ext_keys.size, dtype=bool)
            hole_in[has_hole] = h_status[j[has_hole]] == 1
            part_ok = (ext_status == 0) | ~hole_in
        else:
            part_ok = np.ones(ext_keys.size, dtype=bool)
        covered[g_pair[ext][part_ok]] = True
        return covered


def assign_points_to_cells(
    lon: np.ndarray,
    lat: np.ndarray,
    codes: Sequence[str],
    geoms: Sequence[Polygon | MultiPolygon],
    **options,
) -> np.ndarray:
    """Return, per point, the index of the covering cell with the smallest code, or -1.

    A one-shot :class:`CellIndex` (``options`` are its keyword arguments); build the index
    once instead when assigning several batches to the same cells.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> assign_points_to_cells([0.5, 1.0, 9.0], [0.5, 1.0, 9.0], ["1", "0"],
    ...                        [box(0, 0, 1, 1), box(1, 1, 2, 2)]).tolist()
    [0, 1, -1]
    """
    return CellIndex(codes, geoms, **options).assign(lon, lat)


# --------------------------------------------------------------------------- helpers


def _check_cells(codes: list, geoms: np.ndarray) -> None:
    if len(codes) != len(geoms):
        raise CellIndexError(f"{len(codes)} codes but {len(geoms)} geometries")
    if not codes:
        raise CellIndexError("no cells to index")
    for code in codes:
        if not isinstance(code, str) or not code:
            raise CellIndexError(f"codes must be non-empty strings, got {code!r}")
    if len(set(codes)) != len(codes):
        seen: set[str] = set()
        dup = next(c for c in codes if c in seen or seen.add(c))
        raise CellIndexError(f"duplicate code {dup!r}: the smallest-code tie-break needs unique codes")
    for i, g in enumerate(geoms):
        if not isinstance(g, Polygon | MultiPolygon):
            kind = getattr(g, "geom_type", type(g).__name__)
            raise CellIndexError(f"cell {codes[i]!r}: expected a Polygon or MultiPolygon, got {kind}")
    empty = shapely.is_empty(geoms)
    if empty.any():
        raise CellIndexError(f"cell {codes[int(np.argmax(empty))]!r}: empty geometry")
    coords = shapely.get_coordinates(geoms)
    if not np.isfinite(coords).all():
        raise CellIndexError("a cell geometry has a non-finite coordinate")
    valid = shapely.is_valid(geoms)
    if not valid.all():
        i = int(np.argmin(valid))
        raise CellIndexError(
            f"cell {codes[i]!r}: invalid geometry ({shapely.is_valid_reason(geoms[i])})"
        )


def _unique(a: np.ndarray) -> np.ndarray:
    """Return the sorted distinct values of ``a`` (sorting beats numpy 2's hash unique here)."""
    a = np.sort(a)
    if a.size:
        a = a[np.r_[True, a[1:] != a[:-1]]]
    return a


def _ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the concatenation of ``arange(s, s + c)`` for each start s and count c."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - counts), counts)
    return offsets + np.arange(total, dtype=np.int64)

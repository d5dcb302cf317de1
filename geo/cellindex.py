"""Assign millions of points to grid cells, exactly as PostGIS ``ST_Covers`` would.

Pure: numpy and shapely only. The hot path of imports and of re-mapping after boundaries
change: which cell covers each point, with the project's tie-break for points on a shared
edge or vertex (the covering cell with the **smallest code** wins, codes compared as
strings), and -1 for points outside every cell.

How :class:`CellIndex` works (a "rasterised cell index")
-------------------------------------------------------
A regular raster of fine pixels (by default 1/48 of a typical cell's side: ~27 m for
Guiyang-like grids) is laid over the cells' bounding box. Every fine pixel is one of

- *interior*: no cell boundary comes near it, and it lies inside a cell, whose index is
  stored: a point there is answered by an array read;
- *outside*: no cell boundary comes near it and no cell covers it: the answer is -1;
- *edge*: some cell boundary passes through it, or within a margin of it. Its points are
  tested exactly against the few cells that may cover them, in a vectorised
  winding-number test.

Points outside the raster are outside every cell (-1) at once. The fine raster is stored
in two levels: coarse pixels of 8 x 8 fine pixels (tiles) hold a cell or -1 where no
boundary comes near the whole tile; only the tiles a boundary crosses store their 64 fine
pixels, plus the list of cells that may cover a point in them. For 3,000 grids over a
city 120 km across that is ~3 million stored pixels (12 MB) instead of 20 million.

Building it: each boundary segment is walked along its major axis a pixel column (or
row) at a time, and the at most three pixels across that the segment, grown by the
margin, touches in that column are marked: a superset of the pixels the boundary passes
through, which is the safe side. The margin (a millionth of a pixel, at least 1,024 ulps
of the largest coordinate) dwarfs the rounding error of any coordinate arithmetic here
or in PostGIS, so a pixel is only ever called interior or outside when every point that
lands in it is far, in floating-point terms, from every boundary, where all exact
point-in-polygon algorithms agree; and points land in pixels by the same monotone
formula the marks were made with. The other pixels are filled by scanlines through their
centres (even-odd per polygon part), exact for them because no boundary crosses a row
near their centre. Cells that overlap (not expected of a grid, but handled) are resolved
by a direct query.

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

#: Default bound on stored pixels (4 bytes each).
_MAX_PIXELS = 16_000_000
#: Automatic resolution: fine pixels along a typical cell's side.
_PIXELS_PER_CELL_SIDE = 48.0
#: A coarse pixel (tile) is TILE x TILE fine pixels; only tiles a boundary crosses are
#: stored at the fine resolution.
_TILE_SHIFT = 3
_TILE = 1 << _TILE_SHIFT
_TILE_MASK = _TILE - 1
#: The fills add up, per pixel, the number of cells holding its centre (low bits) and
#: the sum of (cell + 1) over them (high bits) in one int64.
_PACK_SHIFT = 24
_PACK_MASK = (1 << _PACK_SHIFT) - 1
#: Scanline crossings are sorted as one int64 key (part, row, x step) below this.
_PACK_LIMIT = 1 << 62
#: Edge points are tested in chunks of about this many (point, segment) entries, to
#: bound temporary memory whatever the number of candidates per pixel.
_CHUNK_WORK = 1 << 21
#: Pixel values: a cell index (>= 0), outside every cell, or edge (a fine pixel whose
#: points are tested exactly; a coarse pixel stores _EDGE - tile ordinal instead).
_OUTSIDE = -1
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
        Height of a fine raster pixel in degrees (the width is scaled by 1/cos(latitude)
        so that pixels are square on the ground; at least a million ulps of the
        coordinates, ~2.5e-8 degrees). ``None`` chooses it from the cells: 1/48 of the
        side of a median cell's bounding box.
    max_pixels
        Upper bound on the pixels stored (coarse pixels plus the fine pixels of edge
        tiles, 4 bytes each); the pixel size is enlarged until it holds. A raster of a
        single coarse pixel is always accepted.
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
            and not isinstance(pixel_size, bool)
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
        marks = self._choose_raster(pixel_size, int(max_pixels))
        self._classify(*marks)
        self._build_slabs()
        if semantics == "geos":
            shapely.prepare(self.geoms)

    # ---------------------------------------------------------------- public API

    @property
    def shape(self) -> tuple[int, int]:
        """Return (rows, columns) of the fine raster (only its edge tiles are stored)."""
        return self._nrows, self._ncols

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Return (width, height) of a fine raster pixel in degrees."""
        return self._w, self._h

    @property
    def tile_size(self) -> int:
        """Return the side of a coarse pixel (a tile), in fine pixels."""
        return _TILE

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
    def n_pixels(self) -> int:
        """Return the number of pixels stored: coarse pixels and fine pixels of edge tiles."""
        return int(self._coarse.size + self._fine.size)

    @property
    def edge_fraction(self) -> float:
        """Return the share of fine pixels that are edge pixels (their points tested exactly)."""
        return self._n_edge / (self._nrows * self._ncols)

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
        value, tile = self._lookup(fy[pts].astype(np.int64), fx[pts].astype(np.int64))
        found = value >= 0
        out[pts[found]] = value[found]
        edge = np.flatnonzero(value == _EDGE)
        tile = tile[edge]
        work = np.cumsum(self._tile_work[tile])
        cuts = np.searchsorted(
            work, np.arange(_CHUNK_WORK, work[-1] if work.size else 0, _CHUNK_WORK)
        )
        for sel in np.split(np.arange(edge.size), np.unique(cuts)):
            if sel.size:
                p = pts[edge[sel]]
                out[p] = self._exact(x[p], y[p], tile[sel])
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

    # ----------------------------------------------------------------- lookup

    def _lookup(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return per fine pixel its value (cell, -1 outside, -2 edge) and tile (or -1)."""
        value = self._coarse[(row >> _TILE_SHIFT) * self._nccols + (col >> _TILE_SHIFT)]
        tile = np.full(value.size, -1, dtype=np.int64)
        tiled = np.flatnonzero(value <= _EDGE)
        t = (_EDGE - value[tiled]).astype(np.int64)
        tile[tiled] = t
        local = ((row[tiled] & _TILE_MASK) << _TILE_SHIFT) | (col[tiled] & _TILE_MASK)
        value[tiled] = self._fine[(t << (2 * _TILE_SHIFT)) | local]
        return value, tile

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
        self._sx1, self._sy1 = coords[seg, 0], coords[seg, 1]
        self._sx2, self._sy2 = coords[seg + 1, 0], coords[seg + 1, 1]
        self._ring_part = ring_part.astype(np.int64)
        self._ring_is_hole = ~first_of_part
        self._part_cell = part_cell.astype(np.int64)
        self._seg_ring = coord_ring[seg].astype(np.int64)
        self._seg_part = self._ring_part[self._seg_ring]
        self._seg_cell = self._part_cell[self._seg_part]
        self._bounds = (
            float(coords[:, 0].min()),
            float(coords[:, 1].min()),
            float(coords[:, 0].max()),
            float(coords[:, 1].max()),
        )

    def _choose_raster(self, pixel_size: float | None, max_pixels: int) -> tuple[np.ndarray, ...]:
        """Fix the raster; return the edge marks (fine rows, columns, code ranks), tile flags."""
        minx, miny, maxx, maxy = self._bounds
        mid_lat = math.radians(0.5 * (miny + maxy))
        aspect = 1.0 / max(math.cos(mid_lat), 0.05)  # width / height, square on the ground
        if pixel_size is None:
            # A typical cell's side in degrees of latitude, from its bounding box area.
            b = shapely.bounds(self.geoms)
            side = np.sqrt((b[:, 2] - b[:, 0]) / aspect * (b[:, 3] - b[:, 1]))
            h = float(np.median(side)) / _PIXELS_PER_CELL_SIDE
        else:
            h = float(pixel_size)
        # Pixels must stay far wider than the margin (whose floor is 1,024 ulps).
        scale = max(abs(minx), abs(maxx), abs(miny), abs(maxy), 1.0)
        h = max(h, 1e-9 * max(maxx - minx, maxy - miny), 2.0**20 * np.finfo(float).eps * scale)
        # Coarse pixels alone must fit; then the edge tiles as well (they are only known
        # once the boundaries are marked).
        while self._set_grid(h, aspect) > max_pixels and self._ncrows * self._nccols > 1:
            h *= 1.25
        while True:
            marks = self._marks()
            flags = self._tile_flags(*marks[:2])
            stored = self._ncrows * self._nccols + np.count_nonzero(flags) * _TILE * _TILE
            if stored <= max_pixels or self._ncrows * self._nccols == 1:
                return (*marks, flags)
            h *= max(1.25, math.sqrt(stored / max_pixels))
            self._set_grid(h, aspect)

    def _set_grid(self, h: float, aspect: float) -> int:
        """Set the raster for pixel height ``h``; return the number of coarse pixels."""
        minx, miny, maxx, maxy = self._bounds
        self._w = h * aspect
        self._h = h
        self._x0, self._y0 = minx, miny
        # Columns/rows by the formula assign() uses: the largest coordinate lands inside.
        self._ncols = int(math.floor((maxx - minx) / self._w)) + 1
        self._nrows = int(math.floor((maxy - miny) / self._h)) + 1
        self._nccols = (self._ncols + _TILE - 1) >> _TILE_SHIFT
        self._ncrows = (self._nrows + _TILE - 1) >> _TILE_SHIFT
        scale = max(abs(minx), abs(maxx), abs(miny), abs(maxy), 1.0)
        # Far wider than any rounding error of coordinate arithmetic (ulps), far narrower
        # than a pixel: pixels within it of a boundary are edge pixels.
        self._margin = max(1e-6 * min(self._w, self._h), 1024 * np.finfo(float).eps * scale)
        return self._ncrows * self._nccols

    def _marks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (row, column, code rank) of every fine pixel a cell boundary comes near.

        Each segment is walked along its major axis one pixel column (or row) at a time;
        in each, the stretch of the segment within the column grown by the margin gives a
        range of rows, grown by the margin too, of at most three pixels: they are marked.
        Every pixel holding a point within the margin of the segment is marked (by the
        same monotone pixel formula as :meth:`assign`). Marks repeat.
        """
        m = self._margin
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        along_x = np.abs(x2 - x1) * self._h >= np.abs(y2 - y1) * self._w
        rows, cols, ranks = [], [], []
        for walk_x in (True, False):
            seg = np.flatnonzero(along_x == walk_x)
            if walk_x:
                a1, b1, a2, b2 = x1[seg], y1[seg], x2[seg], y2[seg]
                a_index, b_index = self._fine_col, self._fine_row
                a0, step = self._x0, self._w
            else:
                a1, b1, a2, b2 = y1[seg], x1[seg], y2[seg], x2[seg]
                a_index, b_index = self._fine_row, self._fine_col
                a0, step = self._y0, self._h
            amin, amax = np.minimum(a1, a2), np.maximum(a1, a2)
            k0, k1 = a_index(amin - m), a_index(amax + m)
            n = k1 - k0 + 1
            which = np.repeat(np.arange(seg.size), n)
            k = _ragged_arange(k0, n)
            lo_a, hi_a = amin[which], amax[which]
            # The part of the segment within column k grown by the margin.
            lo = np.clip(a0 + k * step - m, lo_a, hi_a)
            hi = np.clip(a0 + (k + 1) * step + m, lo_a, hi_a)
            sa1, sb1 = a1[which], b1[which]
            da, db = a2[which] - sa1, b2[which] - sb1
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(da != 0, db / da, 0.0)
            b_lo, b_hi = sb1 + (lo - sa1) * slope, sb1 + (hi - sa1) * slope
            j0 = b_index(np.minimum(b_lo, b_hi) - m)
            j1 = b_index(np.maximum(b_lo, b_hi) + m)
            # |slope| <= one pixel per pixel: at most three pixels across.
            j_mid = np.minimum(j0 + 1, j1)
            kk = np.concatenate([k, k, k])
            jj = np.concatenate([j0, j_mid, j1])
            rows.append(kk if not walk_x else jj)
            cols.append(kk if walk_x else jj)
            ranks.append(np.tile(self._rank[self._seg_cell[seg]][which], 3))
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(ranks)

    def _tile_flags(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Return per coarse pixel whether it holds one of the fine pixels given."""
        flags = np.zeros(self._ncrows * self._nccols, dtype=bool)
        flags[(row >> _TILE_SHIFT) * self._nccols + (col >> _TILE_SHIFT)] = True
        return flags

    def _fine_col(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((x - self._x0) / self._w), 0, self._ncols - 1).astype(np.int64)

    def _fine_row(self, y: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((y - self._y0) / self._h), 0, self._nrows - 1).astype(np.int64)

    def _classify(
        self, mrow: np.ndarray, mcol: np.ndarray, mrank: np.ndarray, is_tile: np.ndarray
    ) -> None:
        """Build the coarse raster, the edge tiles and the tiles' candidate cells."""
        n_cells = len(self.codes)
        nccols = self._nccols
        area = _TILE * _TILE

        # Tiles: the coarse pixels holding a marked fine pixel.
        tiles = np.flatnonzero(is_tile)
        tile_of = np.full(self._ncrows * nccols, -1, dtype=np.int64)
        tile_of[tiles] = np.arange(tiles.size)
        mtile = tile_of[(mrow >> _TILE_SHIFT) * nccols + (mcol >> _TILE_SHIFT)]

        # Coarse pixels: filled through their centres.
        packed = self._coarse_fill()
        count = packed & _PACK_MASK
        coarse = np.full(self._ncrows * nccols, _OUTSIDE, dtype=np.int32)
        single = count == 1
        coarse[single] = (packed[single] >> _PACK_SHIFT) - 1
        # Overlapping cells (count >= 2): the smallest code among the cells holding the
        # centre; rare, so a direct query.
        multi = np.flatnonzero((count >= 2) & ~is_tile)
        if multi.size:
            r, c = np.divmod(multi, nccols)
            coarse[multi] = self._min_rank_cell_at(
                self._x0 + (c * _TILE + _TILE / 2) * self._w,
                self._y0 + (r * _TILE + _TILE / 2) * self._h,
            )
        coarse[tiles] = _EDGE - np.arange(tiles.size, dtype=np.int32)

        # Candidates of a tile: the cells whose boundary marks it, plus the cells that may
        # hold the whole tile (by the fill; where cells overlap, any cell meeting it).
        key = mtile * n_cells + mrank
        # Consecutive columns of a segment mostly mark the same tile: drop those repeats
        # before sorting.
        keys = [key[np.r_[True, key[1:] != key[:-1]]]]
        one = np.flatnonzero(single[tiles])
        if one.size:
            keys.append(one * n_cells + self._rank[(packed[tiles[one]] >> _PACK_SHIFT) - 1])
        many = np.flatnonzero(count[tiles] >= 2)
        if many.size:
            keys.append(self._meeting_tiles(tiles, many, n_cells))
        cand = _unique(np.concatenate(keys))
        cand_tile, cand_rank = np.divmod(cand, n_cells)
        self._cand_start = np.searchsorted(cand_tile, np.arange(tiles.size + 1))
        self._cand_cell = self._by_rank[cand_rank]
        self._cand_crow = tiles[cand_tile] // nccols

        # Fine pixels of the tiles: edge where marked, else filled through their centres.
        packed = self._fine_fill(tiles, tile_of)
        count = packed & _PACK_MASK
        fine = np.full(tiles.size * area, _OUTSIDE, dtype=np.int32)
        single = count == 1
        fine[single] = (packed[single] >> _PACK_SHIFT) - 1
        local = ((mrow & _TILE_MASK) << _TILE_SHIFT) | (mcol & _TILE_MASK)
        edge = np.zeros(fine.size, dtype=bool)
        edge[mtile * area + local] = True
        multi = np.flatnonzero((count >= 2) & ~edge)
        if multi.size:
            t, local = np.divmod(multi, area)
            r = (tiles[t] // nccols) * _TILE + (local >> _TILE_SHIFT)
            c = (tiles[t] % nccols) * _TILE + (local & _TILE_MASK)
            fine[multi] = self._min_rank_cell_at(
                self._x0 + (c + 0.5) * self._w, self._y0 + (r + 0.5) * self._h
            )
        fine[edge] = _EDGE
        self._coarse = coarse
        self._fine = fine
        self._tiles = tiles
        self._n_edge = int(np.count_nonzero(edge))

    def _spans(self, yc: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return (row, x_start, x_end, cell + 1) of the runs inside cells along rows at ``yc``.

        Scanline through each row's centre line ``y = yc[row]``: crossings with the
        segments, paired up per polygon part (exterior and holes together, even-odd).
        Crossings are ordered by x rounded down to a quarter of the margin: that moves a
        run's ends by less than the margin, i.e. only across edge pixels, whose fill is
        not used; but it lets one integer sort order them.
        """
        nrows = yc.size
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        ylo, yhi = np.minimum(y1, y2), np.maximum(y1, y2)
        sloped = np.flatnonzero(ylo < yhi)
        # Candidate rows (one spare each side), then the exact test below.
        lo = np.searchsorted(yc, ylo[sloped], side="left") - 1
        hi = np.searchsorted(yc, yhi[sloped], side="left")
        lo, hi = np.clip(lo, 0, nrows - 1), np.clip(hi, 0, nrows - 1)
        counts = hi - lo + 1
        seg = np.repeat(sloped, counts)
        row = _ragged_arange(lo, counts)
        y = yc[row]
        # Half-open rule by exact comparison with the very same centre value, so that at a
        # vertex on a centre line exactly the right segments count, whatever the rounding.
        keep = (ylo[seg] <= y) & (y < yhi[seg])
        seg, row, y = seg[keep], row[keep], y[keep]
        xc = x1[seg] + (y - y1[seg]) * (x2[seg] - x1[seg]) / (y2[seg] - y1[seg])
        group = self._seg_part[seg] * nrows + row
        quantum = self._margin / 4
        n_steps = int((self._bounds[2] - self._x0) / quantum) + 2
        if (int(group.max(initial=0)) + 1) * n_steps < _PACK_LIMIT:
            steps = np.clip(np.floor((xc - self._x0) / quantum), 0, n_steps - 1).astype(np.int64)
            key = np.sort(group * n_steps + steps)
            group, steps = np.divmod(key, n_steps)
            xc = self._x0 + steps * quantum
        else:  # too many parts and rows to pack: sort the exact values
            order = np.lexsort((xc, group))
            group, xc = group[order], xc[order]
        # Crossings of a closed ring under the half-open rule come in pairs: in x order
        # they open and close the runs inside the part.
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        pos = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
        a = np.flatnonzero(pos % 2 == 0)
        a = a[a + 1 < group.size]
        a = a[group[a + 1] == group[a]]
        part, row = np.divmod(group[a], nrows)
        return row, xc[a], xc[a + 1], self._part_cell[part] + 1

    def _coarse_fill(self) -> np.ndarray:
        """Return per coarse pixel the packed count and cell sum of the cells at its centre."""
        nrows, ncols = self._ncrows, self._nccols
        half = _TILE / 2
        yc = self._y0 + (np.arange(nrows) * _TILE + half) * self._h
        row, xa, xb, cell1 = self._spans(yc)
        # First coarse column whose centre x0 + (C * TILE + TILE / 2) * w is >= x.
        ca = np.clip(np.ceil(((xa - self._x0) / self._w - half) / _TILE), 0, ncols).astype(np.int64)
        cb = np.clip(np.ceil(((xb - self._x0) / self._w - half) / _TILE), 0, ncols).astype(np.int64)
        width = ncols + 1
        packed = np.zeros(nrows * width, dtype=np.int64)
        delta = 1 + (cell1 << _PACK_SHIFT)
        np.add.at(packed, row * width + ca, delta)
        np.add.at(packed, row * width + cb, -delta)
        packed = np.cumsum(packed.reshape(nrows, width), axis=1)
        return packed[:, :ncols].ravel()

    def _fine_fill(self, tiles: np.ndarray, tile_of: np.ndarray) -> np.ndarray:
        """Return per fine pixel of the tiles the packed count and cell sum at its centre.

        Runs along every fine row become +/- events at their first and past-last column;
        a pixel's value is the sum of its row's events up to its column: the part left
        of its tile by a binary search in the sorted events, the part inside by a short
        cumulative sum along the tile's row.
        """
        nccols = self._nccols
        width = nccols * _TILE + 1  # fine columns of all tiles, plus one past the end
        yc = self._y0 + (np.arange(self._ncrows * _TILE) + 0.5) * self._h
        row, xa, xb, cell1 = self._spans(yc)
        ca = np.clip(np.ceil((xa - self._x0) / self._w - 0.5), 0, width - 1).astype(np.int64)
        cb = np.clip(np.ceil((xb - self._x0) / self._w - 0.5), 0, width - 1).astype(np.int64)
        delta = 1 + (cell1 << _PACK_SHIFT)
        ev_key = np.concatenate([row * width + ca, row * width + cb])
        ev_delta = np.concatenate([delta, -delta])
        order = np.argsort(ev_key)
        ev_key, ev_delta = ev_key[order], ev_delta[order]

        # Base: everything up to and including each tile row's first column. Each row's
        # events sum to zero, so a running sum over all events is right at any row.
        t_row, t_col = np.divmod(tiles, nccols)
        r = (t_row[:, None] * _TILE + np.arange(_TILE)[None, :]).ravel()
        first = r * width + np.repeat(t_col * _TILE, _TILE)
        running = np.zeros(ev_delta.size + 1, dtype=np.int64)
        np.cumsum(ev_delta, out=running[1:])
        base = running[np.searchsorted(ev_key, first, side="right")]

        # Inside: events in a tile past its first column, at their place in the tile row.
        ev_row, ev_col = np.divmod(ev_key, width)
        inner = ((ev_col & _TILE_MASK) != 0) & (ev_col < nccols * _TILE)
        ev_row, ev_col, ev_delta = ev_row[inner], ev_col[inner], ev_delta[inner]
        ev_tile = tile_of[(ev_row >> _TILE_SHIFT) * nccols + (ev_col >> _TILE_SHIFT)]
        ok = ev_tile >= 0
        tile_row = (ev_tile[ok] << _TILE_SHIFT) | (ev_row[ok] & _TILE_MASK)
        at = (tile_row << _TILE_SHIFT) | (ev_col[ok] & _TILE_MASK)
        packed = np.zeros(tiles.size * _TILE * _TILE, dtype=np.int64)
        np.add.at(packed, at, ev_delta[ok])
        packed = packed.reshape(-1, _TILE)
        np.cumsum(packed, axis=1, out=packed)
        packed += base[:, None]
        return packed.ravel()

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

    def _meeting_tiles(self, tiles: np.ndarray, which: np.ndarray, n_cells: int) -> np.ndarray:
        """Return candidate keys (tile * n_cells + rank) of every cell meeting the tiles."""
        r, c = np.divmod(tiles[which], self._nccols)
        m = self._margin
        side_x, side_y = _TILE * self._w, _TILE * self._h
        boxes = shapely.box(
            self._x0 + c * side_x - m,
            self._y0 + r * side_y - m,
            self._x0 + (c + 1) * side_x + m,
            self._y0 + (r + 1) * side_y + m,
        )
        i, cell = self._tree().query(boxes, predicate="intersects")
        return which[i] * n_cells + self._rank[cell]

    def _build_slabs(self) -> None:
        """Index the segments by coarse raster row and cell, for the exact tests."""
        n_cells = len(self.codes)
        x1, y1, x2, y2 = self._sx1, self._sy1, self._sx2, self._sy2
        # Zero-length segments are skipped by PostGIS's winding test, so here as well.
        real = np.flatnonzero((x1 != x2) | (y1 != y2))
        # Same monotone row formula as assign(): a segment whose y-range holds a point's
        # latitude is listed in that point's (coarse) row.
        r0 = self._fine_row(np.minimum(y1, y2)[real]) >> _TILE_SHIFT
        r1 = self._fine_row(np.maximum(y1, y2)[real]) >> _TILE_SHIFT
        counts = r1 - r0 + 1
        seg = np.repeat(real, counts)
        row = _ragged_arange(r0, counts)
        key = row * n_cells + self._seg_cell[seg]
        # Stable: within a (row, cell) key the segments stay in cell, part, ring order.
        order = np.argsort(key, kind="stable")
        self._slab_key = key[order]
        self._slab_seg = seg[order]
        # Where a new ring starts within the slab list (pair starts are added at use).
        ring = self._seg_ring[self._slab_seg]
        self._slab_new_ring = np.ones(ring.size, dtype=bool)
        self._slab_new_ring[1:] = ring[1:] != ring[:-1]
        ckey = self._cand_crow * n_cells + self._cand_cell
        self._cand_lo = np.searchsorted(self._slab_key, ckey, side="left")
        self._cand_hi = np.searchsorted(self._slab_key, ckey, side="right")
        # Work of one point in each tile: its candidates and their segments.
        per_cand = np.r_[0, np.cumsum(self._cand_hi - self._cand_lo + 1)]
        self._tile_work = per_cand[self._cand_start[1:]] - per_cand[self._cand_start[:-1]]

    # -------------------------------------------------------------------- exact

    def _exact(self, px: np.ndarray, py: np.ndarray, tile: np.ndarray) -> np.ndarray:
        """Return the covering cell with the smallest code for points in edge pixels."""
        out = np.full(px.size, _OUTSIDE, dtype=np.intp)
        cs = self._cand_start[tile]
        nc = self._cand_start[tile + 1] - cs
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
        slab = _ragged_arange(lo, nseg)
        seg = self._slab_seg[slab]
        ent_pt = pair_pt[ent_pair]
        qx, qy = px[ent_pt], py[ent_pt]
        x1, y1, x2, y2 = self._sx1[seg], self._sy1[seg], self._sx2[seg], self._sy2[seg]
        # determineSide(), operation for operation.
        side = (x2 - x1) * (qy - y1) - (qx - x1) * (y2 - y1)
        # isOnSegment() where the side is exactly 0 (rare): in the segment's bounding box.
        zero = np.flatnonzero(side == 0.0)
        zx, zy = qx[zero], qy[zero]
        zx1, zy1, zx2, zy2 = x1[zero], y1[zero], x2[zero], y2[zero]
        on = np.zeros(side.size, dtype=bool)
        on[zero] = (
            (np.minimum(zx1, zx2) <= zx)
            & (zx <= np.maximum(zx1, zx2))
            & (np.minimum(zy1, zy2) <= zy)
            & (zy <= np.maximum(zy1, zy2))
        )
        # Winding: +1 rising with the point on the left (y1 <= y < y2, side > 0), -1
        # falling with it on the right (y2 <= y < y1, side < 0).
        below1 = y1 <= qy
        below2 = y2 <= qy
        rising = below1 & ~below2 & (side > 0)
        falling = below2 & ~below1 & (side < 0)
        wind = rising.view(np.int8) - falling.view(np.int8)
        # One group per (pair, ring); entries of a pair are contiguous and ring-ordered.
        new = self._slab_new_ring[slab]
        new[np.cumsum(nseg[nseg > 0])[:-1]] = True
        if new.size:
            new[0] = True
        g = np.flatnonzero(new)
        covered = np.zeros(n_pairs, dtype=bool)
        if g.size == 0:
            return covered
        g_on = np.logical_or.reduceat(on, g)
        g_wind = np.add.reduceat(wind, g, dtype=np.int32)
        g_pair = ent_pair[g]
        g_ring = self._seg_ring[seg[g]]
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
        raise CellIndexError(
            f"duplicate code {dup!r}: the smallest-code tie-break needs unique codes"
        )
    for i, g in enumerate(geoms):
        if not isinstance(g, Polygon | MultiPolygon):
            kind = getattr(g, "geom_type", type(g).__name__)
            raise CellIndexError(
                f"cell {codes[i]!r}: expected a Polygon or MultiPolygon, got {kind}"
            )
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

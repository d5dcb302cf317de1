"""Return the offline basemap's raster tiles: roads, rail, water, boundaries and their names.

The offline basemap is drawn from what an installation already holds (the imported road
network, the boundary hierarchy; :mod:`service.basemap` reads them), so a dispatch room on a
closed network, or a page opened before any provider key is configured, still shows streets
and labelled districts, communities and grids rather than grey.

:func:`render_tile` takes lon/lat features already in the page's datum and draws one 256-px
Web Mercator tile with Pillow, at twice the size and then reduced (smooth lines without an
anti-aliasing rasteriser). Labels are placed at fixed points in world pixels, so a label
crossing a tile edge is drawn the same in both tiles; the caller passes the features of a
margin around the tile for that.

Pure: no database, no HTTP, no folium. Style is a table (:data:`STYLE`), read by zoom.
"""

from __future__ import annotations

import functools
import io
import math
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "TILE",
    "ROAD_KINDS",
    "Line",
    "Area",
    "Label",
    "PlacedLabel",
    "TileData",
    "tile_bounds",
    "query_box",
    "render_tile",
    "place_labels",
    "find_font",
    "tiles_covering",
]

TILE = 256
_SCALE = 2  # drawn at twice the size, then reduced: smooth lines
#: Margin (tile pixels) of features read around a tile, so labels across its edges agree.
MARGIN_PX = 96
#: Line kinds, drawn in this order (bottom first).
ROAD_KINDS = ("water", "minor", "road", "major", "motorway", "rail")
#: OpenStreetMap tags of an imported line → its kind (an untagged line is a road).
OSM_KINDS = {
    "motorway": "motorway",
    "trunk": "motorway",
    "primary": "major",
    "secondary": "major",
    "tertiary": "road",
    "unclassified": "road",
    "residential": "minor",
    "service": "minor",
    "footway": "minor",
    "path": "minor",
    "pedestrian": "minor",
    "living_street": "minor",
    "track": "minor",
    "steps": "minor",
    "cycleway": "minor",
}

BACKGROUND = (244, 241, 234, 255)
#: kind → (fill colour, casing colour or None, width at zoom 16 in tile px, first zoom).
STYLE = {
    "water": ((160, 200, 228), None, 6.0, 10),
    "minor": ((255, 255, 255), (205, 198, 186), 5.0, 14),
    "road": ((255, 255, 255), (190, 182, 168), 7.0, 11),
    "major": ((252, 214, 164), (200, 160, 110), 9.0, 9),
    "motorway": ((240, 160, 110), (190, 110, 70), 10.0, 7),
    "rail": ((120, 120, 120), None, 2.5, 10),
}
#: Boundaries: level → (colour, width in tile px, first zoom).
BOUNDARY = {
    "grid": ((176, 160, 196), 1.0, 11),  # read below zoom 13 where large (service.basemap)
    "community": ((150, 130, 178), 1.5, 10),
    "district": ((120, 96, 150), 2.5, 0),
    "city": ((90, 70, 120), 3.5, 0),
}
#: Labels: level → (font px, colour, first zoom, last zoom, priority: lower wins a collision).
#: An area's name is drawn only where it fits inside the area as drawn (:class:`Label`'s
#: ``box``): a community or grid is named from the zoom at which it is large enough on screen,
#: whatever its size (a county's 5-km grids from zoom 12-13, a city's 500-m grids from 15-16),
#: never as a pile of names over areas too small to hold them. Sizes allow for the pages' half
#: zoom steps (Leaflet then draws the next zoom's tiles at 71 %: 13 px reads as 9 px).
LABEL = {
    "city": (17, (60, 40, 90), 0, 9, 0),
    "district": (16, (70, 50, 100), 8, 13, 1),
    "community": (14, (80, 60, 112), 10, 16, 2),
    "grid": (13, (96, 78, 126), 11, 22, 3),
    "road": (12, (80, 80, 80), 15, 22, 4),
}
#: Where a label may go when its place is taken, in its own heights (below, then above).
_NUDGES = (0.0, 1.15, -1.15, 2.3, -2.3)
#: How much larger an area's name is drawn where the area is large on screen.
_BIG = 1.4
#: The share of its area's width a name may take (else it waits for a zoom where the area is
#: larger): a district's view names its communities, not every one of their grids.
_FIT = {"community": 0.7, "grid": 0.5}


@dataclass(frozen=True)
class Line:
    """A road, rail or water line: (n, 2) lon/lat, its kind, its name."""

    xy: np.ndarray
    kind: str = "road"
    name: str = ""


@dataclass(frozen=True)
class Area:
    """A boundary's rings: each an (n, 2) lon/lat array."""

    level: str
    rings: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Label:
    """A name at a lon/lat point; ``box`` (min lon, min lat, max lon, max lat): the area it
    names, which the drawn name must fit in (None: no such limit, e.g. a street's name)."""

    level: str
    text: str
    lon: float
    lat: float
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class PlacedLabel:
    """A label as drawn: its text, level and box in world pixels (left, top, right, bottom)."""

    level: str
    text: str
    box: tuple[float, float, float, float]
    size: int  #: font px


@dataclass
class TileData:
    """What one tile draws (in the page's datum), read with a margin around the tile."""

    lines: list[Line] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


def _world_px(lon: np.ndarray, lat: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray]:
    size = TILE * 2**z
    lat = np.clip(lat, -85.0511, 85.0511)
    x = (np.asarray(lon) + 180.0) / 360.0 * size
    s = np.sin(np.radians(lat))
    y = (0.5 - np.log((1 + s) / (1 - s)) / (4 * math.pi)) * size
    return x, y


def _lonlat(px: float, py: float, z: int) -> tuple[float, float]:
    size = TILE * 2**z
    lon = px / size * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * py / size))))
    return lon, lat


def tile_bounds(z: int, x: int, y: int, margin_px: float = 0) -> tuple[float, float, float, float]:
    """Return the lon/lat box of tile ``z/x/y`` grown by ``margin_px`` tile pixels."""
    x0, y1 = _lonlat(x * TILE - margin_px, (y + 1) * TILE + margin_px, z)
    x1, y0 = _lonlat((x + 1) * TILE + margin_px, y * TILE - margin_px, z)
    return x0, y1, x1, y0


def query_box(z: int, x: int, y: int, datum_margin_deg: float = 0.0):
    """Return the lon/lat box to read for tile ``z/x/y``: the tile, its label margin and
    ``datum_margin_deg`` (a GCJ-02 or BD-09 tile holds WGS84 data up to ~0.01° away)."""
    x0, y0, x1, y1 = tile_bounds(z, x, y, MARGIN_PX)
    m = datum_margin_deg
    return x0 - m, y0 - m, x1 + m, y1 + m


def tiles_covering(
    bounds: Sequence[float], zooms: Sequence[int], limit: int
) -> list[tuple[int, int, int]]:
    """Return the tiles (z, x, y) covering ``bounds`` at ``zooms``, at most ``limit`` of them
    (the zooms that fit, in order)."""
    out: list[tuple[int, int, int]] = []
    for z in zooms:
        x0, y0 = _world_px(np.array([bounds[0]]), np.array([bounds[3]]), z)
        x1, y1 = _world_px(np.array([bounds[2]]), np.array([bounds[1]]), z)
        n = 2**z
        xs = range(max(0, int(x0[0] // TILE)), min(n - 1, int(x1[0] // TILE)) + 1)
        ys = range(max(0, int(y0[0] // TILE)), min(n - 1, int(y1[0] // TILE)) + 1)
        tiles = [(z, tx, ty) for tx in xs for ty in ys]
        if len(out) + len(tiles) > limit:
            break
        out.extend(tiles)
    return out


# -- fonts -------------------------------------------------------------------------------------
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


@functools.cache
def find_font(preferred: str | None = None) -> str | None:
    """Return the path of a font with Chinese glyphs (``preferred`` first), or None."""
    for path in (preferred, *_FONT_CANDIDATES):
        if path and os.path.isfile(path):
            return path
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found if found and Path(found).is_file() else None


@functools.cache
def _font(path: str | None, size: int):
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    return ImageFont.load_default(size)


# -- drawing -----------------------------------------------------------------------------------
def _width(base: float, z: int) -> float:
    # Widths halve per zoom below 16 and grow a little above, never below a hairline.
    return max(0.6, base * 2.0 ** ((min(z, 18) - 16) * 0.6))


def _points(xy: np.ndarray, z: int, ox: float, oy: float) -> list[tuple[float, float]]:
    px, py = _world_px(xy[:, 0], xy[:, 1], z)
    return list(zip(((px - ox) * _SCALE).tolist(), ((py - oy) * _SCALE).tolist(), strict=True))


def _draw_lines(draw, data: TileData, z: int, ox: float, oy: float) -> None:
    by_kind: dict[str, list[Line]] = {}
    for line in data.lines:
        by_kind.setdefault(line.kind if line.kind in STYLE else "road", []).append(line)
    for kind in ROAD_KINDS:
        lines = by_kind.get(kind)
        fill, casing, base, first = STYLE[kind]
        if not lines or z < first:
            continue
        width = _width(base, z) * _SCALE
        if kind == "rail":
            width = max(width, 2.0 * _SCALE)  # a railway stays visible at every zoom
        paths = [_points(line.xy, z, ox, oy) for line in lines if len(line.xy) >= 2]
        if casing is not None and width >= 3:
            for pts in paths:
                draw.line(pts, fill=casing, width=round(width + 2 * _SCALE), joint="curve")
        for pts in paths:
            draw.line(pts, fill=fill, width=max(1, round(width)), joint="curve")
        if kind == "rail" and width >= 3 * _SCALE:
            # The white centre of a railway, where it is wide enough to show.
            for pts in paths:
                draw.line(pts, fill=(255, 255, 255), width=max(1, round(width / 3)))


def _draw_boundaries(draw, data: TileData, z: int, ox: float, oy: float) -> None:
    for level in ("grid", "community", "district", "city"):
        colour, base, first = BOUNDARY[level]
        if z < first:
            continue
        width = max(1, round(base * _SCALE * (1.0 if z >= 12 else 0.8)))
        for area in data.areas:
            if area.level != level:
                continue
            for ring in area.rings:
                if len(ring) >= 2:
                    draw.line(_points(ring, z, ox, oy), fill=colour, width=width, joint="curve")


def _text_size(text: str, size: int, font_path) -> tuple[float, float]:
    font = _font(font_path, size * _SCALE)
    left, top, right, bottom = _MEASURE.textbbox((0, 0), text, font=font, stroke_width=2 * _SCALE)
    return (right - left) / _SCALE, (bottom - top) / _SCALE


_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))


def place_labels(
    data: TileData, z: int, x: int, y: int, *, font: str | None = None
) -> list[PlacedLabel]:
    """Return the labels tile ``z/x/y`` draws, where it draws them (world pixels).

    Labels of ``data`` (the tile and its margin) are placed in priority order (:data:`LABEL`),
    each at its point or, when that place is taken, just below or above it; a name that does
    not fit inside its area at this zoom, or finds no free place, is left out. The decisions
    are taken in world pixels over the tile's margin in a fixed order, so a tile and its
    neighbour decide alike for the labels both see. The result holds those touching the tile.
    """
    font_path = font or find_font()
    candidates = []
    for label in data.labels:
        style = LABEL.get(label.level)
        if style is None or not label.text:
            continue
        size, _, first, last, priority = style
        if not first <= z <= last:
            continue
        px, py = _world_px(np.array([label.lon]), np.array([label.lat]), z)
        candidates.append((priority, float(px[0]), float(py[0]), label.text, label, size))
    candidates.sort(key=lambda c: c[:4])
    ox, oy = x * TILE, y * TILE
    placed: list[tuple[float, float, float, float]] = []
    out: list[PlacedLabel] = []
    for _, wx, wy, text, label, size in candidates:
        w, h = _text_size(text, size, font_path)
        bounds = None
        if label.box is not None:
            (bx0, bx1), (by1, by0) = _world_px(
                np.array([label.box[0], label.box[2]]), np.array([label.box[1], label.box[3]]), z
            )
            if w > _FIT.get(label.level, 0.9) * (bx1 - bx0) or h > 0.8 * (by1 - by0):
                continue  # the area is too small on screen to hold its name
            bounds = (float(bx0), float(by0), float(bx1), float(by1))
            # An area filling much of the screen (the officer's own grid on the tablet) is
            # named larger: readable at a glance, and still at 71 % between whole zooms.
            big = round(size * _BIG)
            bw, bh = _text_size(text, big, font_path)
            if bw <= 0.4 * (bx1 - bx0) and bh <= 0.3 * (by1 - by0):
                size, w, h = big, bw, bh
        for nudge in _NUDGES:
            cy = wy + nudge * h
            box = (wx - w / 2 - 2, cy - h / 2 - 2, wx + w / 2 + 2, cy + h / 2 + 2)
            if bounds is not None and not (bounds[1] <= box[1] and box[3] <= bounds[3]):
                continue
            if not any(
                box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in placed
            ):
                break
        else:
            continue
        placed.append(box)
        if box[2] < ox or box[0] > ox + TILE or box[3] < oy or box[1] > oy + TILE:
            continue
        out.append(PlacedLabel(label.level, text, box, size))
    return out


def _draw_labels(draw, placed: Sequence[PlacedLabel], ox: float, oy: float, font_path) -> None:
    for label in placed:
        size, colour = label.size, LABEL[label.level][1]
        cx, cy = (label.box[0] + label.box[2]) / 2, (label.box[1] + label.box[3]) / 2
        draw.text(
            ((cx - ox) * _SCALE, (cy - oy) * _SCALE),
            label.text,
            font=_font(font_path, size * _SCALE),
            fill=colour,
            anchor="mm",
            stroke_width=2 * _SCALE,
            stroke_fill=(255, 255, 255),
        )


def render_tile(z: int, x: int, y: int, data: TileData, *, font: str | None = None) -> bytes:
    """Return tile ``z/x/y`` of the offline basemap as PNG bytes.

    Parameters
    ----------
    z, x, y : int
        The tile (Web Mercator, rows from the north).
    data : TileData
        Lines, boundaries and labels in lon/lat of the page's datum, with a margin around the
        tile (:func:`query_box`).
    font : str, optional
        A font file with Chinese glyphs (default: :func:`find_font`).
    """
    ox, oy = x * TILE, y * TILE
    image = Image.new("RGBA", (TILE * _SCALE, TILE * _SCALE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw_lines(draw, data, z, ox, oy)
    _draw_boundaries(draw, data, z, ox, oy)
    font = font or find_font()
    _draw_labels(draw, place_labels(data, z, x, y, font=font), ox, oy, font)
    image = image.resize((TILE, TILE), Image.Resampling.LANCZOS).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()

"""Colours, classes and labels of the map pages (pure: no folium, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Classes",
    "integer_classes",
    "fixed_classes",
    "spread",
    "YL_OR_RD",
    "BLUES",
    "TEAM",
    "LEVEL_STYLE",
    "zoom_for_bounds",
]

#: ColorBrewer YlOrRd: more open cases, hotter.
YL_OR_RD = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026")
#: ColorBrewer Blues: counts that are neither good nor bad (stationed units).
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#084594")
#: Team completeness 0..3 roles: a missing role is the planner's alarm, so 0 is the red one.
TEAM = ("#d7301f", "#fc8d59", "#fee08b", "#91cf60")

# Category, team role and level names, and the categories' marker glyphs, are in the one
# table of names in both languages: maps.i18n.NAMES.
#: Outline styles per level: the higher the level, the heavier the line.
LEVEL_STYLE = {
    "city": {"color": "#111111", "weight": 4, "fill": False},
    "district": {"color": "#333333", "weight": 3, "fill": False, "dashArray": None},
    "community": {"color": "#555555", "weight": 2, "fill": False, "dashArray": "6 4"},
    # Half see-through: the street basemap (maps/basemap.py) stays readable under the colours.
    "grid": {"color": "#666666", "weight": 1, "fillOpacity": 0.55},
}


@dataclass(frozen=True)
class Classes:
    """Classes of a choropleth: ascending lower bounds, one colour and one label each."""

    breaks: tuple[float, ...]
    colors: tuple[str, ...]
    labels: tuple[str, ...]

    def index(self, value: float) -> int:
        """Return the index of the class ``value`` falls in."""
        i = 0
        for k, lower in enumerate(self.breaks):
            if value >= lower:
                i = k
        return i

    def color(self, value: float | None, missing: str = "#cccccc") -> str:
        """Return the colour of ``value`` (``missing`` for None)."""
        return missing if value is None else self.colors[self.index(value)]


def spread(palette: Sequence[str], n: int) -> tuple[str, ...]:
    """Return ``n`` colours spread evenly over ``palette``, first and last included."""
    if n <= 0:
        return ()
    if n == 1:
        return (palette[-1],)
    if n > len(palette):
        raise ValueError(f"the palette has {len(palette)} colours, {n} were asked for")
    return tuple(palette[round(i * (len(palette) - 1) / (n - 1))] for i in range(n))


def integer_classes(
    values: Iterable[float | None], classes: int = 6, palette: Sequence[str] = YL_OR_RD
) -> Classes:
    """Return classes of whole-number counts: zero alone, the rest by quantiles.

    Zero has its own class because "nothing open" is what a dispatcher scans for first; the
    positive counts are split at their quantiles, so a few hot grids do not wash out the rest.

    Parameters
    ----------
    values : iterable of numbers or None
        The counts (None is ignored).
    classes : int
        At most this many classes (fewer when the data has fewer distinct values).
    palette : sequence of str
        Colours from low to high.

    Examples
    --------
    >>> integer_classes([0, 1, 2, 3, 10], classes=3).labels
    ('0', '1–2', '≥ 3')
    """
    if classes < 2:
        raise ValueError("a choropleth needs at least 2 classes")
    positive = sorted(v for v in values if v is not None and v > 0)
    breaks: list[float] = [0]
    if positive:
        breaks.append(1)
        groups = classes - 1
        for i in range(1, groups):
            b = math.ceil(positive[min(len(positive) - 1, len(positive) * i // groups)])
            if b > breaks[-1]:
                breaks.append(b)
    labels = []
    for i, lower in enumerate(breaks):
        if i == 0:
            labels.append("0")
        elif i + 1 < len(breaks):
            upper = breaks[i + 1] - 1
            labels.append(f"{lower}" if upper == lower else f"{lower}–{upper}")
        else:
            labels.append(f"≥ {lower}")
    return Classes(tuple(breaks), spread(palette, len(breaks)), tuple(labels))


def fixed_classes(
    breaks: Sequence[float], palette: Sequence[str], labels: Sequence[str]
) -> Classes:
    """Return classes with given lower bounds, colours and labels (checked to match)."""
    if not (len(breaks) == len(palette) == len(labels)) or not breaks:
        raise ValueError("breaks, colours and labels must be non-empty and of equal length")
    if list(breaks) != sorted(set(breaks)):
        raise ValueError("breaks must be strictly ascending")
    return Classes(tuple(breaks), tuple(palette), tuple(labels))


def zoom_for_bounds(bounds: Sequence[float], width_px: int = 1600, height_px: int = 900) -> float:
    """Return the Web Mercator zoom at which ``bounds`` fits a ``width_px`` × ``height_px`` view.

    Parameters
    ----------
    bounds : [min_lon, min_lat, max_lon, max_lat]
    width_px, height_px : int
        The screen the page is for (a wall screen, a tablet).

    Examples
    --------
    >>> round(zoom_for_bounds([106.0, 26.0, 106.04, 26.02], 1024, 512), 1)
    15.0
    """
    x0, y0, x1, y1 = bounds
    if not (x1 >= x0 and y1 >= y0):
        raise ValueError(f"bounds must be [min_lon, min_lat, max_lon, max_lat], not {bounds}")

    def merc_y(lat: float) -> float:
        lat = max(-85.0511, min(85.0511, lat))
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    # Fraction of the world's width and height the box spans, against the pixels available.
    fx = max((x1 - x0) / 360.0, 1e-12)
    fy = max((merc_y(y1) - merc_y(y0)) / (2 * math.pi), 1e-12)
    zoom = min(math.log2(width_px / 256 / fx), math.log2(height_px / 256 / fy))
    return max(0.0, min(22.0, zoom))

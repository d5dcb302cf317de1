"""Hand-made GeoJSON and HTML probes for the page builders' tests."""

from __future__ import annotations

import json
import re


def square(x: float, y: float, d: float = 0.01) -> dict:
    """Return a GeoJSON square polygon with its south-west corner at (x, y)."""
    return {
        "type": "Polygon",
        "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]],
    }


def feature(geometry: dict, **properties) -> dict:
    """Return a GeoJSON Feature."""
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def point(x: float, y: float, **properties) -> dict:
    """Return a GeoJSON point Feature."""
    return feature({"type": "Point", "coordinates": [x, y]}, **properties)


GRID_CODES = ["990101001001001", "990101001001002", "990102001001001", "990102001001002"]


def embedded(html: str, call: str) -> list:
    """Return the first JSON argument of every ``call(`` in the page's script."""
    decoder = json.JSONDecoder()
    out = []
    for match in re.finditer(re.escape(call) + r"\(", html):
        value, _ = decoder.raw_decode(html, match.end())
        out.append(value)
    return out


def controls(html: str) -> str:
    """Return the HTML of the page's map controls (title bar, legend), joined."""
    found = re.findall(r'wg\.control\(map_\w+, ("(?:[^"\\]|\\.)*")', html)
    return "\n".join(json.loads(text) for text in found)

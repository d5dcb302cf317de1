"""The offline basemap's labels: an area is named where its name fits inside it on screen."""

from __future__ import annotations

import numpy as np

from maps.offline import Label, TileData, place_labels, render_tile

# A county's grid, ~5 km wide (0.05°), with its community around it, near Kaiyang.
GRID = (106.90, 27.00, 106.95, 27.04)
COMMUNITY = (106.85, 26.98, 107.00, 27.08)


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    s = np.sin(np.radians(lat))
    return int((lon + 180) / 360 * n), int((0.5 - np.log((1 + s) / (1 - s)) / (4 * np.pi)) * n)


def _placed(data: TileData, z: int, lon: float, lat: float) -> dict:
    """Return text → placed label over the 3 x 3 tiles around lon, lat (a label near a tile's
    edge is drawn by the tile it falls in)."""
    x, y = _tile_of(lon, lat, z)
    return {
        p.text: p
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for p in place_labels(data, z, x + dx, y + dy)
    }


def _labels(grid_name: str = "城关社区第1网格") -> TileData:
    centre = ((GRID[0] + GRID[2]) / 2, (GRID[1] + GRID[3]) / 2)
    return TileData(
        labels=[
            # The community's point falls inside the grid: the grid's name moves aside.
            Label("community", "城关社区", centre[0], centre[1], COMMUNITY),
            Label("grid", grid_name, centre[0], centre[1], GRID),
        ]
    )


def test_a_large_grid_is_named_at_the_zoom_a_tablet_opens_it_at():
    # A 5-km grid fills a tablet's map at zoom 13-14: its name is drawn there (names used to
    # wait for zoom 15), beside its community's, not under it.
    centre = ((GRID[0] + GRID[2]) / 2, (GRID[1] + GRID[3]) / 2)
    for z in (13, 14):
        placed = _placed(_labels(), z, *centre)
        assert "城关社区第1网格" in placed and "城关社区" in placed, (z, placed)
        a, b = placed["城关社区"].box, placed["城关社区第1网格"].box
        assert a[3] <= b[1] or b[3] <= a[1]  # one above the other, not overlapping
        # Drawn: its tile differs from one without the grid's name.
        x, y = int((b[0] + b[2]) / 2 // 256), int((b[1] + b[3]) / 2 // 256)
        data = _labels()
        without = TileData(labels=[lb for lb in data.labels if lb.level != "grid"])
        assert render_tile(z, x, y, data) != render_tile(z, x, y, without)


def test_a_name_too_long_for_its_area_on_screen_is_left_out():
    # At zoom 12 the grid is ~146 px wide: a grid's name may take half of it, and its eight
    # characters (~105 px) do not fit.
    centre = ((GRID[0] + GRID[2]) / 2, (GRID[1] + GRID[3]) / 2)
    assert "城关社区第1网格" not in _placed(_labels(), 12, *centre)
    # A short name fits the same grid at that zoom.
    short = TileData(labels=[lb for lb in _labels("一网格").labels if lb.level == "grid"])
    assert "一网格" in _placed(short, 12, *centre)


def test_a_small_citys_grids_are_named_once_there_is_room():
    # A city's 1-km grid: no name at zoom 13 (~47 px), its name at 15 (~190 px).
    box = (106.70, 26.58, 106.71, 26.59)
    centre = (106.705, 26.585)
    data = TileData(labels=[Label("grid", "中华路第3网格", *centre, box)])
    assert _placed(data, 13, *centre) == {}
    assert list(_placed(data, 15, *centre)) == ["中华路第3网格"]

"""Fixtures: a city of two districts, four grids in a row, five incidents (hand-made)."""

from __future__ import annotations

import pytest

from maps.geojson import collection
from tests.maps.data import GRID_CODES, feature, point, square


@pytest.fixture
def city():
    return collection([feature(square(106.0, 26.0, 0.04), code="990100", name="Tiny City")])


@pytest.fixture
def districts():
    return collection(
        [
            feature(square(106.0 + i * 0.02, 26.0, 0.02), code=f"99010{i + 1}", name=f"D{i + 1}")
            for i in range(2)
        ]
    )


@pytest.fixture
def grids():
    return collection(
        [
            feature(
                square(106.0 + i * 0.01, 26.0),
                code=code,
                name=f"Grid {i}",
                open_incidents=[0, 1, 3, 7][i],
                incidents_90d=[0, 2, 5, 9][i],
                units=i,
                team_roles=[3, 2, 1, 0][i],
            )
            for i, code in enumerate(GRID_CODES)
        ]
    )


@pytest.fixture
def incidents():
    cats = ["water", "gas", "road", "other", "road"]
    return collection(
        [
            point(106.005 + i * 0.006, 26.005, category=c, status="new", grid_code=GRID_CODES[0])
            for i, c in enumerate(cats)
        ]
    )

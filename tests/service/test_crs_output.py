"""Answers in the client's coordinate system (``crs=GCJ-02|BD-09|EPSG:4490``): OGC items,
lookups, entity reads and GCJ-02 vector tiles, each back to the stored WGS84 to < 1e-6°."""

from __future__ import annotations

import numpy as np
import pytest

from geo.coords import CRS_URIS, to_wgs84
from tests.conftest import auth, make_tokens

CRS84 = CRS_URIS["EPSG:4326"]


@pytest.fixture
def admin(tiny_db_url):
    return auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])


def _coords(geometry: dict) -> np.ndarray:
    out = []

    def walk(c):
        if isinstance(c[0], (int, float)):
            out.append(c[:2])
        else:
            for part in c:
                walk(part)

    walk(geometry["coordinates"])
    return np.array(out, dtype=float)


def _items(client, headers, layer: str, **params):
    r = client.get(
        f"/ogc/collections/{layer}/items", params={"limit": 1000, **params}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize(
    ("crs", "name"),
    [("GCJ-02", "GCJ-02"), ("BD-09", "BD-09"), (CRS_URIS["GCJ-02"], "GCJ-02"), ("baidu", "BD-09")],
)
def test_items_round_trip(tiny_client, admin, crs, name):
    plain = _items(tiny_client, admin, "grids").json()["features"]
    r = _items(tiny_client, admin, "grids", crs=crs)
    shifted = r.json()["features"]
    assert r.headers["content-crs"] == f"<{CRS_URIS[name]}>"
    assert [f["id"] for f in plain] == [f["id"] for f in shifted] and plain
    for a, b in zip(plain, shifted, strict=True):
        wgs, got = _coords(a["geometry"]), _coords(b["geometry"])
        assert np.abs(got - wgs).max() > 1e-3  # shifted by hundreds of metres
        back = np.column_stack(to_wgs84(got[:, 0], got[:, 1], crs))
        assert np.abs(back - wgs).max() < 1e-6

"""Point lookup on the tiny hierarchy, where every right answer can be read off a drawing."""

from __future__ import annotations

import pytest

from tests.conftest import auth, make_tokens


@pytest.fixture
def city(tiny_db_url):
    return auth(make_tokens(tiny_db_url, {"c": ("city_dispatcher", "990100")})["c"])


def test_point_inside_returns_the_whole_chain(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 106.035, "lat": 26.005}, headers=city)
    assert r.status_code == 200
    body = r.json()
    assert body["matched"] == ["city", "district", "community", "grid"]
    assert body["city"]["code"] == "990100"
    assert body["district"]["code"] == "990102"
    assert body["community"]["code"] == "990102001002"
    assert body["grid"] == {"code": "990102001002002", "name": "Grid 2-2-2"}
    assert "note" not in body


def test_cgcs2000_input_is_accepted(tiny_client, city):
    r = tiny_client.get(
        "/lookup", params={"lon": 106.035, "lat": 26.005, "crs": "EPSG:4490"}, headers=city
    )
    assert r.json()["grid"]["code"] == "990102001002002"
    assert r.json()["point"]["given_crs"] == "EPSG:4490"


@pytest.mark.parametrize("crs", ["GCJ-02", "BD-09"])
def test_chinese_map_sdk_coordinates_are_converted(tiny_client, city, crs):
    from geo.coords import wgs84_to_bd09, wgs84_to_gcj02

    convert = wgs84_to_gcj02 if crs == "GCJ-02" else wgs84_to_bd09
    lon, lat = convert(106.0098, 26.0195)  # 20 m inside the north-western grid's corner
    r = tiny_client.get("/lookup", params={"lon": lon, "lat": lat, "crs": crs}, headers=city)
    assert r.json()["grid"]["code"] == "990101001001001"
    assert abs(r.json()["point"]["lon"] - 106.0098) < 1e-8
    batch = tiny_client.post(
        "/lookup/batch", json={"points": [[lon, lat]], "crs": crs}, headers=city
    ).json()
    assert batch["results"][0]["grid"]["code"] == "990101001001001"
    outside = tiny_client.get(
        "/lookup", params={"lon": 2.35, "lat": 48.85, "crs": crs}, headers=city
    )
    assert outside.status_code == 422 and "China" in outside.json()["detail"]


def test_point_outside_every_area_is_an_answer_not_an_error(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 116.39, "lat": 39.9}, headers=city)
    assert r.status_code == 200
    body = r.json()
    assert body["matched"] == []
    assert body["grid"] is None and body["city"] is None
    assert "outside every area" in body["note"]


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (106.01, 26.015, "990101001001001"),  # edge between two grids of one community
        (106.02, 26.01, "990101001001002"),  # corner of four grids in two districts
        (106.02, 26.005, "990101001002002"),  # edge between two districts
    ],
)
def test_shared_edge_always_goes_to_the_smallest_code(tiny_client, city, lon, lat, expected):
    answers = {
        tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=city).json()["grid"][
            "code"
        ]
        for _ in range(5)
    }
    assert answers == {expected}
    # The chain is that grid's own ancestors, never a mix of neighbours.
    body = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=city).json()
    assert expected.startswith(body["community"]["code"])
    assert body["community"]["code"].startswith(body["district"]["code"])


def test_outer_boundary_point_is_covered(tiny_client, city):
    r = tiny_client.get("/lookup", params={"lon": 106.0, "lat": 26.0}, headers=city)
    assert r.json()["grid"]["code"] == "990101001002001"


def test_batch_keeps_order_ids_and_reports_each_status(tiny_client, tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {"c": ("city_dispatcher", "990100"), "d": ("district_dispatcher", "990101")},
    )
    points = [
        {"lon": 106.005, "lat": 26.005, "id": "a"},
        [106.035, 26.015],
        {"lon": 0.5, "lat": 0.5, "id": 7},
    ]
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=auth(tokens["c"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {
        "matched": 2,
        "partial": 0,
        "unmatched": 1,
        "outside_scope": 0,
        "total": 3,
    }
    res = body["results"]
    assert [x["index"] for x in res] == [0, 1, 2]
    assert res[0]["id"] == "a" and res[0]["grid"]["code"] == "990101001002001"
    assert res[1]["grid"]["code"] == "990102001001002" and "id" not in res[1]
    assert res[2]["id"] == 7 and res[2]["status"] == "unmatched"

    # A district dispatcher sees the other district's point as outside scope, with no codes.
    r = tiny_client.post("/lookup/batch", json={"points": points}, headers=auth(tokens["d"]))
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["matched", "outside_scope", "unmatched"]
    assert res[1]["grid"] is None and res[1]["district"] is None


def test_batch_matches_single_lookups(tiny_client, city):
    import numpy as np

    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(105.99, 106.05, 300), rng.uniform(25.99, 26.03, 300)])
    batch = tiny_client.post("/lookup/batch", json={"points": pts.tolist()}, headers=city).json()[
        "results"
    ]
    for (lon, lat), item in zip(pts[:60], batch[:60], strict=True):
        single = tiny_client.get("/lookup", params={"lon": lon, "lat": lat}, headers=city).json()
        assert (single["grid"] or {}).get("code") == (item["grid"] or {}).get("code")

"""Boundary generations: load inactive, activate in one step, history stays queryable."""

from __future__ import annotations

from shapely.geometry import box, mapping

from tests.conftest import auth, make_tokens


def _grid_feature(code, parent, geom, name="Redrawn grid"):
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name, "level": "grid", "parent_code": parent},
        "geometry": mapping(geom),
    }


def test_redrawn_grid_in_new_generation_leaves_history_queryable(tiny_client, tiny_db_url):
    tokens = make_tokens(
        tiny_db_url, {"admin": ("admin", None), "city": ("city_dispatcher", "990100")}
    )
    admin, city = auth(tokens["admin"]), auth(tokens["city"])
    point = {"lon": 106.005, "lat": 26.015}  # in grid 990101001001001 (north-west)
    before = tiny_client.get("/lookup", params=point, headers=city).json()
    assert before["grid"]["code"] == "990101001001001"
    assert before["generation"] == 1

    gen = tiny_client.post("/generations", json={"description": "merge NW grids"}, headers=admin)
    assert gen.status_code == 201, gen.text
    gen_id = gen.json()["id"]
    # Merge the two north-western grids into one with a new sequence number (003).
    merged = box(106.00, 26.01, 106.02, 26.02)
    r = tiny_client.post(
        f"/generations/{gen_id}/retire",
        json={"codes": ["990101001001001", "990101001001002"]},
        headers=admin,
    )
    assert r.json() == {"retired": 2}
    fc = {
        "type": "FeatureCollection",
        "features": [_grid_feature("990101001001003", "990101001001", merged)],
    }
    r = tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 1

    # Pending: nothing changes for current lookups; planners/admins may preview it.
    assert tiny_client.get("/lookup", params=point, headers=city).json()["grid"]["code"] == (
        "990101001001001"
    )
    preview = tiny_client.get("/lookup", params={**point, "generation": gen_id}, headers=admin)
    assert preview.json()["grid"]["code"] == "990101001001003"
    refused = tiny_client.get("/lookup", params={**point, "generation": gen_id}, headers=city)
    assert refused.status_code == 403

    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    after = tiny_client.get("/lookup", params=point, headers=city).json()
    assert after["generation"] == gen_id
    assert after["grid"]["code"] == "990101001001003"

    # History: generation 1 still answers with the old grid; the old code has one version.
    old = tiny_client.get("/lookup", params={**point, "generation": 1}, headers=city).json()
    assert old["grid"]["code"] == "990101001001001"
    hist = tiny_client.get("/areas/990101001001001/history", headers=city).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, 1)]
    # Unchanged areas were carried over: one row spanning both generations.
    hist = tiny_client.get("/areas/990102001001001/history", headers=city).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, gen_id)]
    assert tiny_client.get("/areas/990101001001001", headers=city).status_code == 404
    gens = tiny_client.get("/generations", headers=city).json()
    assert [(g["id"], g["current"]) for g in gens] == [(gen_id, True), (1, False)]


def test_changed_geometry_of_a_kept_code_makes_a_new_version(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None)})
    admin = auth(tokens["admin"])
    gen_id = tiny_client.post("/generations", json={"description": "survey"}, headers=admin).json()[
        "id"
    ]
    # The city boundary from a new survey: same code, slightly different polygon.
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "990100", "name": "Tiny City", "level": "city"},
                "geometry": mapping(box(106.0, 26.0, 106.04, 26.0201)),
            }
        ],
    }
    r = tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=admin)
    assert r.json()["replaced"] == 1
    tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    hist = tiny_client.get("/areas/990100/history", headers=admin).json()
    assert [(h["generation_low"], h["generation_high"]) for h in hist] == [(1, 1), (2, 2)]


def test_only_one_pending_generation_and_active_ones_are_frozen(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None), "planner": ("planner", "990100")})
    admin = auth(tokens["admin"])
    assert (
        tiny_client.post("/generations", json={"description": "a"}, headers=admin).status_code
        == 201
    )
    second = tiny_client.post("/generations", json={"description": "b"}, headers=admin)
    assert second.status_code == 409
    fc = {
        "type": "FeatureCollection",
        "features": [
            _grid_feature("990101001001009", "990101001001", box(106, 26.01, 106.001, 26.011))
        ],
    }
    frozen = tiny_client.post("/generations/1/areas", json=fc, headers=admin)
    assert frozen.status_code == 409
    assert "active" in frozen.json()["detail"]
    not_admin = tiny_client.post(
        "/generations", json={"description": "c"}, headers=auth(tokens["planner"])
    )
    assert not_admin.status_code == 403


def test_activation_refuses_orphans(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None)})
    admin = auth(tokens["admin"])
    gen_id = tiny_client.post(
        "/generations", json={"description": "empty", "carry_over": False}, headers=admin
    ).json()["id"]
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 422
    assert "no areas" in r.json()["detail"]

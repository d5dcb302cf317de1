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
    # A strip along the new northern edge: in the new city, in none of its districts.
    strip = {"lon": 106.039, "lat": 26.02005}
    assert tiny_client.get("/lookup", params=strip, headers=admin).json()["matched"] == []
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": gen_id,
        "active": True,
        "current": True,
        "remapped": {"unit": 0, "facility": 0, "care_household": 0, "incident": 0},
    }
    after = tiny_client.get("/lookup", params=strip, headers=admin).json()
    assert after["generation"] == gen_id and after["matched"] == ["city"]
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["current"]) for g in gens] == [(gen_id, True), (1, False)]
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


def test_activation_refuses_an_empty_generation(tiny_client, tiny_db_url):
    tokens = make_tokens(tiny_db_url, {"admin": ("admin", None)})
    admin = auth(tokens["admin"])
    gen_id = tiny_client.post(
        "/generations", json={"description": "empty", "carry_over": False}, headers=admin
    ).json()["id"]
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 422
    assert "no areas" in r.json()["detail"]


def test_activation_refuses_a_generation_with_an_orphan_and_stays_pending(tiny_client, tiny_db_url):
    from sqlalchemy import text

    from service.db import make_engine

    tokens = make_tokens(
        tiny_db_url, {"admin": ("admin", None), "city": ("city_dispatcher", "990100")}
    )
    admin, city = auth(tokens["admin"]), auth(tokens["city"])
    gen_id = tiny_client.post("/generations", json={"description": "x"}, headers=admin).json()["id"]
    # The API cannot leave a child without its parent (loads check parents, retiring takes the
    # children along), so the orphan is made at the database, as a hand repair could.
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE area SET generation_high = :g - 1 WHERE code = '990101001001'"),
            {"g": gen_id},
        )
    engine.dispose()
    r = tiny_client.post(f"/generations/{gen_id}/activate", headers=admin)
    assert r.status_code == 422, r.text
    # Either grid of the dropped community may be named first.
    assert r.json()["detail"] in {
        f"area 99010100100100{g} has no parent 990101001001 in generation {gen_id}" for g in (1, 2)
    }
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["active"], g["current"]) for g in gens] == [
        (gen_id, False, False),
        (1, True, True),
    ]
    point = {"lon": 106.005, "lat": 26.015}
    assert tiny_client.get("/lookup", params=point, headers=city).json()["generation"] == 1


def test_only_admins_create_load_retire_and_activate_generations(tiny_client, tiny_db_url):
    from service.auth import create_token
    from service.db import make_engine

    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "planner": ("planner", "990100"),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", "990101001001001"),
        },
    )
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        tokens["intake"] = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    admin = auth(tokens.pop("admin"))
    gen_id = tiny_client.post("/generations", json={"description": "p"}, headers=admin).json()["id"]
    fc = {
        "type": "FeatureCollection",
        "features": [
            _grid_feature("990101001001003", "990101001001", box(106.0, 26.01, 106.02, 26.02))
        ],
    }
    for role, token in tokens.items():
        h = auth(token)
        writes = {
            "create": tiny_client.post("/generations", json={"description": "x"}, headers=h),
            "load": tiny_client.post(f"/generations/{gen_id}/areas", json=fc, headers=h),
            "retire": tiny_client.post(
                f"/generations/{gen_id}/retire", json={"codes": ["990101001001001"]}, headers=h
            ),
            "activate": tiny_client.post(f"/generations/{gen_id}/activate", headers=h),
        }
        for action, r in writes.items():
            assert r.status_code == 403, (role, action, r.text)
            assert "admin" in r.json()["detail"], (role, action)
    # Nothing happened: one pending generation, still holding the old grid and not the new.
    gens = tiny_client.get("/generations", headers=admin).json()
    assert [(g["id"], g["active"]) for g in gens] == [(gen_id, False), (1, True)]
    preview = tiny_client.get(
        "/lookup", params={"lon": 106.005, "lat": 26.015, "generation": gen_id}, headers=admin
    ).json()
    assert preview["grid"]["code"] == "990101001001001"

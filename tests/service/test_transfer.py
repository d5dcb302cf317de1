"""Bulk import and export: every format, all or nothing, per-row reports, scope, CRS."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from geo.coords import wgs84_to_gcj02
from geo.tables import read_point_table, write_point_table
from service.db import make_engine
from tests.conftest import auth, make_tokens

NW_GRID = "990101001001001"


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "community": ("community_dispatcher", "990101001001"),
            "grid": ("grid_officer", NW_GRID),
            "planner": ("planner", "990100"),
        },
    )
    return {k: auth(v) for k, v in tokens.items()}


def _count(url, table):
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    engine.dispose()
    return n


def _csv(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8-sig")


UNITS = [
    {
        "name": "开阳磷化工",
        "kind": "enterprise",
        "经度": 106.005,
        "纬度": 26.015,
        "staff": 120,
        "co_building": "是",
        "联系人": "王芳",
    },
    {
        "name": "便利店",
        "kind": "shop",
        "经度": 106.015,
        "纬度": 26.015,
        "staff": 3,
        "co_building": "否",
        "联系人": "",
    },
    {
        "name": "",
        "kind": "bakery",
        "经度": 106.005,
        "纬度": 26.016,
        "staff": "many",
        "co_building": "maybe",
        "联系人": "",
    },
    {
        "name": "卫生院",
        "kind": "public_institution",
        "经度": 26.015,
        "纬度": 106.005,
        "staff": 40,
        "co_building": "",
        "联系人": "",
    },
    {
        "name": "远处",
        "kind": "shop",
        "经度": 106.005,
        "纬度": 26.005,
        "staff": 1,
        "co_building": "",
        "联系人": "",
    },
]


def _import(client, headers, data, filename, **form):
    return client.post(
        "/units/import",
        files={"file": (filename, data)},
        data={k: str(v) for k, v in form.items()},
        headers=headers,
    )


def test_csv_import_is_all_or_nothing_with_a_report_naming_row_and_field(
    tiny_client, h, tiny_db_url
):
    r = _import(tiny_client, h["community"], _csv(UNITS), "units.csv")
    assert r.status_code == 422, r.text
    report = r.json()["report"]
    assert report["committed"] is False and report["accepted"] == 0
    found = {(p["row"], p["field"]) for p in report["problems"]}
    assert {(3, "name"), (3, "kind"), (3, "staff"), (3, "co_building")} <= found
    assert (4, "lon,lat") in found  # swapped
    assert (5, "lon,lat") in found  # another community: outside the caller's area
    swapped = next(p for p in report["problems"] if p["row"] == 4)
    assert "swapped" in swapped["reason"]
    assert _count(tiny_db_url, "unit") == 0


def test_skip_bad_keeps_the_good_rows_and_reports_the_rest(tiny_client, h, tiny_db_url):
    r = _import(tiny_client, h["community"], _csv(UNITS), "units.csv", skip_bad="true")
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["rows"], report["accepted"], report["rejected"]) == (5, 2, 3)
    assert report["per_grid"] == {NW_GRID: 1, "990101001001002": 1}
    assert report["kept_in_properties"] == ["联系人"]
    units = tiny_client.get("/units", headers=h["community"]).json()["items"]
    assert sorted(u["name"] for u in units) == ["便利店", "开阳磷化工"]
    big = next(u for u in units if u["name"] == "开阳磷化工")
    assert big["staff"] == 120 and big["co_building"] is True
    assert big["cells"]["grid_code"] == NW_GRID


def test_gcj02_csv_lands_where_wgs84_would(tiny_client, h):
    lon, lat = wgs84_to_gcj02(106.0098, 26.0195)
    rows = [{"name": "x", "kind": "shop", "lon": float(lon), "lat": float(lat)}]
    r = _import(tiny_client, h["community"], _csv(rows), "u.csv", crs="GCJ-02")
    assert r.status_code == 200, r.text
    assert r.json()["per_grid"] == {NW_GRID: 1} and r.json()["crs"] == "GCJ-02"
    unit = tiny_client.get("/units", headers=h["community"]).json()["items"][0]
    assert abs(unit["lon"] - 106.0098) < 1e-7 and abs(unit["lat"] - 26.0195) < 1e-7


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "shp"])
def test_export_then_import_round_trip_in_every_format(tiny_client, h, tiny_db_url, fmt):
    for name, lon in (("甲", 106.005), ("乙", 106.015)):
        r = tiny_client.post(
            "/units",
            json={"name": name, "kind": "shop", "lon": lon, "lat": 26.015, "party_members": 3},
            headers=h["admin"],
        )
        assert r.status_code == 201, r.text
    out = tiny_client.get("/units/export", params={"format": fmt}, headers=h["admin"])
    assert out.status_code == 200
    filename = {"geojson": "u.geojson", "gpkg": "u.gpkg", "shp": "u.zip"}[fmt]
    table = read_point_table(out.content, filename=filename)
    assert sorted(table.attributes["name"]) == ["乙", "甲"]
    r = _import(tiny_client, h["admin"], out.content, filename)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2 and "id" in r.json()["ignored_columns"]
    assert _count(tiny_db_url, "unit") == 4


def test_geojson_declared_cgcs2000_is_accepted(tiny_client, h):
    fc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "a", "kind": "shop"},
                "geometry": {"type": "Point", "coordinates": [106.005, 26.015]},
            }
        ],
    }
    r = _import(tiny_client, h["community"], json.dumps(fc).encode(), "u.geojson")
    assert r.status_code == 200 and r.json()["crs"] == "EPSG:4490"


def test_zip_bomb_and_unknown_format_are_refused(tiny_client, h):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("units.shp", b"\0" * 30_000_000)
    r = _import(tiny_client, h["community"], buffer.getvalue(), "units.zip")
    assert r.status_code == 422 and r.json()["field"] == "file"
    assert "ratio" in r.json()["detail"] or "compress" in r.json()["detail"]
    r = _import(tiny_client, h["community"], b"x", "units.xlsx")
    assert r.status_code == 422 and r.json()["field"] == "file"


def test_export_is_scoped_and_sensitive_exports_are_guarded(tiny_client, h, tiny_db_url):
    for name, lon, lat in (("mine", 106.005, 26.015), ("theirs", 106.035, 26.005)):
        r = tiny_client.post(
            "/units",
            json={"name": name, "kind": "shop", "lon": lon, "lat": lat},
            headers=h["admin"],
        )
        assert r.status_code == 201, r.text
    csv = tiny_client.get("/units/export", params={"format": "csv"}, headers=h["grid"])
    frame = pd.read_csv(io.BytesIO(csv.content), encoding="utf-8-sig")
    assert frame["name"].tolist() == ["mine"]
    r = tiny_client.post(
        "/care-households",
        json={"kind": "hardship", "head_name": "张", "lon": 106.005, "lat": 26.015},
        headers=h["admin"],
    )
    assert r.status_code == 201, r.text
    assert tiny_client.get("/care-households/export", headers=h["planner"]).status_code == 403
    ok = tiny_client.get(
        "/care-households/export", params={"format": "csv"}, headers=h["community"]
    )
    assert ok.status_code == 200 and "张" in ok.content.decode("utf-8-sig")
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM access_log WHERE action = 'export'"))
        assert logged.scalar() == 1
    engine.dispose()
    bad = tiny_client.get("/units/export", params={"format": "xls"}, headers=h["grid"])
    assert bad.status_code == 422 and bad.json()["field"] == "format"


def test_members_csv_import(tiny_client, h, tiny_db_url):
    rows = [
        {
            "name": "刘强",
            "kind": "grid_staff",
            "home_community_code": "990101001001",
            "team_role": "grid_police",
            "serving_grid_code": NW_GRID,
            "phone": "",
        },
        {
            "name": "陈静",
            "kind": "party_member",
            "home_community_code": "990101001001",
            "team_role": "",
            "serving_grid_code": "",
            "phone": "13800000000",
        },
        {
            "name": "x",
            "kind": "party_member",
            "home_community_code": "990102001001",
            "team_role": "",
            "serving_grid_code": "",
            "phone": "",
        },
    ]
    r = tiny_client.post(
        "/members/import", files={"file": ("m.csv", _csv(rows))}, headers=h["community"]
    )
    assert r.status_code == 422
    assert [(p["row"], p["field"]) for p in r.json()["report"]["problems"]] == [
        (3, "home_community_code")
    ]
    r = tiny_client.post(
        "/members/import",
        files={"file": ("m.csv", _csv(rows))},
        data={"skip_bad": "true"},
        headers=h["community"],
    )
    assert r.json()["accepted"] == 2
    assert _count(tiny_db_url, "member") == 2


def test_bulk_cells_equal_the_database_trigger(tiny_client, h, tiny_db_url):
    rng = np.random.default_rng(3)
    lon = np.concatenate([rng.uniform(106.0, 106.04, 300), [106.01, 106.02, 106.0, 106.04]])
    lat = np.concatenate([rng.uniform(26.0, 26.02, 300), [26.015, 26.01, 26.0, 26.02]])
    data = write_point_table(
        lon,
        lat,
        pd.DataFrame({"name": ["p"] * len(lon), "kind": ["shop"] * len(lon)}),
        format="gpkg",
    )
    r = _import(tiny_client, h["admin"], data, "u.gpkg")
    assert r.status_code == 200, r.text
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "SELECT u.grid_code, l.grid_code AS db_grid, u.area_path, l.area_path AS db_path "
                "FROM unit u, locate_point(u.geom, u.generation) l"
            )
        ).all()
    engine.dispose()
    assert len(rows) == len(lon)
    assert all(r.grid_code == r.db_grid and r.area_path == r.db_path for r in rows)


def test_cli_import_with_progress_and_report(tiny_db_url, tmp_path, monkeypatch):
    from service.cli import app

    monkeypatch.setenv("DATABASE_URL", tiny_db_url)
    path = tmp_path / "units.csv"
    path.write_bytes(_csv(UNITS))
    runner = CliRunner()
    refused = runner.invoke(app, ["import", "units", str(path)])
    assert refused.exit_code == 1
    assert "row 3: co_building" in refused.output and "nothing imported" in refused.output
    report = tmp_path / "report.json"
    ok = runner.invoke(app, ["import", "units", str(path), "--skip-bad", "--report", str(report)])
    assert ok.exit_code == 0, ok.output
    assert "5 rows, 3 accepted, 2 rejected" in ok.output
    assert json.loads(report.read_text())["accepted"] == 3


def test_csv_export_defuses_spreadsheet_formulas_and_reimports_them_unchanged(
    tiny_client, h, tiny_db_url
):
    r = tiny_client.post(
        "/units",
        json={"name": '=HYPERLINK("http://evil")', "kind": "shop", "lon": 106.005, "lat": 26.015},
        headers=h["admin"],
    )
    assert r.status_code == 201, r.text
    out = tiny_client.get("/units/export", params={"format": "csv"}, headers=h["admin"])
    frame = pd.read_csv(io.BytesIO(out.content), encoding="utf-8-sig")
    assert frame["name"].tolist() == ['\'=HYPERLINK("http://evil")']
    r = _import(tiny_client, h["admin"], out.content, "units.csv")
    assert r.status_code == 200, r.text
    names = {u["name"] for u in tiny_client.get("/units", headers=h["admin"]).json()["items"]}
    assert names == {'=HYPERLINK("http://evil")'}


# -- who may import, and an intake's source ---------------------------------------------------
def _intake(url: str) -> dict[str, str]:
    from service.auth import create_token

    engine = make_engine(url)
    with engine.begin() as conn:
        token = create_token(
            conn, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    return auth(token)


POINT_FILES = {
    "units": [{"name": "u", "kind": "shop", "lon": 106.005, "lat": 26.015}],
    "facilities": [{"name": "f", "kind": "service_station", "lon": 106.005, "lat": 26.015}],
    "care-households": [{"kind": "hardship", "head_name": "赵", "lon": 106.005, "lat": 26.015}],
    "incidents": [{"category": "water", "source": "patrol", "lon": 106.005, "lat": 26.015}],
}
TABLES = {
    "units": "unit",
    "facilities": "facility",
    "care-households": "care_household",
    "incidents": "incident",
}


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("planner", set()),
        ("grid", set()),  # files incidents and visits one by one, never in bulk
        ("intake", {"incidents"}),
        ("community", {"units", "facilities", "care-households", "incidents"}),
    ],
)
def test_import_is_refused_to_roles_that_may_not_import_that_kind(
    tiny_client, h, tiny_db_url, role, allowed
):
    headers = _intake(tiny_db_url) if role == "intake" else h[role]
    for entity, rows in POINT_FILES.items():
        r = tiny_client.post(
            f"/{entity}/import", files={"file": ("x.csv", _csv(rows))}, headers=headers
        )
        n = _count(tiny_db_url, TABLES[entity])
        if entity in allowed:
            assert r.status_code == 200 and r.json()["accepted"] == 1, (entity, r.text)
            assert n == 1, entity
        else:
            assert r.status_code == 403, (entity, r.text)
            assert r.json()["field"] == "role" and "may not import" in r.json()["detail"]
            assert n == 0, entity
    members = [{"name": "m", "kind": "party_member", "home_community_code": "990101001001"}]
    r = tiny_client.post(
        "/members/import", files={"file": ("m.csv", _csv(members))}, headers=headers
    )
    assert r.status_code == (200 if role == "community" else 403), r.text


def test_an_intake_import_stamps_every_incident_with_its_own_source(tiny_client, tiny_db_url):
    rows = [
        {"category": "water", "source": "resident", "lon": 106.005, "lat": 26.015},
        {"category": "gas", "source": "", "lon": 106.035, "lat": 26.005},
        {"category": "road", "source": "camera", "lon": 106.015, "lat": 26.015},
    ]
    r = tiny_client.post(
        "/incidents/import",
        files={"file": ("cases.csv", _csv(rows))},
        headers=_intake(tiny_db_url),
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        sources = conn.execute(text("SELECT category, source FROM incident ORDER BY id")).all()
    engine.dispose()
    assert [tuple(s) for s in sources] == [
        ("water", "hotline_12319"),
        ("gas", "hotline_12319"),
        ("road", "hotline_12319"),
    ]


# -- the upload limit and the crs field -------------------------------------------------------
def test_an_upload_over_the_size_limit_is_refused_and_one_at_it_accepted(tiny_db_url):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    limit = 4096
    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=tiny_db_url), api=APISettings(max_upload_bytes=limit)
    )
    admin = auth(make_tokens(tiny_db_url, {"a": ("admin", None)})["a"])

    def units_csv(size: int) -> bytes:
        row = {"name": "u", "kind": "shop", "lon": 106.005, "lat": 26.015, "note": ""}
        data = _csv([{**row, "note": "x" * (size - len(_csv([row])))}])
        assert len(data) == size
        return data

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        over = _import(client, admin, units_csv(limit + 1), "u.csv")
        assert over.status_code == 422, over.text
        assert over.json()["field"] == "file" and f"exceeds {limit} bytes" in over.json()["detail"]
        assert _count(tiny_db_url, "unit") == 0
        at = _import(client, admin, units_csv(limit), "u.csv")
        assert at.status_code == 200, at.text
        assert at.json()["accepted"] == 1
    assert _count(tiny_db_url, "unit") == 1


def test_a_crs_field_overrides_the_crs_the_file_declares(tiny_client, h, tiny_db_url):
    # An Amap export labelled WGS84 (a common mistake): the form field says what it really is.
    lon, lat = wgs84_to_gcj02(106.0098, 26.0195)
    fc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "a", "kind": "shop"},
                "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]},
            }
        ],
    }
    data = json.dumps(fc).encode()
    as_declared = _import(tiny_client, h["admin"], data, "u.geojson")
    assert as_declared.status_code == 200 and as_declared.json()["crs"] == "EPSG:4326"
    assert as_declared.json()["per_grid"] == {"990101001001002": 1}  # 500 m off: the wrong grid
    overridden = _import(tiny_client, h["admin"], data, "u.geojson", crs="GCJ-02")
    assert overridden.status_code == 200, overridden.text
    assert overridden.json()["crs"] == "GCJ-02" and overridden.json()["per_grid"] == {NW_GRID: 1}
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        x, y = conn.execute(
            text("SELECT ST_X(geom), ST_Y(geom) FROM unit ORDER BY id DESC LIMIT 1")
        ).one()
    engine.dispose()
    assert abs(x - 106.0098) < 1e-7 and abs(y - 26.0195) < 1e-7


def test_a_crs_field_cannot_make_projected_metres_into_degrees(tiny_client, h, tiny_db_url):
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(106.005, 26.015)
    data = write_point_table(
        [x], [y], pd.DataFrame({"name": ["m"], "kind": ["shop"]}), format="gpkg", crs="EPSG:3857"
    )
    # The file's own CRS is refused, saying which ones are accepted ...
    r = _import(tiny_client, h["admin"], data, "u.gpkg")
    assert r.status_code == 422 and r.json()["field"] == "crs" and "EPSG:3857" in r.json()["detail"]
    # ... and calling its metres WGS84 degrees puts them off the globe: the row is refused.
    r = _import(tiny_client, h["admin"], data, "u.gpkg", crs="EPSG:4326")
    assert r.status_code == 422, r.text
    report = r.json()["report"]
    assert report["crs"] == "EPSG:4326" and report["accepted"] == 0
    (problem,) = report["problems"]
    assert problem["field"] == "lon,lat" and "outside [-180, 180]" in problem["reason"]
    assert _count(tiny_db_url, "unit") == 0

"""The coverage report on the Guiyang demo: JSON, GeoPackage, CSV zip, scope, care, CLI."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pandas as pd
import pyogrio
import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

from service.auth import create_token
from service.db import make_engine
from service.errors import UnprocessableError
from tests.conftest import auth, make_tokens

ANALYSES = ("staffing", "topology", "organisation", "care", "workload", "evaluation", "reach")
KAIYANG = "520121"
LAYERS = {
    "reach_uncovered",
    "topology_defects",
    "staffing_missing_roles",
    "staffing_doubled_roles",
    "workload_outliers",
    "organisation_grids_without_branch",
    "organisation_large_units_without_co_building",
    "care_grid_gaps",
}
TABLES = {
    "staffing_grids",
    "organisation_areas",
    "care_communities",
    "workload_grids",
    "reach_communities",
    "key_figures",
}


def _scalar(url: str, sql: str, **params):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def community(demo_db_url) -> str:
    """A Kaiyang community with several grids (and care households)."""
    return _scalar(
        demo_db_url,
        "SELECT a.parent_code FROM area a WHERE a.level = 'grid' AND a.code LIKE '520121%' "
        "GROUP BY a.parent_code HAVING count(*) > 2 ORDER BY a.parent_code LIMIT 1",
    )


@pytest.fixture(scope="module")
def api(demo_db_url, demo_client, community):
    paths = {getattr(r, "path", None) for r in demo_client.app.router.routes}
    assert "/analysis/report" in paths  # the app serves the report itself
    tokens = make_tokens(
        demo_db_url,
        {
            "planner": ("planner", "520100"),
            "kaiyang": ("district_dispatcher", KAIYANG),
            "community": ("community_dispatcher", community),
        },
    )
    engine = make_engine(demo_db_url)
    with engine.begin() as conn:
        tokens["intake"] = create_token(
            conn, name="hotline", role="intake", area_code="520100", source="hotline_12319"
        )
    engine.dispose()
    return demo_client, {name: auth(tok) for name, tok in tokens.items()}


@pytest.fixture(scope="module")
def kaiyang_report(api):
    client, h = api
    r = client.get("/analysis/report", params={"area": KAIYANG}, headers=h["planner"])
    assert r.status_code == 200, r.text
    return r.json()


def _grids(url: str, prefix: str) -> int:
    return _scalar(
        url,
        "SELECT count(*) FROM area WHERE level = 'grid' AND code LIKE :p "
        "AND generation_high = (SELECT max(id) FROM generation WHERE active)",
        p=prefix + "%",
    )


def _communities(url: str, prefix: str) -> int:
    return _scalar(
        url,
        "SELECT count(*) FROM area WHERE level = 'community' AND code LIKE :p "
        "AND generation_high = (SELECT max(id) FROM generation WHERE active)",
        p=prefix + "%",
    )


def _raw_figures(url: str, district: str) -> dict[str, dict]:
    """Return per analysis the summary figures of ``district`` counted from the raw tables.

    Members are counted per grid and role with pandas; units and care households are placed
    in the district by shapely on its stored polygon, not by their stored cells.
    """
    import shapely

    engine = make_engine(url)
    with engine.connect() as conn:
        current = "(SELECT max(id) FROM generation WHERE active)"
        areas = pd.read_sql(
            text(
                "SELECT code, level, ST_AsBinary(geom) AS wkb FROM area "
                f"WHERE generation_low <= {current} AND generation_high >= {current} "
                "AND (code = :d OR path LIKE '%/' || :d || '/%')"
            ),
            conn,
            params={"d": district},
        )
        members = pd.read_sql(text("SELECT id, team_role, serving_grid_code FROM member"), conn)
        units = pd.read_sql(text("SELECT party_org, ST_X(geom) x, ST_Y(geom) y FROM unit"), conn)
        care = pd.read_sql(
            text("SELECT kind, cadre_member_id, ST_X(geom) x, ST_Y(geom) y FROM care_household"),
            conn,
        )
    engine.dispose()
    outline = shapely.from_wkb(bytes(areas.loc[areas.code == district, "wkb"].iloc[0]))
    shapely.prepare(outline)

    def inside(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[shapely.covers(outline, shapely.points(frame.x, frame.y))]

    grids = set(areas.loc[areas.level == "grid", "code"])
    roles = ("party_building_instructor", "grid_manager", "grid_police")
    team = members[members.serving_grid_code.isin(grids) & members.team_role.isin(roles)]
    per_grid = (
        team.groupby(["serving_grid_code", "team_role"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=sorted(grids), columns=list(roles), fill_value=0)
    )
    units_in, care_in = inside(units), inside(care)
    return {
        "staffing": {
            "grids": len(grids),
            "grids_missing_role": int((per_grid == 0).any(axis=1).sum()),
            "missing_by_role": {r: int((per_grid[r] == 0).sum()) for r in roles},
            "grids_with_doubled_role": int((per_grid > 1).any(axis=1).sum()),
            "complete_teams": int((per_grid == 1).all(axis=1).sum()),
            "team_members": len(team),
        },
        "workload": {"grids": len(grids)},
        "organisation": {
            "units": len(units_in),
            "units_without_org": int((units_in.party_org == "none").sum()),
        },
        "care": {
            "households": len(care_in),
            "without_cadre": int(care_in.cadre_member_id.isna().sum()),
            "by_kind": {
                kind: {"households": len(g), "without_cadre": int(g.cadre_member_id.isna().sum())}
                for kind, g in care_in.groupby("kind")
            },
        },
        "reach": {"communities": int((areas.level == "community").sum())},
        "topology": {"parents_checked": int(areas.level.isin(["district", "community"]).sum())},
    }


# -- JSON ------------------------------------------------------------------------------------
def test_report_holds_every_analysis_with_its_summary(api, kaiyang_report, demo_db_url):
    client, h = api
    body = kaiyang_report
    assert body["area"]["code"] == KAIYANG and body["area"]["level"] == "district"
    for name in ANALYSES:
        assert body["timings"][name] >= 0
    # The figures, against a count of the raw tables with pandas and shapely.
    raw = _raw_figures(demo_db_url, KAIYANG)
    assert raw["organisation"]["units"] > 0 and raw["care"]["households"] > 0
    assert raw["staffing"]["grids_missing_role"] == 5  # the demo's deliberate gaps
    for name, figures in raw.items():
        for summary in (body["analyses"][name]["summary"], body["summary"][name]):
            got = {k: summary[k] for k in figures}
            if name == "care":
                got["by_kind"] = {
                    kind: {k: v[k] for k in ("households", "without_cadre")}
                    for kind, v in got["by_kind"].items()
                }
            assert got == figures, name
    assert "siting" not in body["analyses"] and body["parameters"]["siting_k"] is None
    # The evaluation, reach and the tables run beside the SQL analyses (a second
    # connection, the same snapshot).
    timings = body["timings"]
    sql_lane = ("staffing", "topology", "organisation", "care", "workload")
    beside = timings["evaluation"] + timings["reach"] + timings["tables"]
    assert timings["total"] >= max(sum(timings[n] for n in sql_lane), beside)
    assert list(timings) == [*ANALYSES, "tables", "total"]
    # The same figures as each analysis asked on its own.
    alone = client.get("/analysis/staffing", params={"area": KAIYANG}, headers=h["planner"])
    assert alone.status_code == 200
    assert alone.json()["summary"] == body["summary"]["staffing"]
    grids = _grids(demo_db_url, KAIYANG)
    assert grids == 66
    assert body["summary"]["staffing"]["grids"] == grids
    assert body["summary"]["staffing"]["grids_missing_role"] == 5  # the demo's deliberate gaps
    assert body["summary"]["workload"]["grids"] == grids
    assert body["summary"]["reach"]["communities"] == _communities(demo_db_url, KAIYANG) == 18
    assert body["summary"]["topology"]["parents_checked"] == 1 + 18
    # The report's own tables cover every grid and community, not only the findings.
    tables = body["tables"]
    assert len(tables["staffing_grids"]) == grids
    assert sum(not r["complete"] for r in tables["staffing_grids"]) == (
        grids - body["summary"]["staffing"]["complete_teams"]
    )
    assert len(tables["organisation_areas"]) == grids + 18
    units = sum(r["units"] for r in tables["organisation_areas"] if r["level"] == "grid")
    assert units == body["summary"]["organisation"]["units"]
    care = tables["care_communities"]
    assert sum(r["households"] for r in care) == body["summary"]["care"]["households"] > 0
    assert sum(r["without_cadre"] for r in care) == body["summary"]["care"]["without_cadre"]


def test_siting_runs_only_when_asked(api):
    client, h = api
    r = client.get(
        "/analysis/report",
        params={"area": KAIYANG, "siting_k": 2, "geometry": "false"},
        headers=h["kaiyang"],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"]["siting"]["new_sites"] == 2
    assert body["timings"]["siting"] > 0
    assert all(i.get("geometry") is None for i in body["analyses"]["workload"]["items"])


def test_planner_gets_care_counts_but_no_household_details(api, kaiyang_report, demo_db_url):
    client, h = api
    care = kaiyang_report["analyses"]["care"]
    assert care["summary"]["details"] is False and care["summary"]["without_cadre"] > 0
    assert {i["kind"] for i in care["items"]} == {"grid_care_gaps"}
    assert "household_id" not in json.dumps(kaiyang_report)
    logged = "SELECT count(*) FROM access_log WHERE role = :r AND action = 'analysis'"
    assert _scalar(demo_db_url, logged, r="planner") == 0
    # A district dispatcher may read the households: details, and every one is logged.
    before = _scalar(demo_db_url, logged, r="district_dispatcher")
    r = client.get("/analysis/report", params={"geometry": "false"}, headers=h["kaiyang"])
    assert r.status_code == 200, r.text
    detail = r.json()["analyses"]["care"]
    kinds = {i["kind"] for i in detail["items"]}
    assert detail["summary"]["details"] is True and "household_without_cadre" in kinds
    after = _scalar(demo_db_url, logged, r="district_dispatcher")
    assert after - before == detail["summary"]["households_shown"] > 0
    # The files hold counts only, whoever asks.
    z = client.get("/analysis/report.zip", headers=h["kaiyang"])
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        everything = b"".join(zf.read(n) for n in zf.namelist()).decode("utf-8-sig")
    assert "household_id" not in everything and "head_name" not in everything


def test_a_community_dispatcher_report_covers_only_their_community(api, community, demo_db_url):
    client, h = api
    r = client.get("/analysis/report", headers=h["community"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["area"]["code"] == community
    grids = _grids(demo_db_url, community)
    assert body["summary"]["staffing"]["grids"] == body["summary"]["workload"]["grids"] == grids
    assert [i["code"] for i in body["analyses"]["reach"]["items"]] == [community]
    assert all(r["grid_code"].startswith(community) for r in body["tables"]["staffing_grids"])
    assert all(i["grid_code"].startswith(community) for i in body["analyses"]["workload"]["items"])
    assert [r["community_code"] for r in body["tables"]["care_communities"]] == [community]
    households = _scalar(
        demo_db_url, "SELECT count(*) FROM care_household WHERE community_code = :c", c=community
    )
    assert body["summary"]["care"]["households"] == households
    # Above their community, or a sibling: as if it did not exist.
    for area in (KAIYANG, "520100"):
        outside = client.get("/analysis/report", params={"area": area}, headers=h["community"])
        assert outside.status_code == 404 and outside.json()["field"] == "area"


def test_file_exports_read_no_household_details_so_log_none(api, demo_db_url):
    client, h = api
    logged = "SELECT count(*) FROM access_log WHERE role = 'community_dispatcher'"
    before = _scalar(demo_db_url, logged)
    for path in ("/analysis/report.gpkg", "/analysis/report.zip"):
        assert client.get(path, headers=h["community"]).status_code == 200
    assert _scalar(demo_db_url, logged) == before
    # The JSON report does show the details to a community dispatcher, and logs them.
    body = client.get("/analysis/report", headers=h["community"]).json()
    shown = [i for i in body["analyses"]["care"]["items"] if i.get("kind") != "grid_care_gaps"]
    assert shown and _scalar(demo_db_url, logged) > before


# -- files -----------------------------------------------------------------------------------
def test_geopackage_has_one_layer_per_gap_kind(api, kaiyang_report, tmp_path):
    client, h = api
    r = client.get("/analysis/report.gpkg", params={"area": KAIYANG}, headers=h["planner"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geopackage+sqlite3"
    assert f"wangge-report-{KAIYANG}-g" in r.headers["content-disposition"]
    path = tmp_path / "gaps.gpkg"
    path.write_bytes(r.content)
    layers = {name: kind for name, kind in pyogrio.list_layers(path)}
    assert set(layers) == LAYERS
    count = {name: pyogrio.read_info(path, layer=name)["features"] for name in layers}
    analyses = kaiyang_report["analyses"]
    assert count["staffing_missing_roles"] == 5
    assert count["staffing_doubled_roles"] == sum(
        1 for i in analyses["staffing"]["items"] if i["kind"] == "doubled_role"
    )
    assert (
        count["workload_outliers"]
        == sum(1 for i in analyses["workload"]["items"] if i["outlier"])
        > 0
    )
    assert (
        count["reach_uncovered"]
        == sum(1 for i in analyses["reach"]["items"] if i["uncovered_area_m2"] > 0)
        > 0
    )
    assert count["care_grid_gaps"] == kaiyang_report["summary"]["care"]["grids_with_gaps"] > 0
    assert (
        count["organisation_large_units_without_co_building"]
        == (kaiyang_report["summary"]["organisation"]["large_units_without_co_building"])
        > 0
    )
    assert count["topology_defects"] == 0  # the demo tiles exactly; the layer is still there
    missing = pyogrio.read_dataframe(path, layer="staffing_missing_roles")
    assert missing.crs.to_epsg() == 4326
    assert missing.geometry.geom_type.eq("MultiPolygon").all()
    assert missing["grid_code"].str.startswith(KAIYANG).all()
    assert set(";".join(missing["missing_roles"]).split(";")) <= {
        "party_building_instructor",
        "grid_manager",
        "grid_police",
    }
    reach = pyogrio.read_dataframe(path, layer="reach_uncovered")
    assert (reach["uncovered_area_m2"] <= reach["area_m2"]).all()
    sites = client.get(
        "/analysis/report.gpkg", params={"area": KAIYANG, "siting_k": 1}, headers=h["planner"]
    )
    path.write_bytes(sites.content)
    assert pyogrio.read_info(path, layer="siting_sites")["features"] == 1


def test_csv_zip_has_every_table_with_the_right_rows(api, kaiyang_report, demo_db_url):
    client, h = api
    r = client.get("/analysis/report.zip", params={"area": KAIYANG}, headers=h["planner"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        frames = {
            n.removesuffix(".csv"): pd.read_csv(
                io.BytesIO(zf.read(n)), encoding="utf-8-sig", dtype={"code": str}
            )
            for n in names
            if n.endswith(".csv")
        }
    assert names == {f"{t}.csv" for t in TABLES} | {"README.txt"}
    grids = _grids(demo_db_url, KAIYANG)
    assert len(frames["staffing_grids"]) == len(frames["workload_grids"]) == grids
    assert frames["staffing_grids"]["grid_code"].astype(str).str.startswith(KAIYANG).all()
    assert (~frames["staffing_grids"]["complete"]).sum() == (
        grids - kaiyang_report["summary"]["staffing"]["complete_teams"]
    )
    assert len(frames["organisation_areas"]) == grids + 18
    assert len(frames["reach_communities"]) == len(frames["care_communities"]) == 18
    assert set(frames["care_communities"].columns) == {
        "community_code",
        "community_name",
        "households",
        "without_cadre",
        "share_without_cadre",
        "cadre_outside_community",
        "cadres",
    }
    households = _scalar(
        demo_db_url, "SELECT count(*) FROM care_household WHERE district_code = :d", d=KAIYANG
    )
    assert frames["care_communities"]["households"].sum() == households
    assert (
        frames["workload_grids"]["incidents"].sum()
        == (kaiyang_report["summary"]["workload"]["incidents"])
    )
    figures = frames["key_figures"]
    row = figures[(figures.analysis == "staffing") & (figures.figure == "grids_missing_role")]
    assert row["value"].astype(int).tolist() == [5]


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/analysis/report", "/analysis/report.gpkg", "/analysis/report.zip"]
)
@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"siting_k": 0}, 422, "siting_k"),
        ({"siting_k": 101}, 422, "siting_k"),
        ({"siting_k": "many"}, 422, "siting_k"),
        ({"generation": 0}, 422, "generation"),
        ({"area": "52x100"}, 422, "area"),
        ({"colour": "red"}, 422, "colour"),
        ({"area": "999999"}, 404, "area"),
        ({"generation": 999}, 404, "generation"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(api, path, params, status, field):
    client, h = api
    r = client.get(path, params=params, headers=h["planner"])
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    named = body.get("field") or ",".join(e["field"] for e in body.get("errors", []))
    assert field in named


def test_who_may_not_run_a_report(api):
    client, h = api
    assert client.get("/analysis/report").status_code == 401
    r = client.get("/analysis/report.zip", headers=h["intake"])
    assert r.status_code == 403 and r.json()["field"] == "role"
    r = client.get("/analysis/report", params={"geometry": "maybe"}, headers=h["planner"])
    assert r.status_code == 422 and "geometry" in r.text


def test_run_report_checks_siting_k_and_reports_progress(demo_db_url):
    from service.analysis.report import REPORT_STEPS, run_report
    from service.auth import Principal

    planner = Principal("t", "t", "planner", KAIYANG, f"520100/{KAIYANG}")
    engine = make_engine(demo_db_url)
    events = []
    try:
        with engine.connect() as conn:
            with pytest.raises(UnprocessableError) as refused:
                run_report(conn, principal=planner, siting_k=True)
            assert refused.value.field == "siting_k"
            conn.rollback()
            body = run_report(
                conn, principal=planner, geometry=False, progress=lambda *e: events.append(e)
            )
    finally:
        engine.dispose()
    steps = [s for s in REPORT_STEPS if s != "siting"]
    assert [e[0] for e in events] == [s for s in steps for _ in (0, 1)]
    assert [e[1] for e in events[::2]] == list(range(len(steps)))
    assert all(e[3] is None for e in events[::2])
    assert [e[3] for e in events[1::2]] == [body["timings"][s] for s in steps]
    assert body["area"]["code"] == KAIYANG


def test_both_lanes_read_one_snapshot_and_own_writes_stay_visible(demo_db_url):
    from service.analysis.report import run_report
    from service.auth import Principal

    planner = Principal("t", "t", "planner", KAIYANG, f"520100/{KAIYANG}")
    engine = make_engine(demo_db_url)

    def stable(body):  # the workload's period ends "now": leave it out
        return {k: v for k, v in body["summary"].items() if k != "workload"}

    try:
        with engine.connect() as conn:  # READ COMMITTED: one lane
            sequential = run_report(conn, principal=planner, geometry=False)
            conn.rollback()
        with engine.connect() as conn:  # REPEATABLE READ: reach beside, same snapshot
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            beside = run_report(conn, principal=planner, geometry=False)
            conn.rollback()
        assert stable(beside) == stable(sequential)
        assert beside["tables"] == sequential["tables"]
        with engine.connect() as conn:  # a transaction that wrote: everything on it
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            conn.execute(
                text(
                    "INSERT INTO unit (name, kind, geom) SELECT 'mine', 'shop', "
                    "ST_PointOnSurface(geom) FROM area WHERE level = 'grid' "
                    "AND code LIKE :p ORDER BY code LIMIT 1"
                ),
                {"p": KAIYANG + "%"},
            )
            mine = run_report(conn, principal=planner, geometry=False)
            conn.rollback()
    finally:
        engine.dispose()
    # A pool with no connection to spare: no second lane, and no waiting for one.
    from sqlalchemy import create_engine

    from service.db import sync_url

    single = create_engine(sync_url(demo_db_url), pool_size=1, max_overflow=0, pool_timeout=2)
    try:
        with single.connect() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            alone = run_report(conn, principal=planner, geometry=False)
            conn.rollback()
    finally:
        single.dispose()
    assert stable(alone) == stable(sequential)
    steps = alone["timings"]
    assert steps["total"] >= sum(v for k, v in steps.items() if k != "total")
    units = sequential["summary"]["organisation"]["units"]
    assert mine["summary"]["organisation"]["units"] == units + 1
    reach_units = sequential["summary"]["reach"]["units"]["total"]
    assert mine["summary"]["reach"]["units"]["total"] == reach_units + 1


# -- CLI -------------------------------------------------------------------------------------
def _cli() -> typer.Typer:
    from service.cli.report import report

    app = typer.Typer()
    app.command("report")(report)
    return app


def test_cli_writes_json_geopackage_tables_and_html(demo_db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    out = tmp_path / "kaiyang"
    result = CliRunner().invoke(_cli(), ["--area", KAIYANG, "-o", str(out), "--no-siting"])
    assert result.exit_code == 0, result.output
    for step in (*ANALYSES, "tables"):
        assert re.search(rf"\] {step}\s+\d+\.\d\d s", result.output), result.output
    assert "siting" not in result.output
    body = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(body["analyses"]) == set(ANALYSES)
    # The CLI is an admin: care details in the JSON, counts only in the files.
    assert body["summary"]["care"]["details"] is True
    assert {n for n, _ in pyogrio.list_layers(out / "gaps.gpkg")} == LAYERS
    assert {p.stem for p in (out / "tables").glob("*.csv")} == TABLES
    staffing = pd.read_csv(out / "tables" / "staffing_grids.csv", encoding="utf-8-sig")
    assert len(staffing) == 66
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 6 and "<iframe" in page and "服务覆盖报告" in page
    # Self-contained: nothing loaded from the network (links in attributions are fine).
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert not re.search(r"(src|href)=&quot;(https?:)?//(?!leafletjs\.com)", page)
    assert "leaflet" in page.lower() and "L.map" in page


def test_report_page_is_chinese_by_default_and_english_on_request(kaiyang_report):
    from maps.report import report_html
    from tests.maps.words import english_left

    zh = report_html(kaiyang_report)
    assert '<html lang="zh-CN">' in zh and "服务覆盖报告" in zh and "关键指标" in zh
    # Nothing of the catalog left in English, the map's page (in srcdoc) included.
    assert english_left(zh) == []
    assert "15分钟步行圈以外" in zh and "生成于" in zh
    en = report_html(kaiyang_report, lang="en")
    assert '<html lang="en">' in en and "Coverage report" in en and "Key figures" in en
    assert "Beyond a 15-minute walk" in en


def test_cli_fails_on_an_unknown_area(demo_db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    result = CliRunner().invoke(_cli(), ["--area", "999999", "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "area" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_report_map_legend_leaves_the_layer_control_readable(kaiyang_report, lang, tmp_path):
    """The report's map frame is tall enough for the gap themes' box, the basemap switcher
    with the layers, and the legend: none drawn over another (the legend hid the layer
    checkboxes in a 680 px frame)."""
    from playwright.sync_api import sync_playwright

    from maps.basemap import configure_basemaps
    from maps.report import report_html

    basemaps = configure_basemaps(["offline", "osm"], offline_url="/basemap/{z}/{x}/{y}.png")
    page_file = tmp_path / "report.html"
    page_file.write_text(report_html(kaiyang_report, lang=lang, basemaps=basemaps), "utf-8")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_file.as_uri())
            frame = page.frames[1]
            frame.wait_for_selector(".wg-legend")
            boxes = frame.evaluate(
                """() => Array.from(document.querySelectorAll(
                    '.leaflet-control-layers, .wg-legend')).map(e => {
                        const r = e.getBoundingClientRect();
                        return [r.left, r.top, r.right, r.bottom, innerHeight]; })"""
            )
        finally:
            chromium.close()
    assert len(boxes) >= 2
    for i, a in enumerate(boxes):
        assert a[3] <= a[4], f"control {i} runs off the frame's bottom: {a}"
        for b in boxes[i + 1 :]:
            overlap = min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
            assert not overlap, f"controls overlap: {a} {b}"

"""Planning analyses: hand-made cases with known answers on the tiny hierarchy, a deliberately
broken partition, scope and sensitive data, and the Guiyang demo end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, box, shape
from sqlalchemy import text
from typer.testing import CliRunner

from geo.areas import AreaRecord, as_multipolygon
from service.analysis import (
    run_care,
    run_organisation,
    run_staffing,
    run_topology,
    run_workload,
)
from service.auth import Principal, create_token
from service.db import make_engine
from service.repositories import boundaries
from tests.conftest import _client, _drop_database, auth, make_tokens, tiny_database

N1, S1, N2, S2 = "990101001001", "990101001002", "990102001001", "990102001002"
G1, G2 = f"{N1}001", f"{N1}002"  # 106.00-106.01 / 106.01-106.02, 26.01-26.02
G3, G4 = f"{S1}001", f"{S1}002"  # same columns, 26.00-26.01
G5, G6 = f"{N2}001", f"{N2}002"  # 106.02-106.03 / 106.03-106.04, 26.01-26.02
G7, G8 = f"{S2}001", f"{S2}002"
GRIDS = (G1, G2, G3, G4, G5, G6, G7, G8)
ROLES = ("party_building_instructor", "grid_manager", "grid_police")
GEOD = Geod(ellps="WGS84")


def _centre(grid: str) -> tuple[float, float]:
    """Return a point well inside ``grid`` of the tiny hierarchy."""
    col = {"990101": 0, "990102": 2}[grid[:6]] + int(grid[-1]) - 1
    row_y = 26.015 if grid[:12] in (N1, N2) else 26.005
    return 106.005 + 0.01 * col, row_y


def _m2(geom) -> float:
    """Return the geodesic area of a lon/lat geometry (the reference the analyses must match)."""
    return abs(GEOD.geometry_area_perimeter(geom)[0])


def _principal(role: str, area: str | None, path: str | None) -> Principal:
    return Principal(token_id=f"test-{role}", name=role, role=role, area_code=area, scope_path=path)


CITY_PLANNER = _principal("planner", "990100", "990100")
ADMIN = _principal("admin", None, None)


def _with_analysis_routes(client):
    """Return ``client`` after checking that its app serves the analyses itself."""
    paths = {getattr(r, "path", None) for r in client.app.router.routes}
    for name in ("staffing", "topology", "organisation", "care", "workload"):
        assert f"/analysis/{name}" in paths, name
    return client


# -- the tiny hierarchy with hand-made entities ----------------------------------------------
def _insert_cases(conn) -> dict:
    """Insert members, units, care households and incidents with known answers; return ids."""
    ids: dict = {}

    def member(name, role=None, grid=None, home=None, phone="", kind="grid_staff"):
        return conn.execute(
            text(
                "INSERT INTO member (name, kind, home_community_code, team_role, "
                "serving_grid_code, phone) VALUES (:n, :k, :h, :r, :g, :p) RETURNING id"
            ),
            {
                "n": name,
                "k": kind,
                "h": home or (grid or "")[:12],
                "r": role,
                "g": grid,
                "p": phone,
            },
        ).scalar_one()

    # Teams: G1 has no police officer, G2 two managers, "Li Wei" (same phone, written two
    # ways) instructs both G3 and G4; two different "Zhang Wei"s (other phones) are two people.
    for i, grid in enumerate(GRIDS):
        for role in ROLES:
            if grid == G1 and role == "grid_police":
                continue
            if grid in (G3, G4) and role == "party_building_instructor":
                continue
            name = "Zhang Wei" if grid in (G5, G6) and role == "grid_manager" else f"P{i}{role[:4]}"
            member(name, role, grid, phone=f"139{i:04d}{ROLES.index(role)}")
    ids["g2_second_manager"] = member("Second Manager", "grid_manager", G2, phone="1370000000")
    ids["li_wei"] = [
        member("Li Wei", "party_building_instructor", G3, phone="138-0000-0001"),
        member("Li Wei ", "party_building_instructor", G4, phone="13800000001"),
    ]

    # Units: G1 unorganised shop + large branch without co-building; G2 unorganised large unit
    # with co-building + a party group (not a branch); G3 a large committee without co-building.
    def unit(grid, party_org, staff, co_building, name="Unit"):
        lon, lat = _centre(grid)
        return conn.execute(
            text(
                "INSERT INTO unit (name, kind, party_org, staff, co_building, geom) VALUES "
                "(:n, 'enterprise', :o, :s, :c, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) "
                "RETURNING id"
            ),
            {"n": name, "o": party_org, "s": staff, "c": co_building, "x": lon, "y": lat},
        ).scalar_one()

    ids["units"] = {
        "g1_shop": unit(G1, "none", 10, False),
        "g1_branch": unit(G1, "branch", 80, False),
        "g2_none_large": unit(G2, "none", 60, True),
        "g2_group": unit(G2, "group", 5, False),
        "g3_committee": unit(G3, "committee", 200, False),
    }

    # Care: cadres m1 (home N1, 6 households in G1 + 1 in G3 → 7, in range, one outside its
    # community), m2 (home N1, 1 → below), m3 (home S1, 11 in G4 → above); one household
    # without cadre in G1 and one in G3.
    m1 = member("Cadre One", home=N1, kind="party_member")
    m2 = member("Cadre Two", home=N1, kind="party_member")
    m3 = member("Cadre Three", home=S1, kind="party_member")
    ids["cadres"] = (m1, m2, m3)

    def household(grid, cadre, kind="elderly_alone"):
        lon, lat = _centre(grid)
        return conn.execute(
            text(
                "INSERT INTO care_household (kind, head_name, address, notes, cadre_member_id, "
                "geom) VALUES (:k, 'SECRET_HEAD_NAME', 'SECRET_ADDRESS', 'SECRET_NOTES', :c, "
                "ST_SetSRID(ST_MakePoint(:x, :y), 4326)) RETURNING id"
            ),
            {"k": kind, "c": cadre, "x": lon, "y": lat},
        ).scalar_one()

    ids["care"] = {
        "m1_g1": [household(G1, m1) for _ in range(6)],
        "m2_g1": household(G1, m2, "hardship"),
        "none_g1": household(G1, None, "hardship"),
        "m1_g3": household(G3, m1, "dispute"),
        "none_g3": household(G3, None, "correction"),
        "m3_g4": [household(G4, m3) for _ in range(11)],
    }

    # Incidents: G1 busy (30 five days ago, 10 of them still open, + 1 an hour ago, open);
    # 2 closed ones ten days ago in every other grid; an old open case in G2 (backlog only).
    now = datetime.now(UTC)

    def incidents(grid, n, age, closed_after_h=None):
        lon, lat = _centre(grid)
        reported = now - age
        closed = None if closed_after_h is None else reported + timedelta(hours=closed_after_h)
        conn.execute(
            text(
                "INSERT INTO incident (category, source, status, reported_at, closed_at, geom) "
                "VALUES ('water', 'patrol', :s, :r, :c, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
            ),
            [
                {
                    "s": "open" if closed is None else "closed",
                    "r": reported,
                    "c": closed,
                    "x": lon,
                    "y": lat,
                }
            ]
            * n,
        )

    incidents(G1, 20, timedelta(days=5), closed_after_h=24)
    incidents(G1, 10, timedelta(days=5))
    incidents(G1, 1, timedelta(hours=1))
    for grid in GRIDS[1:]:
        incidents(grid, 2, timedelta(days=10), closed_after_h=5)
    incidents(G2, 1, timedelta(days=200))
    return ids


@pytest.fixture(scope="module")
def cases():
    """Return (url, ids) of a tiny hierarchy holding the hand-made cases (built once)."""
    url = tiny_database("wangge_test_analysis")
    engine = make_engine(url)
    with engine.begin() as conn:
        ids = _insert_cases(conn)
    engine.dispose()
    yield url, ids
    _drop_database(url)


@pytest.fixture(scope="module")
def conn(cases):
    engine = make_engine(cases[0])
    with engine.connect() as connection:
        yield connection
        connection.rollback()
    engine.dispose()


@pytest.fixture(scope="module")
def client(cases):
    with _client(cases[0]) as c:
        yield _with_analysis_routes(c)


@pytest.fixture(scope="module")
def h(cases):
    url = cases[0]
    tokens = make_tokens(
        url,
        {
            "admin": ("admin", None),
            "planner": ("planner", "990100"),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "community": ("community_dispatcher", N1),
            "grid": ("grid_officer", G1),
        },
    )
    engine = make_engine(url)
    with engine.begin() as c:
        tokens["intake"] = create_token(
            c, name="12319", role="intake", area_code="990100", source="hotline_12319"
        )
    engine.dispose()
    return {k: auth(v) for k, v in tokens.items()}


def _kinds(result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for item in result["items"]:
        out.setdefault(item["kind"], []).append(item)
    return out


# -- staffing --------------------------------------------------------------------------------
def test_staffing_finds_missing_and_doubled_roles_and_one_person_in_two_grids(conn, cases):
    ids = cases[1]
    result = run_staffing(conn, principal=CITY_PLANNER)
    s = result["summary"]
    assert s["grids"] == 8
    # G1 lacks police; G3 and G4 each have their instructor (Li Wei), G2 has two managers.
    assert s["complete_teams"] == 6
    assert s["grids_missing_role"] == 1 and s["missing_by_role"]["grid_police"] == 1
    assert s["grids_with_doubled_role"] == 1 and s["doubled_by_role"]["grid_manager"] == 1
    assert s["people_in_several_grids"] == 1
    kinds = _kinds(result)
    (missing,) = kinds["missing_role"]
    assert missing["grid_code"] == G1 and missing["roles"] == ["grid_police"]
    assert shape(missing["geometry"]).equals(box(106.00, 26.01, 106.01, 26.02))
    (doubled,) = kinds["doubled_role"]
    assert doubled["grid_code"] == G2 and doubled["role"] == "grid_manager"
    assert doubled["count"] == 2 and ids["g2_second_manager"] in doubled["member_ids"]
    # Same name (trimmed) and same phone digits: one person; the two Zhang Weis are two.
    (li,) = kinds["several_grids"]
    assert li["grid_codes"] == [G3, G4] and sorted(li["member_ids"]) == sorted(ids["li_wei"])
    assert shape(li["geometry"]).area == pytest.approx(box(106.00, 26.00, 106.02, 26.01).area)
    # Worst first: a missing role before a doubled one before a shared person.
    assert [i["kind"] for i in result["items"]] == ["missing_role", "doubled_role", "several_grids"]
    assert "serving_redrawn_grid" not in kinds


def test_staffing_of_one_community_sees_only_its_grids(conn):
    community = _principal("community_dispatcher", S1, f"990100/990101/{S1}")
    result = run_staffing(conn, principal=community)
    assert result["summary"]["grids"] == 2
    assert result["summary"]["grids_missing_role"] == 0
    assert [i["kind"] for i in result["items"]] == ["several_grids"]


# -- organisation ----------------------------------------------------------------------------
def test_organisation_coverage_per_grid_and_community(conn, cases):
    units = cases[1]["units"]
    result = run_organisation(conn, principal=CITY_PLANNER)
    s = result["summary"]
    assert s["units"] == 5 and s["units_without_org"] == 2 and s["share_without_org"] == 0.4
    assert s["grids"] == 8 and s["grids_without_units"] == 5
    # G2 has units but only a party group; G4-G8 have no unit at all.
    assert s["grids_without_party_branch"] == 6
    kinds = _kinds(result)
    no_branch = [i["code"] for i in kinds["grid_without_party_branch"]]
    assert no_branch[0] == G2 and sorted(no_branch) == sorted([G2, G4, G5, G6, G7, G8])
    assert shape(kinds["grid_without_party_branch"][0]["geometry"]).equals(
        box(106.01, 26.01, 106.02, 26.02)
    )
    large = kinds["large_unit_without_co_building"]
    assert [u["unit_id"] for u in large] == [units["g3_committee"], units["g1_branch"]]
    assert large[0]["staff"] == 200 and large[0]["geometry"]["type"] == "Point"
    shares = {(i["level"], i["code"]): i for i in kinds["units_without_party_org"]}
    assert set(shares) == {("community", N1), ("grid", G1), ("grid", G2)}
    assert shares[("community", N1)]["units"] == 4
    assert shares[("community", N1)]["share_without_org"] == 0.5
    assert shares[("grid", G1)]["without_org"] == 1 and shares[("grid", G1)]["units"] == 2
    # The threshold is a parameter.
    bigger = run_organisation(conn, principal=CITY_PLANNER, min_staff=100)
    assert [u["unit_id"] for u in _kinds(bigger)["large_unit_without_co_building"]] == [
        units["g3_committee"]
    ]


# -- care ------------------------------------------------------------------------------------
def _access_log(conn, token_id: str) -> set[int]:
    rows = conn.execute(
        text(
            "SELECT entity_id FROM access_log WHERE token_id = :t AND action = 'analysis' "
            "AND entity = 'care_household'"
        ),
        {"t": token_id},
    ).all()
    return {r.entity_id for r in rows}


def test_care_details_for_a_district_dispatcher_are_logged(conn, cases):
    care = cases[1]["care"]
    m1, m2, m3 = cases[1]["cadres"]
    district = _principal("district_dispatcher", "990101", "990100/990101")
    result = run_care(conn, principal=district)
    s = result["summary"]
    assert s["households"] == 21 and s["without_cadre"] == 2
    assert s["cadre_outside_community"] == 1
    assert s["cadres"] == 3 and s["cadres_below_min"] == 1 and s["cadres_above_max"] == 1
    assert s["details"] is True
    kinds = _kinds(result)
    assert sorted(i["household_id"] for i in kinds["household_without_cadre"]) == sorted(
        [care["none_g1"], care["none_g3"]]
    )
    (outside,) = kinds["cadre_outside_community"]
    assert outside["household_id"] == care["m1_g3"] and outside["cadre_member_id"] == m1
    assert outside["cadre_home_community_code"] == N1 and outside["community_code"] == S1
    ranges = {i["cadre_member_id"]: i for i in kinds["cadre_contacts_out_of_range"]}
    assert set(ranges) == {m2, m3}
    assert ranges[m3]["bound"] == "above" and ranges[m3]["households"] == 11
    assert ranges[m2]["bound"] == "below" and ranges[m2]["household_ids"] == [care["m2_g1"]]
    grids = {i["grid_code"]: i for i in kinds["grid_care_gaps"]}
    assert set(grids) == {G1, G3} and grids[G3]["cadre_outside_community"] == 1
    # Worst first: nobody visits, then a cadre from elsewhere, then cadre load, then grids.
    order = [i["kind"] for i in result["items"]]
    assert order == sorted(
        order,
        key=[
            "household_without_cadre",
            "cadre_outside_community",
            "cadre_contacts_out_of_range",
            "grid_care_gaps",
        ].index,
    )
    body = json.dumps(result)
    assert "SECRET" not in body
    shown = {care["none_g1"], care["none_g3"], care["m1_g3"], care["m2_g1"], *care["m3_g4"]}
    assert _access_log(conn, district.token_id) == shown


def test_care_of_one_community_and_the_contact_range_parameters(conn, cases):
    m1, m2, _ = cases[1]["cadres"]
    community = _principal("community_dispatcher", N1, f"990100/990101/{N1}")
    s = run_care(conn, principal=community)["summary"]
    # m1 counts all 7 of their households (one of them in S1), m2 has 1.
    assert (s["households"], s["without_cadre"], s["cadre_outside_community"]) == (8, 1, 0)
    assert (s["cadres"], s["cadres_below_min"], s["cadres_above_max"]) == (2, 1, 0)
    tight = run_care(conn, principal=community, min_contacts=1, max_contacts=6)
    (over,) = _kinds(tight)["cadre_contacts_out_of_range"]
    assert over["cadre_member_id"] == m1 and over["households"] == 7
    assert over["households_in_area"] == 6


def test_care_for_a_planner_is_counts_only_and_not_logged(conn):
    result = run_care(conn, principal=CITY_PLANNER)
    s = result["summary"]
    assert s["details"] is False
    assert (s["households"], s["without_cadre"], s["cadres_below_min"]) == (21, 2, 1)
    assert s["by_kind"]["hardship"] == {
        "households": 2,
        "without_cadre": 1,
        "cadre_outside_community": 0,
    }
    assert {i["kind"] for i in result["items"]} == {"grid_care_gaps"}
    body = json.dumps(result)
    for secret in ("household_id", "cadre_member_id", "SECRET", "Point"):
        assert secret not in body
    assert _access_log(conn, CITY_PLANNER.token_id) == set()


# -- workload --------------------------------------------------------------------------------
def test_workload_counts_backlog_overdue_and_finds_the_busy_grid(conn):
    result = run_workload(conn, principal=CITY_PLANNER)
    s = result["summary"]
    grids = {i["grid_code"]: i for i in result["items"]}
    assert s["grids"] == 8 and len(grids) == 8
    g1 = grids[G1]
    # Overdue: past the case's own deadline (water, normal: accepted within an hour).
    assert (g1["incidents"], g1["closed"], g1["open"], g1["overdue"]) == (31, 20, 11, 11)
    # The 200-day-old open case is backlog and overdue, but not in the 90-day period.
    g2 = grids[G2]
    assert (g2["incidents"], g2["open"], g2["overdue"]) == (2, 1, 1)
    assert s["incidents"] == 31 + 7 * 2 and s["open"] == 12 and s["overdue"] == 12
    assert s["mean"] == pytest.approx(45 / 8, abs=1e-3) and s["median"] == 2.0
    assert g1["z"] == pytest.approx((31 - 45 / 8) / s["stddev"], abs=1e-3) and g1["z"] > 2
    assert g1["outlier"] == "high" and s["outliers_high"] == 1 and s["outliers_low"] == 0
    assert result["items"][0]["grid_code"] == G1
    assert g1["team_size"] == 2 and grids[G2]["team_size"] == 4
    # Parameters: a 3-day period misses the 10-day-old cases; the deadlines, not
    # overdue_hours, decide for cases that have one.
    now = datetime.now(UTC)
    recent = run_workload(conn, principal=CITY_PLANNER, since=now - timedelta(days=3))
    assert recent["summary"]["incidents"] == 1
    lenient = run_workload(conn, principal=CITY_PLANNER, overdue_hours=200)
    assert lenient["summary"]["overdue"] == 12
    # No outlier when the bar is higher than the busy grid.
    calm = run_workload(conn, principal=CITY_PLANNER, z=3, median_ratio=20)
    assert calm["summary"]["outliers_high"] == 0
    # As of now the backlog is read as the cases open now (their index), as of a given
    # moment as those not closed by then: the same cases when the moment is now.
    as_of = run_workload(conn, principal=CITY_PLANNER, until=datetime.now(UTC))
    assert as_of["summary"] == result["summary"] and as_of["items"] == result["items"]


# -- the API: scope, roles, parameters --------------------------------------------------------
ROUTES = ("staffing", "topology", "organisation", "care", "workload")


@pytest.mark.parametrize("name", ROUTES)
def test_every_analysis_answers_in_scope(client, h, name):
    r = client.get(f"/analysis/{name}", headers=h["community"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["area"]["code"] == N1 and set(body) >= {"summary", "items"}
    assert N1 in r.text and S1 not in r.text and "990102" not in r.text


def test_community_dispatcher_analyses_cover_only_their_community(client, h):
    staffing = client.get("/analysis/staffing", headers=h["community"]).json()
    assert staffing["summary"]["grids"] == 2
    assert {i["grid_code"] for i in staffing["items"]} <= {G1, G2}
    work = client.get("/analysis/workload", headers=h["community"]).json()
    assert {i["grid_code"] for i in work["items"]} == {G1, G2}
    topo = client.get("/analysis/topology", headers=h["community"]).json()
    assert topo["summary"]["parents_checked"] == 1


def test_area_outside_the_scope_is_not_found_and_roles_are_checked(client, h):
    for headers, area in ((h["community"], "990101"), (h["community"], S1), (h["grid"], G2)):
        r = client.get("/analysis/staffing", params={"area": area}, headers=headers)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == "area"
    own = client.get("/analysis/workload", params={"area": G1}, headers=h["grid"])
    assert own.status_code == 200 and own.json()["summary"]["grids"] == 1
    narrowed = client.get("/analysis/staffing", params={"area": S1}, headers=h["district"])
    assert narrowed.json()["summary"]["grids"] == 2
    r = client.get("/analysis/workload", headers=h["intake"])
    assert r.status_code == 403 and r.json()["field"] == "role"
    assert client.get("/analysis/workload").status_code == 401


@pytest.mark.parametrize(
    ("route", "params", "field"),
    [
        ("topology", {"min_sliver_m2": "-1"}, "min_sliver_m2"),
        ("topology", {"min_sliver_m2": "nan"}, "min_sliver_m2"),
        ("organisation", {"min_staff": "0"}, "min_staff"),
        ("care", {"min_contacts": "6", "max_contacts": "3"}, "max_contacts"),
        ("workload", {"since": "2026-01-02", "until": "2026-01-01"}, "since"),
        ("workload", {"since": "yesterday"}, "since"),
        ("workload", {"overdue_hours": "0"}, "overdue_hours"),
        ("staffing", {"area": "52012x"}, "area"),
        ("staffing", {"generation": "99"}, "generation"),
        ("staffing", {"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(client, h, route, params, field):
    r = client.get(f"/analysis/{route}", params=params, headers=h["planner"])
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert field in (body.get("field") or "") or field in body.get("title", ""), body


def test_care_over_http_hides_details_from_planners_and_logs_dispatchers(client, h, conn):
    planner = client.get("/analysis/care", headers=h["planner"]).json()
    assert planner["summary"]["without_cadre"] == 2 and planner["summary"]["details"] is False
    assert "household_id" not in json.dumps(planner)
    community = client.get("/analysis/care", headers=h["community"]).json()
    shown = {i["household_id"] for i in community["items"] if "household_id" in i}
    assert len(shown) == 1
    logged = conn.execute(
        text(
            "SELECT l.entity_id FROM access_log l JOIN api_token t ON t.id = l.token_id "
            "WHERE t.role = 'community_dispatcher' AND l.action = 'analysis'"
        )
    ).scalars()
    assert shown <= set(logged)


def test_cli_prints_a_summary_and_json(cases, monkeypatch):
    from service.cli.analysis import app

    monkeypatch.setenv("DATABASE_URL", cases[0])
    runner = CliRunner()
    text_out = runner.invoke(app, ["staffing", "--area", "990101"])
    assert text_out.exit_code == 0, text_out.output
    assert (
        "grids_missing_role: 1" in text_out.output and "missing_role: grid_code=" in text_out.output
    )
    as_json = runner.invoke(app, ["workload", "--json", "--no-geometry"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["summary"]["grids"] == 8 and body["items"][0]["geometry"] is None
    missing = runner.invoke(app, ["topology", "--area", "999999"])
    assert missing.exit_code == 1 and "area" in missing.output


# -- a deliberately broken partition ---------------------------------------------------------
GAP = box(106.01, 26.01, 106.0105, 26.02)  # N1: grid 003 replaces 002, starting 50 m east
OVERLAP = box(106.01, 26.00, 106.0105, 26.01)  # S1: grid 001 reaches 50 m into 002
OUTSIDE = box(106.04, 26.01, 106.0405, 26.02)  # N2: grid 002 reaches 50 m beyond the east edge
SLIVER = Polygon([(106.02, 26.01), (106.0201, 26.01), (106.02, 26.0099)])  # S2: ~55 m² notch
EXCLAVE = box(106.035, 26.004, 106.036, 26.005)  # S2: a second part of 001 inside 002


def _broken_records() -> list[AreaRecord]:
    def grid(code, name, parent, geom):
        return AreaRecord(code, name, "grid", parent, as_multipolygon(geom))

    g7 = box(106.02, 26.00, 106.03, 26.01).difference(SLIVER)
    return [
        grid(f"{N1}003", "Gap grid", N1, box(106.0105, 26.01, 106.02, 26.02)),
        grid(G3, "Overlapping grid", S1, box(106.00, 26.00, 106.0105, 26.01)),
        grid(G6, "Outside grid", N2, box(106.03, 26.01, 106.0405, 26.02)),
        grid(G7, "Two-part grid", S2, MultiPolygon([g7, EXCLAVE])),
        grid(G8, "Host grid", S2, box(106.03, 26.00, 106.04, 26.01).difference(EXCLAVE)),
    ]


@pytest.fixture
def broken(tiny_db_url):
    """Return the URL of the tiny hierarchy redrawn into a broken generation 2, with a team
    member still serving the retired grid G2."""
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO member (name, kind, home_community_code, team_role, "
                "serving_grid_code, phone) VALUES ('Old Officer', 'grid_staff', :c, "
                "'grid_police', :g, '13500000000')"
            ),
            {"c": N1, "g": G2},
        )
        conn.execute(
            text(
                "INSERT INTO unit (name, kind, party_org, geom) VALUES ('In the overlap', "
                "'shop', 'none', ST_SetSRID(ST_MakePoint(106.0102, 26.005), 4326))"
            )
        )
        gen = boundaries.create_generation(conn, description="broken")
        boundaries.retire_areas(conn, generation_id=gen, codes=[G2])
        boundaries.write_areas(conn, generation_id=gen, records=_broken_records(), source="test")
        boundaries.activate_generation(conn, generation_id=gen)
    engine.dispose()
    return tiny_db_url


def test_broken_partition_every_defect_found_with_its_area(broken):
    engine = make_engine(broken)
    with engine.connect() as conn:
        result = run_topology(conn, principal=ADMIN)
    engine.dispose()
    kinds = _kinds(result)
    assert set(kinds) == {"gap", "overlap", "outside", "sliver", "multipart"}
    assert all(len(v) == 1 for v in kinds.values()), kinds

    (gap,) = kinds["gap"]
    assert gap["parent_code"] == N1 and gap["codes"] == [G1, f"{N1}003"]
    assert gap["area_m2"] == pytest.approx(_m2(GAP), rel=0.01)
    area, perimeter = GEOD.geometry_area_perimeter(GAP)
    assert gap["mean_width_m"] == pytest.approx(2 * abs(area) / perimeter, rel=0.01)
    assert shape(gap["geometry"]).symmetric_difference(GAP).area < 1e-12
    (overlap,) = kinds["overlap"]
    assert overlap["parent_code"] == S1 and overlap["codes"] == [G3, G4]
    assert overlap["area_m2"] == pytest.approx(_m2(OVERLAP), rel=0.01)
    (outside,) = kinds["outside"]
    assert outside["parent_code"] == N2 and outside["codes"] == [G6]
    assert outside["area_m2"] == pytest.approx(_m2(OUTSIDE), rel=0.01)
    (sliver,) = kinds["sliver"]
    assert sliver["parent_code"] == S2 and sliver["of"] == "gap" and sliver["codes"] == [G7]
    assert sliver["area_m2"] == pytest.approx(_m2(SLIVER), rel=0.01) and sliver["area_m2"] < 100
    (multi,) = kinds["multipart"]
    assert multi["codes"] == [G7] and multi["parts"] == 2
    assert multi["area_m2"] == pytest.approx(_m2(EXCLAVE), rel=0.01)
    assert multi["part_areas_m2"][0] > multi["part_areas_m2"][1]

    s = result["summary"]
    assert s["parents_checked"] == 7 and s["parents_with_defects"] == 4
    assert {p["code"] for p in s["by_parent"]} == {N1, S1, N2, S2}
    assert s["gaps"]["count"] == 1 and s["slivers"]["count"] == 1
    assert [i["kind"] for i in result["items"]][-2:] == ["multipart", "sliver"]
    assert all(p["utm_epsg"] == 32648 for p in s["by_parent"])
    # The sliver threshold is a parameter: below 10 m² the notch is a gap.
    strict = run_topology_at(broken, min_sliver_m2=10)
    assert {i["kind"] for i in strict["items"]} == {"gap", "overlap", "outside", "multipart"}
    assert len(_kinds(strict)["gap"]) == 2


def run_topology_at(url: str, **kwargs) -> dict:
    engine = make_engine(url)
    with engine.connect() as conn:
        result = run_topology(conn, principal=ADMIN, **kwargs)
    engine.dispose()
    return result


def test_redrawn_grid_leaves_its_officer_behind_and_history_is_analysable(broken):
    engine = make_engine(broken)
    with engine.connect() as conn:
        now = run_staffing(conn, principal=ADMIN)
        before = run_staffing(conn, principal=ADMIN, generation=1)
        topo_before = run_topology(conn, principal=ADMIN, generation=1)
        org_now = run_organisation(conn, principal=ADMIN)
        org_before = run_organisation(conn, principal=ADMIN, generation=1)
        care_before = run_care(conn, principal=ADMIN, generation=1)
        work_now = run_workload(conn, principal=ADMIN)
        work_before = run_workload(conn, principal=ADMIN, generation=1)
    engine.dispose()
    assert care_before["area"]["generation"] == 1
    assert care_before["area"]["current_generation"] is False
    assert care_before["summary"]["households"] == 0
    # Workload is counted per grid of the generation asked for: G2 then, grid 003 now.
    assert work_before["area"]["generation"] == 1
    assert sorted(i["grid_code"] for i in work_before["items"]) == sorted(GRIDS)
    assert sorted(i["grid_code"] for i in work_now["items"]) == sorted(
        [g for g in GRIDS if g != G2] + [f"{N1}003"]
    )
    (redrawn,) = _kinds(now)["serving_redrawn_grid"]
    assert redrawn["serving_grid_code"] == G2 and redrawn["name"] == "Old Officer"
    assert redrawn["last_generation"] == 1
    assert shape(redrawn["geometry"]).equals(box(106.01, 26.01, 106.02, 26.02))
    assert now["items"][0]["kind"] == "missing_role"  # the new grid 003 has no team at all
    assert "serving_redrawn_grid" not in _kinds(before)
    assert topo_before["items"] == [] and topo_before["summary"]["parents_tiled"] == 7
    # The shop in the strip G3 took from G4 is G3's now and was G4's before (re-located).
    shares_now = {i["code"]: i for i in _kinds(org_now)["units_without_party_org"]}
    shares_before = {i["code"]: i for i in _kinds(org_before)["units_without_party_org"]}
    assert G3 in shares_now and G4 not in shares_now
    assert G4 in shares_before and G3 not in shares_before


# -- the Guiyang demo end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(demo_db_url, demo_client):
    tokens = make_tokens(
        demo_db_url,
        {
            "city": ("city_dispatcher", "520100"),
            "planner": ("planner", "520100"),
            "kaiyang": ("district_dispatcher", "520121"),
        },
    )
    return _with_analysis_routes(demo_client), {k: auth(v) for k, v in tokens.items()}


def test_demo_staffing_finds_the_deliberate_gaps(demo):
    client, h = demo
    r = client.get("/analysis/staffing", headers=h["city"])
    assert r.status_code == 200, r.text
    body = r.json()
    kinds = _kinds(body)
    missing = kinds["missing_role"]
    assert len(missing) == 5 and all(i["grid_code"].startswith("520121") for i in missing)
    managers = [i for i in kinds["doubled_role"] if i["role"] == "grid_manager"]
    assert len(managers) == 2 and all(i["grid_code"].startswith("520121") for i in managers)
    (twin,) = kinds["several_grids"]
    assert twin["count"] == 2 and len(set(twin["member_ids"])) == 2
    assert body["summary"]["members_on_redrawn_grids"] == 0
    kaiyang = client.get("/analysis/staffing", params={"area": "520121"}, headers=h["kaiyang"])
    assert kaiyang.json()["summary"]["grids"] == 66
    assert kaiyang.json()["summary"]["grids_missing_role"] == 5


def test_demo_partition_has_no_gaps_or_overlaps(demo, demo_db_url):
    client, h = demo
    body = client.get("/analysis/topology", headers=h["planner"]).json()
    s = body["summary"]
    assert s["parents_checked"] == 1 + 7 + 111
    for kind in ("gaps", "overlaps", "outside"):
        assert s[kind]["count"] == 0, body["items"][:3]
    assert s["slivers"]["count"] == 0 and s["multipart"]["count"] == 0
    assert sorted(s["undivided"]) == ["520122", "520123", "520181"]
    # The trap the analysis avoids: the demo's lon/lat dust, measured after projecting its
    # vertices without densifying, looks like thousands of square metres of gaps.
    engine = make_engine(demo_db_url)
    with engine.connect() as conn:
        phantom = conn.execute(
            text(
                "SELECT max(ST_Area(ST_Transform(d.geom, 32648))) FROM (SELECT p.geom, "
                "ST_Union(c.geom) AS u FROM area p JOIN area c ON c.parent_code = p.code "
                "WHERE p.level = 'community' GROUP BY p.code, p.geom) s, "
                "ST_Dump(ST_Difference(s.geom, s.u)) d"
            )
        ).scalar()
    engine.dispose()
    assert phantom > 1000


def test_demo_care_and_organisation_and_workload(demo, demo_db_url):
    client, h = demo
    engine = make_engine(demo_db_url)
    with engine.connect() as conn:
        no_cadre = conn.execute(
            text("SELECT count(*) FROM care_household WHERE cadre_member_id IS NULL")
        ).scalar()
        no_org = conn.execute(text("SELECT count(*) FROM unit WHERE party_org = 'none'")).scalar()
    engine.dispose()
    care = client.get("/analysis/care", headers=h["city"]).json()
    assert care["summary"]["without_cadre"] == no_cadre > 0
    assert care["summary"]["details"] is False
    org = client.get("/analysis/organisation", headers=h["planner"]).json()
    assert org["summary"]["units_without_org"] == no_org > 0
    work = client.get("/analysis/workload", headers=h["planner"]).json()
    assert work["summary"]["grids"] == 345 and work["summary"]["unassigned_incidents"] > 0


def test_a_pending_plan_can_be_checked_by_planners_before_activation(tiny_db_url):
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        gen = boundaries.create_generation(conn, description="plan")
        boundaries.write_areas(
            conn, generation_id=gen, records=[_broken_records()[0]], source="plan"
        )
        boundaries.retire_areas(conn, generation_id=gen, codes=[G2])
    planner = _principal("planner", "990101", "990100/990101")
    dispatcher = _principal("district_dispatcher", "990101", "990100/990101")
    with engine.connect() as conn:
        plan = run_topology(conn, principal=planner, generation=gen)
        current = run_topology(conn, principal=planner)
        with pytest.raises(Exception) as refused:
            run_topology(conn, principal=dispatcher, generation=gen)
    engine.dispose()
    assert [i["kind"] for i in plan["items"]] == ["gap"]
    assert plan["items"][0]["area_m2"] == pytest.approx(_m2(GAP), rel=0.01)
    assert plan["area"]["current_generation"] is False
    assert current["items"] == []
    assert getattr(refused.value, "status", None) == 403
    assert refused.value.field == "generation"


def test_parameters_are_documented_in_openapi(client):
    schema = client.get("/openapi.json").json()
    params = {p["name"] for p in schema["paths"]["/analysis/workload"]["get"]["parameters"]}
    assert {"area", "generation", "geometry", "since", "until", "overdue_hours"} <= params
    assert {"z", "median_ratio"} <= params
    assert "min_sliver_m2" in {
        p["name"] for p in schema["paths"]["/analysis/topology"]["get"]["parameters"]
    }

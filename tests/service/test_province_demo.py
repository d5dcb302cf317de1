"""The province demo as a user finds it, on small builds: real counties of Guizhou cut into
communities and grids that tile them, the same areas for any number of worker processes,
``wangge demo --province`` loading a county into its own database with entities whose cells
are those a lookup gives."""

from __future__ import annotations

import json
import os
import secrets

import pytest
import shapely
from sqlalchemy import text
from typer.testing import CliRunner

from fixtures.province import build_province_records
from service.cli import app as cli
from service.db import make_engine
from tests.conftest import _client, _drop_database, _server_url, auth

ANSHUN = "520400"
KAIYANG = "520121"


@pytest.fixture(scope="module")
def anshun():
    return build_province_records(cities=[ANSHUN], grids=60, workers=1)


def test_a_city_s_real_counties_cut_into_the_grids_asked_for(anshun):
    by_level = {lv: [r for r in anshun if r.level == lv] for lv in ("city", "district")}
    assert [(r.code, r.name) for r in by_level["city"]] == [(ANSHUN, "安顺市")]
    assert len(by_level["district"]) == 6  # Xixiu, Pingba, Puding, Zhenning, Guanling, Ziyun
    grids = [r for r in anshun if r.level == "grid"]
    assert len(grids) == 60
    codes = [r.code for r in anshun]
    assert len(codes) == len(set(codes))
    # Children tile their parents: same area, no overlap.
    geoms = {r.code: r.geom for r in anshun}
    for parent in [r for r in anshun if r.level in ("district", "community")]:
        kids = [r.geom for r in anshun if r.parent_code == parent.code]
        assert kids, parent.code
        union = shapely.union_all(kids)
        assert abs(union.area - geoms[parent.code].area) < 1e-9 * max(1.0, union.area)
        assert abs(sum(k.area for k in kids) - union.area) < 1e-6 * union.area
        assert geoms[parent.code].symmetric_difference(union).area < 1e-7 * union.area


def test_the_same_areas_whatever_the_number_of_workers(anshun):
    again = build_province_records(cities=[ANSHUN], grids=60, workers=2)
    assert [(r.code, r.name, r.parent_code) for r in again] == [
        (r.code, r.name, r.parent_code) for r in anshun
    ]
    assert all(a.geom.equals_exact(b.geom, 0) for a, b in zip(again, anshun, strict=True))


def test_bad_choices_are_refused_by_name():
    with pytest.raises(ValueError, match="no province '110000'"):
        build_province_records("110000")
    with pytest.raises(ValueError, match="city 110100 is not in province 520000"):
        build_province_records(cities=["110100"])
    with pytest.raises(ValueError, match="county 520402 is not in the chosen cities"):
        build_province_records(cities=["520100"], counties=["520402"])


@pytest.fixture
def province_db(monkeypatch, tmp_path):
    """A database name for the CLI to create; dropped afterwards. The CLI points
    ``DATABASE_URL`` at it: the variable is restored after the test."""
    import service.cli.demo as demo_module

    name = f"wangge_test_province_{os.getpid()}_{secrets.token_hex(3)}"
    monkeypatch.setenv("DATABASE_URL", _server_url())
    monkeypatch.setattr(demo_module, "DEMO_TOKENS_FILE", tmp_path / ".demo-tokens.json")
    yield name
    from sqlalchemy.engine import make_url

    from service.db import sync_url

    _drop_database(
        make_url(sync_url(_server_url())).set(database=name).render_as_string(hide_password=False)
    )


def test_wangge_demo_province_loads_a_county_with_entities(province_db, tmp_path):
    runner = CliRunner()
    args = ["demo", "--province", "520000", "--county", KAIYANG, "--grids", "40"]
    args += ["--incidents", "2000", "--database", province_db]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "1 county-level divisions" in result.output and "40 grids" in result.output
    url = os.environ["DATABASE_URL"]
    assert url.endswith(f"/{province_db}")
    saved = json.loads((tmp_path / ".demo-tokens-520000.json").read_text())
    assert [t["role"] for t in saved] == [
        "admin",
        "planner",
        "city_dispatcher",
        "district_dispatcher",
        "community_dispatcher",
        "grid_officer",
    ]
    assert saved[3]["area_code"] == KAIYANG

    engine = make_engine(url)
    with engine.connect() as conn:
        levels = dict(conn.execute(text("SELECT level, count(*) FROM area GROUP BY level")).all())
        assert levels["grid"] == 40 and levels["district"] == 1 and levels["city"] == 1
        # Every incident lies in Kaiyang's grids, its cell written by the bulk path.
        row = conn.execute(
            text(
                "SELECT count(*) AS n, count(grid_code) AS in_grid, "
                "count(*) FILTER (WHERE district_code = :k) AS in_county, "
                "count(*) FILTER (WHERE state IS NULL) AS no_state FROM incident"
            ),
            {"k": KAIYANG},
        ).one()
        assert (row.n, row.in_grid, row.in_county, row.no_state) == (2000, 2000, 2000, 0)
        # Their months have partitions: none waits in the default one, where nothing prunes.
        stray = conn.execute(
            text("SELECT count(*) FROM incident WHERE tableoid = 'incident_default'::regclass")
        ).scalar()
        assert stray == 0
        staff = conn.execute(
            text("SELECT count(DISTINCT serving_grid_code) FROM member WHERE kind = 'grid_staff'")
        ).scalar()
        assert staff == 40
        sample = conn.execute(
            text("SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat, grid_code FROM incident LIMIT 5")
        ).all()
    engine.dispose()
    with _client(url) as client:
        for p in sample:
            r = client.get(
                "/lookup", params={"lon": p.lon, "lat": p.lat}, headers=auth(saved[0]["token"])
            )
            assert r.status_code == 200, r.text
            assert r.json()["grid"]["code"] == p.grid_code

    # A second run keeps the data and the tokens.
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "not rebuilt" in again.output
    assert saved[0]["token"] in again.output


def test_province_options_need_province():
    result = CliRunner().invoke(cli, ["demo", "--grids", "10"])
    assert result.exit_code == 1
    assert "--province" in result.output

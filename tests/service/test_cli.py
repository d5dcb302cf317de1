"""The operator's CLI against a real database: imports are all or nothing."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import box, mapping
from sqlalchemy import text
from typer.testing import CliRunner

from service.cli import app
from service.db import make_engine


@pytest.fixture
def run(tiny_db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", tiny_db_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def _count(url, sql):
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql)).scalar()
    engine.dispose()
    return n


def _grid(code, geometry):
    return {
        "type": "Feature",
        "properties": {"code": code, "name": "g", "level": "grid", "parent_code": code[:12]},
        "geometry": geometry,
    }


def test_import_areas_refuses_a_file_with_one_bad_feature(run, tiny_db_url, tmp_path):
    path = tmp_path / "grids.geojson"
    bad = {
        "type": "Polygon",
        "coordinates": [[[106, 26], [106.01, 26.01], [106.01, 26], [106, 26.01], [106, 26]]],
    }
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    _grid("990101001001003", mapping(box(106, 26.01, 106.001, 26.011))),
                    _grid("990101001001004", bad),
                ],
            }
        )
    )
    before = _count(tiny_db_url, "SELECT count(*) FROM area")
    result = run("import-areas", str(path))
    assert result.exit_code == 1
    assert "feature 1 (990101001001004): geometry" in result.output
    assert _count(tiny_db_url, "SELECT count(*) FROM area") == before


def test_import_areas_then_activate(run, tiny_db_url, tmp_path):
    path = tmp_path / "grids.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    _grid("990101001001003", mapping(box(106, 26.01, 106.001, 26.011))),
                ],
            }
        )
    )
    result = run("import-areas", str(path), "--activate")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["inserted"] == 1
    listing = run("generation", "list")
    assert "2\tactive\t16 areas" in listing.output


def test_import_admin_loads_any_city_and_tokens_check_their_area(run, tiny_db_url):
    result = run("import-admin", "520100")
    assert result.exit_code == 0, result.output
    assert "10 county-level divisions" in result.output
    assert (
        _count(
            tiny_db_url,
            "SELECT count(*) FROM area WHERE level = 'district' "
            "AND generation_high = 2 AND code LIKE '5201%'",
        )
        == 10
    )
    assert run("import-admin", "999900").exit_code == 1
    ok = run("token", "create", "--role", "district_dispatcher", "--area", "520121", "--name", "x")
    assert ok.exit_code == 0 and ok.output.startswith("wg_")
    wrong = run("token", "create", "--role", "grid_officer", "--area", "520121", "--name", "x")
    assert wrong.exit_code == 1 and "scoped to a grid" in wrong.output


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"WANGGE_BASEMAP": "bogus"}, "WANGGE_BASEMAP: unknown basemap 'bogus'"),
        ({"WANGGE_BASEMAP": "tianditu-vec"}, "set WANGGE_BASEMAP_TIANDITU_KEY"),
        (
            {"WANGGE_BASEMAP": "amap,tianditu-vec", "WANGGE_BASEMAP_TIANDITU_KEY": "SECRET123"},
            "must share a datum",
        ),
    ],
)
def test_a_bad_basemap_setting_ends_any_command_in_one_line(monkeypatch, env, said):
    """A basemap the settings cannot serve stops ``wangge serve`` (or any command) at once
    with one line naming the setting, not a traceback, and never echoes a key."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 1
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    out = result.output
    assert out.startswith("error: ") and said in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 3
    assert "SECRET123" not in out

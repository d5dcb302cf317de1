"""Incidents by the thousand: counts kept on write, clustered tiles, pages that cap and say so.

At a year of cases a tile or a page may not count or draw every incident per request
(issue 12). These tests fill the tiny city with more incidents than a tile draws and a page
embeds, and check what a dispatcher would notice: the grids' open counts and the clusters'
counts equal a recount of the incidents, after every kind of write; a crowded tile is
clusters that account for every incident the caller may see (and none they may not); a page
embeds its cap and states the true total. Speed is the benchmark's business
(``bench/tiles.py --incidents 1000000``: tiles and every page for every role at 1 M).
"""

from __future__ import annotations

import math
import re
import subprocess
import threading

import pytest
from sqlalchemy import text

from service.db import make_engine
from service.pages import MAX_INCIDENTS
from service.specs.map_layers import CLUSTER_SHIFT, INCIDENT_BIN_ZOOMS, LAYERS
from tests.conftest import auth, make_tokens
from tests.maps.data import embedded as _embedded

NW_GRID = "990101001001001"  # district 990101, community 990101001001, the west grid
SE_GRID = "990102001002002"
NW_BOX = (106.001, 26.011, 106.009, 26.019)  # inside the NW grid
EVENT_LOCK = 7_716_398_420_113  # migration 0010


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


@pytest.fixture
def h(tiny_db_url):
    tokens = make_tokens(
        tiny_db_url,
        {
            "admin": ("admin", None),
            "city": ("city_dispatcher", "990100"),
            "district": ("district_dispatcher", "990101"),
            "officer": ("grid_officer", NW_GRID),
            "other": ("grid_officer", SE_GRID),
        },
    )
    return {k: auth(v) for k, v in tokens.items()}


@pytest.fixture
def engine(tiny_db_url):
    engine = make_engine(tiny_db_url)
    yield engine
    engine.dispose()


def _fill(engine, n: int, box=NW_BOX, status: str = "open", category: str = "road") -> None:
    """Insert n incidents spread over ``box`` in one statement (the cells by the triggers)."""
    closed = "now()" if status == "closed" else "NULL"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incident (category, source, geom, status, closed_at) "
                "SELECT :category, 'patrol', ST_SetSRID(ST_MakePoint("
                ":x0 + (:x1 - :x0) * ((i * 7919) % 1000) / 1000.0, "
                ":y0 + (:y1 - :y0) * ((i * 104729) % 997) / 997.0), 4326), "
                f":status, {closed} FROM generate_series(1, :n) i"
            ),
            dict(zip(("x0", "y0", "x1", "y1"), box, strict=True))
            | {"n": n, "status": status, "category": category},
        )


def _bins(conn) -> set[tuple]:
    return set(
        conn.execute(
            text(
                "SELECT z, x, y, status, area_path, n, round(sx::numeric, 6), "
                "round(sy::numeric, 6) FROM incident_bin WHERE n <> 0"
            )
        ).all()
    )


def _open_by_grid(client, headers) -> dict[str, int]:
    items = client.get(
        "/ogc/collections/grids/items",
        params={"properties": "code,open_incidents", "limit": 100},
        headers=headers,
    ).json()["features"]
    return {f["id"]: f["properties"]["open_incidents"] for f in items}


def test_counts_kept_on_write_equal_a_recount_after_every_kind_of_write(tiny_client, h, engine):
    # Through the API: filed, rejected (closed), moved to another grid, deleted.
    ids = []
    for lon, lat in ((106.005, 26.015), (106.006, 26.016), (106.035, 26.005)):
        r = tiny_client.post(
            "/incidents",
            json={"category": "water", "source": "patrol", "lon": lon, "lat": lat},
            headers=h["admin"],
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = tiny_client.post(
        f"/cases/{ids[0]}/actions/reject", json={"reason": "not_a_case"}, headers=h["admin"]
    )
    assert r.status_code == 200, r.text
    r = tiny_client.patch(
        f"/incidents/{ids[1]}", json={"lon": 106.034, "lat": 26.004}, headers=h["admin"]
    )
    assert r.status_code == 200, r.text
    assert tiny_client.delete(f"/incidents/{ids[2]}", headers=h["admin"]).status_code == 204
    # In bulk: thousands in one statement, a status change of many, an edit moving nothing.
    _fill(engine, 3000)
    _fill(engine, 500, status="closed")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE incident SET status = 'closed', state = 'closed', closed_at = now() "
                "WHERE id % 3 = 0 AND status <> 'closed'"
            )
        )
        conn.execute(text("UPDATE incident SET description = 'seen' WHERE id % 2 = 0"))
        conn.execute(text("DELETE FROM incident WHERE id % 5 = 0"))
        kept = _bins(conn)
        # What the counters say equals counting every incident again.
        total = conn.execute(text("SELECT incident_bins_rebuild()")).scalar_one()
        assert _bins(conn) == kept
        assert total == conn.execute(text("SELECT count(*) FROM incident")).scalar_one()
        # Every zoom the tiles read is binned.
        zooms = conn.execute(text("SELECT array_agg(DISTINCT z ORDER BY z) FROM incident_bin"))
        assert zooms.scalar_one() == [0, *INCIDENT_BIN_ZOOMS]
        expected = dict(
            conn.execute(
                text(
                    "SELECT grid_code, count(*) FROM incident WHERE status <> 'closed' "
                    "AND grid_code IS NOT NULL GROUP BY grid_code"
                )
            ).all()
        )
    shown = _open_by_grid(tiny_client, h["city"])
    assert {k: v for k, v in shown.items() if v} == expected
    assert expected[NW_GRID] > 1000
    # The grid's own officer sees their grid's count, nothing of the others.
    assert _open_by_grid(tiny_client, h["officer"]) == {NW_GRID: expected[NW_GRID]}
    # Emptied with the table (TRUNCATE fires no row trigger).
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE incident CASCADE"))
        assert conn.execute(text("SELECT count(*) FROM incident_bin")).scalar_one() == 0


def _ogr_features(tmp_path, data: bytes) -> list[dict[str, str]]:
    """Return the features of the tile's incidents layer as GDAL's MVT driver reads them."""
    path = tmp_path / "tile.mvt"
    path.write_bytes(data)
    out = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-q", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    features, current = [], None
    for line in out.stdout.splitlines():
        if line.startswith("OGRFeature("):
            current = {}
            features.append(current)
        elif current is not None and " = " in line and "(" in line.split(" = ")[0]:
            name, value = line.split(" = ", 1)
            current[name.strip().split(" (")[0]] = value.strip()
    return features


def _accounted(features: list[dict[str, str]]) -> int:
    return sum(int(f.get("point_count", 1)) for f in features)


def test_a_crowded_tile_draws_clusters_that_count_what_the_caller_may_see(
    tiny_client, h, engine, tmp_path
):
    crowd = LAYERS["incidents"].cluster_above + 500
    _fill(engine, crowd)
    _fill(engine, 40, box=(106.031, 26.001, 106.039, 26.009))  # in the SE grid
    z, x, y = _tile_of(106.02, 26.01, 12)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    city = _ogr_features(tmp_path, tiny_client.get(url, headers=h["city"]).content)
    # Clusters, at most 32 x 32, each with its count; together every incident of the tile.
    assert city and all("point_count" in f for f in city)
    assert len(city) <= 4**CLUSTER_SHIFT
    assert _accounted(city) == crowd + 40
    assert sum(int(f["open_count"]) for f in city) == crowd + 40
    # Scope holds in the bins: the SE grid's officer is shown their 40 as points.
    other = _ogr_features(tmp_path, tiny_client.get(url, headers=h["other"]).content)
    assert len(other) == 40 and not any("point_count" in f for f in other)
    mine = _ogr_features(tmp_path, tiny_client.get(url, headers=h["officer"]).content)
    assert _accounted(mine) == crowd
    # Filters the bins hold (status, cells) count the same way.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE incident SET status = 'closed', state = 'closed', closed_at = now() "
                "WHERE id IN (SELECT id FROM incident WHERE grid_code = :g ORDER BY id LIMIT 300)"
            ),
            {"g": NW_GRID},
        )
    tiny_client.app.state.tile_cache.clear()  # not waiting for the change listener
    closed = tiny_client.get(url, params={"status": "closed"}, headers=h["city"])
    assert _accounted(_ogr_features(tmp_path, closed.content)) == 300
    still = _ogr_features(tmp_path, tiny_client.get(url, headers=h["city"]).content)
    assert sum(int(f["open_count"]) for f in still) == crowd + 40 - 300
    se = tiny_client.get(url, params={"grid_code": SE_GRID}, headers=h["city"])
    assert _accounted(_ogr_features(tmp_path, se.content)) == 40
    # A filter the bins do not hold (category) draws the incidents themselves.
    roads = _ogr_features(
        tmp_path, tiny_client.get(url, params={"category": "road"}, headers=h["city"]).content
    )
    assert roads and not any("point_count" in f for f in roads)
    # Zoomed in far enough, the incidents themselves again.
    z, x, y = _tile_of(106.005, 26.015, 18)
    near = _ogr_features(
        tmp_path, tiny_client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt", headers=h["city"]).content
    )
    assert near and not any("point_count" in f for f in near)
    tj = tiny_client.get("/tiles/incidents.json", headers=h["city"]).json()
    assert tj["vector_layers"][0]["fields"]["point_count"] == "Number"


def test_the_dispatch_page_embeds_its_cap_and_states_the_total(tiny_client, h, engine):
    _fill(engine, MAX_INCIDENTS + 250)
    _fill(engine, 60, box=(106.031, 26.001, 106.039, 26.009))
    _fill(engine, 500, status="closed")
    with engine.begin() as conn:
        # Reported a minute apart, the newest with the highest ids (by id, the page's first
        # 2,000 would be the oldest).
        conn.execute(
            text(
                "UPDATE incident SET reported_at = now() - make_interval(mins => "
                "CAST((SELECT max(id) FROM incident) - id AS integer))"
            )
        )
        newest = {
            who: [
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT id FROM incident WHERE status <> 'closed' AND district_code "
                        "LIKE :d ORDER BY reported_at DESC, id DESC LIMIT :n"
                    ),
                    {"d": d, "n": MAX_INCIDENTS},
                )
            ]
            for who, d in (("city", "%"), ("district", "990101"))
        }
    for who, total in (("city", MAX_INCIDENTS + 310), ("district", MAX_INCIDENTS + 250)):
        r = tiny_client.get("/pages/dispatch", params={"lang": "en"}, headers=h[who])
        assert r.status_code == 200, r.text
        assert f"{MAX_INCIDENTS} of {total} open incidents shown" in r.text
        # The ones embedded are the newest (what a dispatcher looks at first).
        (embedded,) = _embedded(r.text, "wg.points")
        assert sorted(f["id"] for f in embedded["features"]) == sorted(newest[who])
    # Below the cap the page shows them all and counts them itself.
    r = tiny_client.get(
        "/pages/dispatch", params={"area": SE_GRID, "lang": "en"}, headers=h["city"]
    )
    assert r.status_code == 200 and "60 open incidents" in r.text
    assert not re.search(r"\d+ of \d+ open incidents shown", r.text)


def test_bins_are_written_under_the_event_lock(tiny_db_url, engine):
    """An insert beside a case action on the same bins waits, it does not deadlock.

    The action holds the event lock (it writes a case event) and then closes a case; the
    insert's bins would have locked the same bin rows before asking for the event lock.
    """
    _fill(engine, 10)
    action = engine.connect()
    tx = action.begin()
    action.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_LOCK})
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            _fill(engine, 5)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    writer = threading.Thread(target=insert)
    writer.start()
    writer.join(1.0)  # the insert is now waiting (for the event lock)
    action.execute(
        text(
            "UPDATE incident SET status = 'closed', state = 'closed', closed_at = now() "
            "WHERE id = (SELECT min(id) FROM incident)"
        )
    )
    tx.commit()
    action.close()
    writer.join(30)
    assert not writer.is_alive() and not errors, errors
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == 15
        assert (
            conn.execute(
                text("SELECT sum(n) FROM incident_bin WHERE z = 0 AND status = 'closed'")
            ).scalar_one()
            == 1
        )


def test_tile_pixels_by_formula_are_those_of_postgis(engine):
    """Tiles place points by the Web Mercator formula (layers._tile_pixel_sql): the pixel
    ST_AsMVTGeom(ST_Transform(p, 3857), ...) gives, kept or left out of the buffer alike."""
    from service.repositories.layers import _IN_BUFFER, _tile_pixel_sql

    px, py = _tile_pixel_sql("ST_X(q.geom)", "ST_Y(q.geom)")
    sql = text(
        f"""
        SELECT q.z, ST_X(m.g), ST_Y(m.g), p.px, p.py, ({_IN_BUFFER}) AS kept
        FROM (
            SELECT z, ST_SetSRID(ST_MakePoint(106.0 + 0.4 * random(), 26.0 + 0.4 * random()),
                                 4326) AS geom
            FROM generate_series(10, 16) z, generate_series(1, 300)
        ) q
        CROSS JOIN LATERAL (
            SELECT CAST((106.2 + 180) / 360 * 2 ^ q.z AS integer) AS x,
                   CAST((1 - asinh(tan(radians(26.2))) / pi()) / 2 * 2 ^ q.z AS integer) AS y
        ) t
        CROSS JOIN LATERAL (
            SELECT 4096.0 * 2 ^ q.z AS world, 4096.0 * t.x AS px0, 4096.0 * t.y AS py0
        ) c
        CROSS JOIN LATERAL (
            SELECT ST_AsMVTGeom(ST_Transform(q.geom, 3857), ST_TileEnvelope(q.z, t.x, t.y),
                                4096, 64, true) AS g
        ) m
        CROSS JOIN LATERAL (SELECT {px} AS px, {py} AS py) p
        """.replace(":world", "c.world")
        .replace(":px0", "c.px0")
        .replace(":py0", "c.py0")
        .replace("CAST(c.world AS float8)", "c.world")
    )
    with engine.connect() as conn:
        conn.execute(text("SELECT setseed(0.12)"))
        rows = conn.execute(sql).all()
    kept = [r for r in rows if r.kept]
    assert len(kept) > 100 and len(rows) - len(kept) > 100  # both cases are tried
    # Where PostGIS keeps the point, the same pixel; where it clips it, left out too.
    assert all((r[1], r[2]) == (r.px, r.py) for r in kept)
    assert all(r[1] is None for r in rows if not r.kept)

"""A bulk import of incidents leaves what the same rows written one by one leave.

An import fills cells and lifecycle columns itself and writes with one COPY (service.bulk);
the database writes the first events, the bins and the month map once per statement. Here the
same rows go in twice on one database: by ``POST /incidents/import`` and by one plain INSERT
per row (the per-row triggers' path). Each imported case must equal its twin: cells, lifecycle
columns, its one first event, its month; and the counters (``incident_bin``) must move by the
same amounts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from service.db import make_engine
from tests.conftest import auth, make_tokens

CELLS = (
    "generation",
    "area_path",
    "grid_code",
    "community_code",
    "district_code",
    "city_code",
    "reported_generation",
    "reported_area_path",
    "reported_grid_code",
)
LIFECYCLE = (
    "status",
    "state",
    "priority",
    "owner_level",
    "owner_area_code",
    "owner_area_path",
    "step",
    "step_due_at",
    "closed_at",
    "version",
)
EVENT = (
    "seq",
    "at",
    "action",
    "actor_token_id",
    "actor_role",
    "actor_area_code",
    "from_state",
    "to_state",
    "from_owner_area_code",
    "to_owner_area_code",
    "assignee_kind",
    "assignee_code",
    "attachments",
    "data",
)


def _rows(n: int = 240) -> pd.DataFrame:
    """Return n incidents over the tiny hierarchy: every status, some outside every area."""
    rng = np.random.default_rng(12)
    lon = rng.uniform(105.995, 106.045, n)
    lat = rng.uniform(25.995, 26.025, n)
    lon[:6], lat[:6] = 106.5, 26.5  # outside every area
    lon[6:10] = [106.0, 106.01, 106.02, 106.04]  # on edges and corners
    lat[6:10] = [26.0, 26.01, 26.015, 26.02]
    status = rng.choice(["new", "open", "closed"], n, p=[0.6, 0.25, 0.15])
    reported = pd.Timestamp("2026-03-01T08:00:00+08:00") + pd.to_timedelta(
        rng.integers(0, 200 * 86400, n), unit="s"
    )
    closed = np.where(
        status == "closed", (reported + pd.Timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S%z"), ""
    )
    return pd.DataFrame(
        {
            "category": rng.choice(["water", "gas", "road", "sanitation", "other"], n),
            "source": rng.choice(["patrol", "resident", "hotline_12319"], n),
            "status": status,
            "reported_at": reported.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "closed_at": closed,
            "description": [f"bulk-{i:04d}" for i in range(n)],
            "lon": lon,
            "lat": lat,
        }
    )


def _bins(conn) -> dict[tuple, tuple[int, float, float]]:
    return {
        tuple(r[:5]): (r.n, r.sx, r.sy)
        for r in conn.execute(
            text("SELECT z, x, y, status, area_path, n, sx, sy FROM incident_bin")
        ).all()
    }


def _delta(before: dict, after: dict) -> dict[tuple, tuple[int, float, float]]:
    out = {}
    for key in before.keys() | after.keys():
        b, a = before.get(key, (0, 0.0, 0.0)), after.get(key, (0, 0.0, 0.0))
        d = (a[0] - b[0], a[1] - b[1], a[2] - b[2])
        if d[0] or abs(d[1]) > 1e-9 or abs(d[2]) > 1e-9:
            out[key] = d
    return out


def _cases(conn, prefix: str) -> list[dict]:
    cols = ", ".join(f"i.{c}" for c in ("id", "description", *CELLS, *LIFECYCLE))
    rows = conn.execute(
        text(
            f"SELECT {cols}, m.reported_at AS month_at, i.reported_at FROM incident i "
            "LEFT JOIN incident_month m ON m.id = i.id "
            "WHERE i.description LIKE :p ORDER BY i.description"
        ),
        {"p": prefix + "%"},
    ).all()
    out = []
    for r in rows:
        case = dict(r._mapping)
        events = conn.execute(
            text(f"SELECT {', '.join(EVENT)} FROM case_event WHERE incident_id = :i ORDER BY seq"),
            {"i": case.pop("id")},
        ).all()
        case["events"] = [dict(e._mapping) for e in events]
        case["description"] = case["description"].split("-", 1)[1]
        out.append(case)
    return out


@pytest.fixture
def admin(tiny_db_url):
    return auth(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])


def test_a_bulk_import_writes_what_row_by_row_inserts_write(tiny_client, tiny_db_url, admin):
    frame = _rows()
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        before = _bins(conn)
    r = tiny_client.post(
        "/incidents/import",
        files={"file": ("i.csv", frame.to_csv(index=False).encode("utf-8-sig"))},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(frame)
    with engine.begin() as conn:
        after_bulk = _bins(conn)
        token = conn.execute(
            text("SELECT DISTINCT created_by FROM incident WHERE description LIKE 'bulk-%'")
        ).scalar_one()
        # The same rows through the per-row path: one INSERT (one statement) each.
        for row in frame.itertuples():
            conn.execute(
                text(
                    "INSERT INTO incident (category, source, status, reported_at, closed_at, "
                    "description, geom, created_by) VALUES (:c, :s, :st, CAST(:r AS timestamptz), "
                    "CAST(:k AS timestamptz), :d, ST_SetSRID(ST_MakePoint(:x, :y), 4326), :t)"
                ),
                {
                    "c": row.category,
                    "s": row.source,
                    "st": row.status,
                    "r": row.reported_at,
                    "k": row.closed_at or None,
                    "d": "single-" + row.description.split("-", 1)[1],
                    "x": row.lon,
                    "y": row.lat,
                    "t": token,
                },
            )
    with engine.connect() as conn:
        after_single = _bins(conn)
        bulk, single = _cases(conn, "bulk-"), _cases(conn, "single-")
    engine.dispose()

    assert len(bulk) == len(single) == len(frame)
    assert sum(1 for c in bulk if c["grid_code"] is None) >= 6
    assert {c["status"] for c in bulk} == {"new", "open", "closed"}
    for b, s in zip(bulk, single, strict=True):
        assert len(b["events"]) == 1, b
        assert b["month_at"] == b["reported_at"]
        assert b == s
    # Counters: the same bins move by the same counts (and the same sums of coordinates).
    moved_bulk, moved_single = _delta(before, after_bulk), _delta(after_bulk, after_single)
    assert moved_bulk.keys() == moved_single.keys()
    assert sum(d[0] for k, d in moved_bulk.items() if k[0] == 0) == len(frame)
    for key, (n, sx, sy) in moved_bulk.items():
        assert moved_single[key][0] == n, key
        assert moved_single[key][1:] == pytest.approx((sx, sy), abs=1e-7), key


def test_a_bad_row_refuses_the_import_and_writes_nothing(tiny_client, tiny_db_url, admin):
    frame = _rows(50)
    frame.loc[37, "reported_at"] = "not a time"
    engine = make_engine(tiny_db_url)
    tables = ("incident", "case_event", "incident_month", "incident_bin")

    def counts():
        with engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}

    start = counts()
    r = tiny_client.post(
        "/incidents/import",
        files={"file": ("i.csv", frame.to_csv(index=False).encode("utf-8-sig"))},
        headers=admin,
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "reported_at" and "row 38" in body["detail"]
    assert [(p["row"], p["field"]) for p in body["report"]["problems"]] == [(38, "reported_at")]
    assert counts() == start
    engine.dispose()


def test_an_import_with_no_row_in_any_area_or_no_row_left(tiny_client, tiny_db_url, admin):
    # Rows outside every area have no owner; a skip_bad import whose rows are all bad writes
    # none. Neither is an error of the server.
    frame = _rows(20)
    frame["lon"], frame["lat"] = 106.5, 26.5
    r = tiny_client.post(
        "/incidents/import",
        files={"file": ("i.csv", frame.to_csv(index=False).encode("utf-8-sig"))},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 20 and r.json()["unassigned"] == 20
    frame["reported_at"] = "not a time"
    r = tiny_client.post(
        "/incidents/import",
        files={"file": ("i.csv", frame.to_csv(index=False).encode("utf-8-sig"))},
        data={"skip_bad": "true"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 0 and r.json()["rejected"] == 20
    engine = make_engine(tiny_db_url)
    with engine.connect() as conn:
        owners = conn.execute(
            text("SELECT DISTINCT owner_level, owner_area_code, owner_area_path FROM incident")
        ).all()
        events = conn.execute(text("SELECT count(*) FROM case_event")).scalar()
    engine.dispose()
    assert owners == [(None, None, None)]
    assert events == 20


def test_bins_rolled_up_from_the_finest_zoom_equal_the_per_zoom_formula(tiny_db_url):
    # Migration 0022 bins a statement's rows once at zoom 21 and rolls the coarser zooms up
    # from there; 0012 computed each zoom's tile from the point. Same keys and counts, sums
    # up to the order of additions, on points anywhere (the poles' clamp and the
    # antimeridian included), signed as a DELETE's and an UPDATE's are.
    import importlib

    v12 = importlib.import_module("service.migrations.versions.0012_incident_bins")
    v21 = importlib.import_module("service.migrations.versions.0021_incident_bins_every_zoom")
    v22 = importlib.import_module("service.migrations.versions.0022_incident_bins_rolled_up")
    rng = np.random.default_rng(22)
    n = 20_000
    lon = np.concatenate([rng.uniform(105.9, 106.1, n), rng.uniform(-180, 180, 500)])
    lat = np.concatenate([rng.uniform(25.9, 26.1, n), rng.uniform(-90, 90, 500)])
    lon[:4], lat[:4] = [-180, 180, 0, 106.0], [90, -90, 85.0511, 26.0]
    rows = pd.DataFrame(
        {
            "status": rng.choice(["new", "open", "closed"], len(lon)),
            "area_path": rng.choice(["", "520100", "520100/520102"], len(lon)),
            "lon": lon,
            "lat": lat,
            "s": rng.choice([1, 1, 1, -1], len(lon)),
        }
    )
    source = "SELECT status, area_path, lon, lat, s FROM pts"
    per_zoom = v21._with(v12._upsert(source), v21.ZOOMS)
    per_zoom = "SELECT " + per_zoom.split("SELECT", 1)[1].split("ORDER BY")[0]
    engine = make_engine(tiny_db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                'CREATE TEMP TABLE pts (status text, area_path text COLLATE "C", '
                "lon double precision, lat double precision, s integer)"
            )
        )
        conn.execute(
            text("INSERT INTO pts VALUES (:status, :area_path, :lon, :lat, :s)"),
            rows.to_dict("records"),
        )
        expected = {tuple(r[:5]): tuple(r[5:]) for r in conn.execute(text(per_zoom)).all()}
        got = {tuple(r[:5]): tuple(r[5:]) for r in conn.execute(text(v22.rolled_up(source))).all()}
    engine.dispose()
    assert {k[0] for k in got} == set(v21.ZOOMS)
    assert got.keys() == expected.keys()
    for key, (count, sx, sy) in got.items():
        assert count == expected[key][0], key
        assert (sx, sy) == pytest.approx(expected[key][1:], abs=1e-7), key

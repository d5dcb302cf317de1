"""End-to-end import of 1,000,000 incidents from a file, against a plain COPY of the same rows.

Measured in one run on the benchmark's own database (the Guiyang demo, ``wangge_bench_import``,
built on first use; between rounds it holds the demo only):

- ``wangge import``: read the CSV (GCJ-02 coordinates, as a tablet SDK writes them), validate
  every field, convert GCJ-02 → WGS84, assign every point to its grid, community and district
  (rasterised cell index, identical to ST_Covers), write with COPY into ``incident`` (its
  indexes, its WHEN-guarded triggers), commit.
- ``plain COPY``: the same rows, already in COPY format with a ready-made geometry (prepared
  outside the timing), COPYed into a table ``LIKE incident INCLUDING ALL`` (same columns,
  defaults, constraints and indexes, no triggers), commit. No validation, no conversion, no
  cells: the floor any import pays.

Each side is timed ``--rounds`` times (default 3), alternating (copy, import, then import,
copy, ...: whatever else the machine does falls on both alike); the medians are compared.
Every round of the import must accept every row (checked).

Run: ``.venv/bin/python -m bench.bulk_import [--rows 1000000] [--rounds 3] [--quick]``
(``--quick``: 20,000 rows). Goal: import ≤ 2× plain COPY (medians). Exit status 1 when the
goal is missed or a check fails (:mod:`bench.goals`).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text

from bench.common import demo_database
from bench.goals import Goals
from geo.coords import wgs84_to_gcj02
from service.auth import Principal
from service.db import make_engine
from service.specs.entity_kinds import INCIDENTS
from service.transfer import import_file

CATEGORIES = ["water", "gas", "street_light", "road", "sanitation", "public_order", "other"]
#: The benchmark's own database (the Guiyang demo, built on first use): other benchmarks
#: read ``wangge_bench`` meanwhile, and a million-row import there would skew them.
DB_NAME = "wangge_bench_import"
SOURCES = ["hotline_12319", "patrol", "resident", "camera", "referral"]


def make_rows(engine, n: int, seed: int = 11) -> pd.DataFrame:
    """Return n incidents: points in the demo's grids (weighted by area) and some outside."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT (ST_Dump(ST_GeneratePoints(geom, 400, 5))).geom"
                " p FROM area WHERE level = 'grid') s"
            )
        ).all()
    rng = np.random.default_rng(seed)
    pts = np.array(rows)[rng.integers(0, len(rows), n)]
    pts += rng.normal(0, 0.0005, pts.shape)  # spread around the sampled points
    lon, lat = wgs84_to_gcj02(pts[:, 0], pts[:, 1])
    start = pd.Timestamp("2025-11-27T00:00:00+08:00")
    return pd.DataFrame(
        {
            "category": rng.choice(CATEGORIES, n),
            "source": rng.choice(SOURCES, n),
            "description": rng.choice(["水管破裂", "路灯不亮", "垃圾未清运", "噪音扰民", ""], n),
            "address": rng.choice(["中华南路12号", "开阳县城关镇", ""], n),
            "reported_at": (
                start + pd.to_timedelta(rng.integers(0, 365 * 86400, n), unit="s")
            ).strftime("%Y-%m-%d %H:%M:%S"),
            "lon": np.round(lon, 7),
            "lat": np.round(lat, 7),
        }
    )


def plain_copy(engine, frame: pd.DataFrame) -> float:
    """Return seconds to COPY the rows into a trigger-less copy of the incident table."""
    x, y = frame["lon"].to_numpy(), frame["lat"].to_numpy()
    geoms = shapely.to_wkb(
        shapely.set_srid(shapely.points(x, y), 4326), hex=True, include_srid=True
    )
    ready = frame[["category", "source", "description", "address", "reported_at"]].copy()
    ready["reported_at"] = ready["reported_at"] + "+08"
    ready["geom"] = geoms
    buffer = io.StringIO()
    ready.to_csv(buffer, sep="\t", header=False, index=False, lineterminator="\n")
    payload = buffer.getvalue()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS incident_plain"))
        # The same columns, defaults and indexes; not the lifecycle's checks, which the
        # plain COPY leaves empty.
        conn.execute(
            text(
                "CREATE TABLE incident_plain (LIKE incident INCLUDING DEFAULTS "
                "INCLUDING IDENTITY INCLUDING GENERATED INCLUDING INDEXES)"
            )
        )
        # The lifecycle columns (state, owner, ...) are filled by wangge's import, not by a
        # plain COPY of the file's columns: the peer table leaves them empty.
        unfilled = conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'incident_plain' AND is_nullable = 'NO' "
                "AND column_default IS NULL AND column_name <> ALL(:given)"
            ),
            {
                "given": [
                    "id",
                    "category",
                    "source",
                    "description",
                    "address",
                    "reported_at",
                    "geom",
                ]
            },
        ).scalars()
        for column in unfilled:
            conn.execute(text(f'ALTER TABLE incident_plain ALTER COLUMN "{column}" DROP NOT NULL'))
    started = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        with (
            raw.cursor() as cur,
            cur.copy(
                "COPY incident_plain (category, source, description, address, reported_at, geom) "
                "FROM STDIN"
            ) as copy,
        ):
            copy.write(payload)
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE incident_plain"))
    return seconds


#: The tables an import writes: incident, and what its statement triggers keep (first events,
#: bins, the month map).
WRITTEN = ("incident", "case_event", "incident_bin", "incident_month")


def _clean(engine) -> None:
    """Remove earlier benchmark rows and the room they took, so every run starts alike.

    The plain COPY writes into a new table; the import writes into ``incident`` and the
    triggers' tables, which earlier rounds (a million rows in, then out) leave hundreds of MB
    large and mostly empty, with their indexes: they are compacted (``VACUUM FULL``), and
    the bins the deletes brought back to zero (no database that never held these rows has
    them) are removed, so each round's import writes where the demo alone would.
    """
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM incident WHERE created_by = 'bench'"))
        conn.execute(text("DELETE FROM incident_bin WHERE n = 0"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in WRITTEN:
            conn.execute(text(f"VACUUM (FULL, ANALYZE) {table}"))


def wangge_import(engine, path: Path) -> tuple[float, dict]:
    principal = Principal(
        token_id="bench", name="bench", role="admin", area_code=None, scope_path=None
    )
    stages: dict[str, float] = {}
    last = {"stage": None, "t": time.perf_counter()}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != last["stage"]:
            now = time.perf_counter()
            if last["stage"]:
                stages[last["stage"]] = stages.get(last["stage"], 0) + now - last["t"]
            last.update(stage=stage, t=now)

    _clean(engine)
    started = time.perf_counter()
    with engine.connect() as conn, conn.begin():
        report = import_file(
            conn,
            INCIDENTS,
            principal=principal,
            data=path,
            filename=path.name,
            crs="GCJ-02",
            progress=progress,
        )
        assert report.committed, report.as_dict()["problems"][:5]
        progress("commit", 0, 0)
    seconds = time.perf_counter() - started
    stages["commit"] = time.perf_counter() - last["t"]
    _clean(engine)
    return seconds, {
        "stages": stages,
        "accepted": report.accepted,
        "unassigned": report.unassigned,
        "grids": len(report.per_grid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.rows
    rounds = max(1, args.rounds)
    goals = Goals("bulk_import", quick=args.quick)
    url, _token = demo_database(DB_NAME)
    engine = make_engine(url)
    frame = make_rows(engine, n)
    copies: list[float] = []
    imports: list[tuple[float, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "incidents.csv"
        frame.to_csv(path, index=False, encoding="utf-8-sig")
        size_mb = path.stat().st_size / 1e6
        for r in range(rounds):
            # Alternate which side goes first, so neither always follows the other.
            if r % 2 == 0:
                copies.append(plain_copy(engine, frame))
                imports.append(wangge_import(engine, path))
            else:
                imports.append(wangge_import(engine, path))
                copies.append(plain_copy(engine, frame))
            print(
                f"round {r + 1}/{rounds}: plain COPY {copies[-1]:.2f} s, wangge import "
                f"{imports[-1][0]:.2f} s ({imports[-1][0] / copies[-1]:.2f}x)",
                flush=True,
            )
    engine.dispose()
    copy_s = statistics.median(copies)
    import_s = statistics.median(s for s, _ in imports)
    # The stages of the round whose import time is the median one.
    info = sorted(imports, key=lambda r: r[0])[(len(imports) - 1) // 2][1]
    print(
        f"\nbulk import benchmark: {n:,} incidents, CSV of {size_mb:.0f} MB (GCJ-02), "
        f"median of {rounds} alternating rounds\n"
    )
    print(f"{'what':<44}{'seconds':>9}{'rows/s':>12}{'rounds':>26}")
    runs = ", ".join(f"{v:.2f}" for v in copies)
    print(
        f"{'plain COPY (ready rows, same indexes)':<44}{copy_s:>9.2f}{n / copy_s:>12,.0f}  {runs}"
    )
    runs = ", ".join(f"{v:.2f}" for v, _ in imports)
    print(
        f"{'wangge import (read→validate→cells→COPY)':<44}{import_s:>9.2f}{n / import_s:>12,.0f}"
        f"  {runs}"
    )
    for stage, secs in info["stages"].items():
        print(f"  {stage:<42}{secs:>9.2f}")
    print(
        f"\naccepted {info['accepted']:,}, outside every grid {info['unassigned']:,}, "
        f"{info['grids']} grids"
    )
    ratio = import_s / copy_s
    print(f"import / plain COPY (medians): {ratio:.2f}x (goal <= 2x)")
    accepted = [i["accepted"] for _, i in imports]
    goals.check(
        "import_accepts_every_row",
        f"every round's import accepted all {n:,} rows",
        all(a == n for a in accepted),
        "" if all(a == n for a in accepted) else f"accepted {accepted}",
    )
    goals.at_most(
        "import_vs_copy",
        f"wangge import / plain COPY, medians of {rounds} alternating rounds",
        ratio,
        2.0,
    )
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())

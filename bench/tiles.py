"""Tiles, GeoJSON items and map pages benchmark: wangge against tipg on the same tables.

What is measured, in one run, on one database and one machine, by three servers, each uvicorn
with one worker and a pool of 10 database connections, loaded one at a time. The database is
``wangge_bench`` (the Guiyang demo, ~3,700 incidents), or with ``--incidents N`` a volume
database (``wangge_bench_tiles_<N>``, or ``--database``; built on first use, ~9 minutes for
1 M): the demo plus N incidents over a year, 70 % around the urban core (a normal spread of
0.06 degrees), 30 % anywhere in the city, one in 20 open and the rest closed (issue 12: a year
of cases, a backlog of ~50,000).

- ``tipg`` (developmentseed's OGC Features and Tiles server for PostGIS, in its own
  virtualenv ``build/tipg-venv``, created on first run) reading views that select exactly
  what wangge's ``grids`` and ``incidents`` tiles carry (current-generation grids with the
  same properties, incl. the ``open_incidents`` count read from the same counters; every
  incident), and ``grids_plain``: the grids without their count (issue 12's comparator: grid
  tiles with counts against tipg's plain ones). Views in schema ``tipg_bench``, made at start
  and dropped at the end. tipg's tile buffer is set to 64 px (wangge's) so both tiles carry
  the same geometry; tipg has no server-side cache and draws at most 10,000 features a tile.
- ``wangge uncached``: ``bench.lookup_app`` with ``WANGGE_API_TILE_CACHE_BYTES=0``.
- ``wangge cached``: the default tile cache, warmed with one pass over the tile list.

Workloads (HTTP load from ``wrk`` with a Lua script rotating the URLs, at 8 and at 64
connections; ``--rounds`` rounds in which the servers take turns, ``--seconds`` per server in
all, the median of the rounds reported with ± half their range: the machine may be shared):

- tiles: every Web Mercator tile at zooms 8–14 covering Guiyang's urban core (106.55–106.85E,
  26.45–26.70N, around 106.70E 26.58N) that holds data of the layer, shuffled; ``grids`` from
  zoom 8, ``incidents`` from zoom 10 (wangge's minimum zooms of these layers; below them wangge
  draws nothing). Empty tiles are left out: wangge's cache keeps zero-byte tiles even at size 0.
  wangge ``/tiles/{layer}/{z}/{x}/{y}.mvt``, tipg
  ``/collections/tipg_bench.{layer}/tiles/WebMercatorQuad/{z}/{x}/{y}``.
- items: 100 dispatch-screen bboxes (0.05°×0.03° to 0.5°×0.3°) over the gridded city, grids,
  ``limit=1000``; wangge with ``zoom=`` of a 1280-px screen (simplified to one pixel, fewer
  digits, its default properties), and at full geometry for reference; tipg doing the same
  work with its own options (``simplify=`` the same one-pixel tolerance, ``properties=``
  wangge's default ones), and tipg's default (full geometry, every property: different work,
  printed for reference).
- bare: ``GET /bench/bare`` (no auth, no database) of the same wangge app: the most any of its
  routes can serve, the ceiling for cached tiles.

Not the same work in tiles: wangge picks a tile's features by bounding box (``&&``) and
simplifies polygons to one pixel of the 4096 extent before encoding; tipg by default tests
``ST_Intersects`` on the exact shapes and encodes full geometry. tipg's own ``simplify=`` (the
same tolerance) is measured for the grids tiles too, with and without counts; the tile goals
are checked against the fastest of tipg's ways, the items goal against tipg doing the same
work. An incident tile holding more than 1,000 incidents is clusters in wangge (counts kept on
write, 32 x 32 a tile) and up to 10,000 points in tipg: a tile is compared by the incidents
it accounts for (a cluster for its ``point_count``).

Pages: after the load, every map page (dispatch, planning, tablet) for every role that opens
it (the city's and two districts' dispatchers, a planner, the busiest grid's officer, an
admin) is fetched three times, one at a time; goal: the slowest median within 1 s.

Before the load, every tile and bbox is fetched once from each server: the feature counts are
compared (MVT decoded here) and the payloads summed (body, and as sent to a client accepting
gzip: both servers compress).
Goals: uncached tiles >= 2x tipg's throughput, cached tiles >= 20x, items >= 1x tipg's with
the same simplification and properties, and a payload <= 0.5x tipg's default response (the
issue's "half the payload through simplification": different work by design); uncached
incident tiles' p99 <= 300 ms at up to 16 connections (``--connections 16``: issue 12's wrk
-c16); p99 is printed for every row. Checks: every answer 2xx (no socket errors under load),
the warmed cache answers hits, and wangge leaves out no feature tipg returns (per tile, per
bbox). Exit status 1 when a goal is missed or a check fails (:mod:`bench.goals`).

Run: ``make bench`` or ``.venv/bin/python -m bench.tiles [--seconds 9] [--rounds 3] [--quick]
[--json F] [--connections 8,64] [--incidents N [--database NAME]]`` (``--quick``: 64
connections, one round of 3 s). About 4.5 minutes by default; at 1 M incidents:
``--incidents 1000000 --connections 16``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bench.common import ROOT, parse_wrk, start, start_uvicorn, stop
from bench.goals import Goals
from bench.lookup import prepare_database
from service.repositories.layers import tolerance_for_zoom
from service.specs.map_layers import LAYERS

TIPG_VENV = ROOT / "build" / "tipg-venv"  # build/ is gitignored
TIPG_REQUIREMENT = os.environ.get("WANGGE_BENCH_TIPG", "tipg==1.6.1")
WANGGE_PORT = 8766
TIPG_PORT = 8767
WANGGE_CACHED_PORT = 8768
POOL = 10  # database connections per server (tipg's default maximum, wangge's default)
SCHEMA = "tipg_bench"
CORE = (106.55, 26.45, 106.85, 26.70)  # the urban core a dispatch screen pans over
ZOOMS = range(8, 15)
LAYER_NAMES = ("grids", "incidents")
N_BBOXES = 100
#: tipg's grids come twice: with wangge's tile properties (the count of open incidents read
#: from the same counters) and plain, without it (issue 12's comparator: grid tiles with
#: counts at least as fast as tipg's without); the tile goals take tipg's fastest way.
PLAIN_LEAVES_OUT = ("open_incidents",)
#: The p99 goal (300 ms) holds at up to this many connections (the issue's wrk -c16); at 64
#: on one worker a queue forms whatever the tile costs, so p99 there is printed only.
P99_CONNECTIONS = 16
SCREEN_PX = 1280
ITEMS_LIMIT = 1000


# --- data ---------------------------------------------------------------------------------


def _pg(url: str) -> str:
    return url.replace("+psycopg", "")


def ensure_entities(url: str) -> None:
    """Load the demo's entities (incidents, units, …) into a bench database made before the
    demo had them (``prepare_database`` reuses a database that has boundaries)."""
    from sqlalchemy import text

    from fixtures.guiyang_entities import build_demo_entities
    from service.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('wangge_bench_entities'))"))
        if conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == 0:
            print("bench database has no entities yet: loading the demo's", flush=True)
            print(build_demo_entities(conn, seed=2014), flush=True)
    engine.dispose()


def view_sql() -> str:
    """Return SQL making tipg's views: the same rows and properties as wangge's layers."""
    grids, incidents = LAYERS["grids"], LAYERS["incidents"]

    def cols(spec, leave_out=()) -> str:
        return ", ".join(
            f'{expr} AS "{name}"'
            for name, expr in spec.tile_properties.items()
            if name not in leave_out
        )

    gen = "(SELECT max(id) FROM public.generation WHERE active)"
    return f"""
        DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
        CREATE SCHEMA {SCHEMA};
        SET LOCAL search_path = public;
        CREATE VIEW {SCHEMA}.grids AS
            SELECT {cols(grids)}, t.geom FROM {grids.source}
            WHERE t.level = '{grids.level}' AND t.generation_low <= {gen}
              AND t.generation_high >= {gen};
        CREATE VIEW {SCHEMA}.grids_plain AS
            SELECT {cols(grids, PLAIN_LEAVES_OUT)}, t.geom FROM {grids.source}
            WHERE t.level = '{grids.level}' AND t.generation_low <= {gen}
              AND t.generation_high >= {gen};
        CREATE VIEW {SCHEMA}.incidents AS
            SELECT t.id, {cols(incidents)}, t.geom FROM {incidents.source};
    """


def make_views(url: str) -> None:
    with psycopg.connect(_pg(url)) as conn:
        conn.execute(view_sql())


def drop_views(url: str) -> None:
    with psycopg.connect(_pg(url)) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def _tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    r = math.radians(lat)
    y = int((1 - math.log(math.tan(r) + 1 / math.cos(r)) / math.pi) / 2 * n)
    return x, y


def core_tiles() -> list[tuple[int, int, int]]:
    """Return every tile at zooms 8–14 covering the urban core."""
    out = []
    for z in ZOOMS:
        x0, y0 = _tile_xy(CORE[0], CORE[3], z)
        x1, y1 = _tile_xy(CORE[2], CORE[1], z)
        out += [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    return out


def tile_lists(url: str, seed: int = 11) -> tuple[dict[str, list], dict[str, int]]:
    """Return the shuffled tiles of each layer that hold data, and how many were empty.

    Empty tiles are left out: wangge's cache keeps a zero-byte tile even when its size is 0,
    so they would be cache hits in the uncached run.
    """
    tiles = core_tiles()
    random.Random(seed).shuffle(tiles)
    out, empty = {}, {}
    with psycopg.connect(_pg(url)) as conn:
        for name in LAYER_NAMES:
            mine = [t for t in tiles if t[0] >= LAYERS[name].min_zoom]
            counts = conn.execute(
                f"SELECT (SELECT count(*) FROM {SCHEMA}.{name} v WHERE v.geom && "
                "ST_Transform(ST_TileEnvelope(z, x, y), 4326)) FROM unnest("
                "%s::int[], %s::int[], %s::int[]) WITH ORDINALITY AS u(z, x, y, n) ORDER BY n",
                [[t[0] for t in mine], [t[1] for t in mine], [t[2] for t in mine]],
            ).fetchall()
            out[name] = [t for t, (n,) in zip(mine, counts, strict=True) if n]
            empty[name] = len(mine) - len(out[name])
    return out, empty


def bboxes(url: str, n: int = N_BBOXES, seed: int = 5) -> list[tuple[tuple, int]]:
    """Return n (bbox, screen zoom) pairs of dispatch-screen size over the gridded city."""
    with psycopg.connect(_pg(url)) as conn:
        x0, y0, x1, y1 = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            f"(SELECT ST_Extent(geom) e FROM {SCHEMA}.grids) s"
        ).fetchone()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w = math.exp(rng.uniform(math.log(0.05), math.log(0.5)))
        h = w * 0.6
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        box = tuple(round(v, 5) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        # The zoom at which the box fills a SCREEN_PX-wide screen.
        zoom = int(math.log2(SCREEN_PX * 360 / (256 * w)))
        out.append((box, zoom))
    return out


# --- volume: a year of cases -----------------------------------------------------------------

#: The urban core's centre: 70 % of a volume's incidents fall around it (a normal spread of
#: CORE_SIGMA degrees), the other 30 % anywhere in the city.
CORE_CENTRE = (106.70, 26.58)
CORE_SIGMA = 0.06
#: Of a volume's incidents, one in OPEN_EVERY stays open (the rest closed): 1 M cases leave
#: a backlog of ~50 k, as a city of six million can have.
OPEN_EVERY = 20

VOLUME_SQL = """
WITH city AS (SELECT geom FROM area WHERE level = 'city' ORDER BY code LIMIT 1),
spread AS (
    SELECT (ST_Dump(ST_GeneratePoints(city.geom, %(spread)s, %(seed)s))).geom AS p FROM city
),
core AS (
    -- Box-Muller: a normal spread around the centre.
    SELECT ST_SetSRID(ST_MakePoint(
        %(cx)s + %(sigma)s * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * r2),
        %(cy)s + %(sigma)s * sqrt(-2 * ln(1 - random())) * sin(2 * pi() * r2)), 4326) AS p
    FROM (SELECT random() AS r2 FROM generate_series(1, %(core)s)) s
),
pts AS (
    SELECT row_number() OVER () AS g, p FROM (SELECT p FROM core UNION ALL SELECT p FROM spread) u
)
INSERT INTO incident (category, source, description, geom, status, reported_at, closed_at)
SELECT (ARRAY['water', 'gas', 'street_light', 'road', 'sanitation', 'public_order',
              'other'])[1 + g %% 7],
       'patrol', 'volume', p,
       CASE WHEN g %% %(every)s <> 0 THEN 'closed' WHEN g %% 3 = 0 THEN 'new' ELSE 'open' END,
       t.t - make_interval(secs => (g * 31557600 / %(n)s)::integer),
       CASE WHEN g %% %(every)s <> 0
            THEN t.t - make_interval(secs => (g * 31557600 / %(n)s)::integer) + interval '1 day'
       END
FROM pts, (SELECT CAST(%(t)s AS timestamptz) AS t) t
"""


def prepare_volume(database: str, n: int, seed: int = 12) -> tuple[str, str]:
    """Return (url, city token) of ``database``: the Guiyang demo with ``n`` more incidents
    over a year (70 % around the urban core, 30 % anywhere in the city; one in
    :data:`OPEN_EVERY` open, the rest closed), built on first use."""
    from bench.common import demo_database

    url, token = demo_database(database)
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM incident WHERE description = 'volume'").fetchone()
        if have[0] != n:
            started = time.perf_counter()
            conn.execute("DELETE FROM incident WHERE description = 'volume'")
            core = int(n * 0.7)
            # A month of its own for each month of the year (not the default partition).
            conn.execute("SELECT incident_ensure_partitions(1, DATE '2025-11-01')")
            conn.execute("SELECT setseed(%s)", (seed / 100,))
            conn.execute(
                VOLUME_SQL,
                {
                    "n": n,
                    "core": core,
                    "spread": n - core,
                    "seed": seed,
                    "cx": CORE_CENTRE[0],
                    "cy": CORE_CENTRE[1],
                    "sigma": CORE_SIGMA,
                    "every": OPEN_EVERY,
                    "t": "2026-12-01T00:00:00+00:00",
                },
            )
            conn.execute("VACUUM ANALYZE incident")
            conn.execute("VACUUM ANALYZE case_event")
            print(
                f"volume: {n:,} incidents added to {database} in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return url, token


# --- map pages --------------------------------------------------------------------------

#: The page goal: every map page, for every role, within this many seconds (server time).
PAGE_SECONDS = 1.0


def page_cases(url: str) -> list[tuple[str, str, str]]:
    """Return (label, token, path) of every map page for every role that opens it: the city
    and a district dispatcher (the district with the busiest grid, and Kaiyang), a planner,
    the busiest grid's officer, an admin."""
    from sqlalchemy import text

    from service.auth import create_token
    from service.db import make_engine

    busiest = text(
        "SELECT a.code FROM area a JOIN generation g ON g.active AND a.generation_low "
        "<= g.id AND a.generation_high >= g.id WHERE a.level = 'grid' "
        "AND '/' || a.path || '/' LIKE '%/' || :under || '/%' "
        "ORDER BY (SELECT coalesce(sum(b.n), 0) FROM incident_bin b WHERE b.z = 0 AND "
        "b.status <> 'closed' AND b.area_path = a.path) DESC, a.code LIMIT 1"
    )
    engine = make_engine(url)
    with engine.begin() as conn:
        grid = conn.execute(busiest, {"under": "%"}).scalar_one()
        city, district = grid[:4] + "00", grid[:6]
        kaiyang = "520121" if city == "520100" else None
        roles = {
            "city dispatcher": ("city_dispatcher", city),
            f"district dispatcher {district}": ("district_dispatcher", district),
            "planner": ("planner", city),
            f"grid officer {grid}": ("grid_officer", grid),
            "admin": ("admin", None),
        }
        if kaiyang and kaiyang != district:
            roles[f"district dispatcher {kaiyang}"] = ("district_dispatcher", kaiyang)
        tokens = {
            label: create_token(conn, name=f"bench pages {label}", role=role, area_code=code)
            for label, (role, code) in roles.items()
        }
        # A dispatcher's tablet view: the busiest grid of their area.
        tablet = {
            label: conn.execute(busiest, {"under": code or "%"}).scalar_one()
            for label, (role, code) in roles.items()
        }
    engine.dispose()
    out = []
    for label, token in tokens.items():
        role = roles[label][0]
        out.append((label, token, "/pages/dispatch"))
        if role != "grid_officer":
            out.append((label, token, "/pages/planning"))
        if role == "grid_officer":
            out.append((label, token, "/pages/tablet"))
        elif role != "planner":
            out.append((label, token, f"/pages/tablet?grid={tablet[label]}"))
    return out


def measure_pages(port: int, cases: list[tuple[str, str, str]], rounds: int = 3) -> list[dict]:
    """GET every page ``rounds`` times (one at a time); return its first time (the planning
    page's analyses not yet kept by the server), the median of the others, its size, the
    open incidents it embeds and the total it states.

    Times are to the last byte on localhost, the page gzipped (the client accepts it): the
    server's time, transfer being a fraction of a millisecond.
    """
    import re

    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
        for label, token, path in cases:
            times, r = [], None
            for _ in range(rounds):
                started = time.perf_counter()
                # English: the page's note "N of M open incidents shown" is read below.
                headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
                r = c.get(path, headers=headers)
                times.append(time.perf_counter() - started)
            shown = re.search(r"([\d,]+) of ([\d,]+) open incidents shown", r.text)
            out.append(
                {
                    "who": label,
                    "path": path,
                    "status": r.status_code,
                    "first": times[0],
                    "seconds": statistics.median(times[1:] or times),
                    "bytes": len(r.content),
                    "capped": shown.group(0) if shown else "",
                }
            )
    return out


def report_pages(rows: list[dict], goals: Goals) -> str:
    lines = [
        f"map pages, server time, one request at a time: the first, then the median of the "
        f"next two (goal: every one <= {PAGE_SECONDS:g} s)",
        f"  {'page':<42}{'who':<38}{'':>4}{'first':>8}{'then':>8}{'page':>12}",
    ]
    for r in rows:
        lines.append(
            f"  {r['path']:<42}{r['who']:<38}{r['status']:>4}{r['first'] * 1000:>6.0f}ms"
            f"{r['seconds'] * 1000:>6.0f}ms{r['bytes'] / 1024:>8,.0f} KiB  {r['capped']}"
        )
    bad = [f"{r['path']} as {r['who']}: {r['status']}" for r in rows if r["status"] != 200]
    goals.check("pages_200", "every map page answers 200 for every role", not bad, "; ".join(bad))
    slowest = max(rows, key=lambda r: max(r["first"], r["seconds"]))
    goals.at_most(
        "pages_slowest",
        "the slowest map page (any role, first request or repeated), seconds",
        max(slowest["first"], slowest["seconds"]),
        PAGE_SECONDS,
        unit="s",
        detail=f"{slowest['path']} as {slowest['who']}",
    )
    return "\n".join(lines)


# --- URLs -----------------------------------------------------------------------------------


def wangge_tile(layer: str, t: tuple[int, int, int]) -> str:
    return f"/tiles/{layer}/{t[0]}/{t[1]}/{t[2]}.mvt"


def tipg_tile(layer: str, t: tuple[int, int, int], simplify: bool = False) -> str:
    """tipg's tile; ``simplify``: with wangge's tile tolerance (one pixel of 4096 at zoom z)."""
    url = f"/collections/{SCHEMA}.{layer}/tiles/WebMercatorQuad/{t[0]}/{t[1]}/{t[2]}"
    return url + (f"?simplify={360.0 / (4096 * 2 ** t[0])!r}" if simplify else "")


def _bbox(box: tuple) -> str:
    return ",".join(f"{v:.5f}" for v in box)


def wangge_items(box: tuple, zoom: int | None) -> str:
    z = f"&zoom={zoom}" if zoom is not None else ""
    return f"/ogc/collections/grids/items?bbox={_bbox(box)}&limit={ITEMS_LIMIT}{z}"


def tipg_items(box: tuple, zoom: int | None = None) -> str:
    """tipg's items; with ``zoom``: wangge's work (its tolerance and default properties)."""
    url = f"/collections/{SCHEMA}.grids/items?bbox={_bbox(box)}&limit={ITEMS_LIMIT}"
    if zoom is None:
        return url
    props = ",".join(LAYERS["grids"].default_properties or LAYERS["grids"].properties)
    return url + f"&simplify={tolerance_for_zoom(zoom)!r}&properties={props}"


# --- MVT ------------------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, value) of a protobuf message (bytes for length-delimited)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def _value(buf: bytes) -> object:
    """Return the value of an MVT Value message (integers and strings are all we read)."""
    for field, value in _fields(buf):
        if field == 1:
            return value.decode()
        if field in (4, 5):
            return value
        if field == 6:
            return (value >> 1) ^ -(value & 1)
        return value
    return None


def mvt_weight(data: bytes) -> int:
    """Return how many incidents a tile stands for: a cluster (``point_count``) for its
    count, any other feature for one."""
    total = 0
    for field, layer in _fields(data):
        if field != 3:
            continue
        parts = list(_fields(layer))
        keys = [v.decode() for f, v in parts if f == 3]
        values = [_value(v) for f, v in parts if f == 4]
        for f, feature in parts:
            if f != 2:
                continue
            weight = 1
            for ff, tags in _fields(feature):
                if ff == 2:
                    ints, i = [], 0
                    while i < len(tags):
                        v, i = _varint(tags, i)
                        ints.append(v)
                    for k, v in zip(ints[::2], ints[1::2], strict=True):
                        if keys[k] == "point_count":
                            weight = int(values[v])
            total += weight
    return total


def mvt_features(data: bytes) -> int:
    """Return the number of features in a Mapbox vector tile (all layers)."""
    count = 0
    for field, layer in _fields(data):
        if field == 3:  # Tile.layers
            count += sum(1 for f, _ in _fields(layer) if f == 2)  # Layer.features
    return count


# --- servers --------------------------------------------------------------------------------


def ensure_tipg() -> str:
    """Return tipg's version, installing it into its own virtualenv on first use."""
    python = TIPG_VENV / "bin" / "python"
    probe = [str(python), "-c", "import tipg, uvicorn; print(tipg.__version__)"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    print(f"installing {TIPG_REQUIREMENT} into {TIPG_VENV.relative_to(ROOT)}", flush=True)
    TIPG_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TIPG_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", TIPG_REQUIREMENT, "uvicorn"], check=True
    )
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def tipg_env(url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": _pg(url),
        "TIPG_DB_SCHEMAS": json.dumps([SCHEMA]),
        "TIPG_DB_TABLES": json.dumps(
            [f"{SCHEMA}.grids", f"{SCHEMA}.grids_plain", f"{SCHEMA}.incidents"]
        ),
        "TIPG_DB_FUNCTIONS": "[]",  # no function collections
        f"TIPG_TABLE_CONFIG__{SCHEMA}_grids__PK": "code",
        f"TIPG_TABLE_CONFIG__{SCHEMA}_grids_plain__PK": "code",
        "TIPG_TILE_BUFFER": "64",  # wangge's: the same clipped geometry in both tiles
        "TIPG_DB_MAX_CONN_SIZE": str(POOL),
        "TIPG_CATALOG_TTL": "0",  # no catalogue refresh in the middle of a measurement
        "TIPG_DB_SPATIAL_EXTENT": "false",
        "TIPG_DB_DATETIME_EXTENT": "false",
    }


def start_tipg(url: str) -> subprocess.Popen:
    cmd = [
        str(TIPG_VENV / "bin" / "python"),
        "-m",
        "uvicorn",
        "tipg.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(TIPG_PORT),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    # Its own cwd: tipg's settings also read a .env file from the working directory.
    return start(cmd, tipg_env(url), f"http://127.0.0.1:{TIPG_PORT}/healthz", str(TIPG_VENV))


def ports_in_use(*ports: int) -> list[int]:
    """Return those of ``ports`` something listens on already (a server left by another run
    would answer this run's health check and be measured in place of ours)."""
    import socket

    taken = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def start_wangge(url: str, cache: bool, port: int) -> subprocess.Popen:
    # No deadline sweep: its writes (a demo's cases falling overdue as the clock runs: 345
    # events in one sweep of wangge_bench) drop cached tiles, as they should, between the
    # cache's warming and its check, and load the database while tiles are measured.
    env = {
        "DATABASE_URL": url,
        "WANGGE_DB_POOL_SIZE": str(POOL),
        "WANGGE_DISPATCH_SWEEP_SECONDS": "0",
    }
    if not cache:
        env["WANGGE_API_TILE_CACHE_BYTES"] = "0"
    return start_uvicorn("bench.lookup_app:create_bench_app", port, env)


# --- load -----------------------------------------------------------------------------------

WRK_LUA = """
local paths = {%s}
local headers = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], headers)
end
"""


def settle(url: str, limit_s: float = 60) -> float:
    """Wait until no other query runs in the database (at most ``limit_s``); return the wait.

    A server's statements outlive the wrk run that sent them: at 1 M incidents tipg's
    incident tiles take ~2 s each, and the ten still running when its round ended took the
    CPU from the first seconds of the next server's 3-s round (wangge's uncached incident
    tiles measured 35 req/s, p99 986 ms, against ~300 req/s, p99 ~100 ms on a quiet
    database). Each round starts on a quiet database.
    """
    start = time.perf_counter()
    with psycopg.connect(_pg(url), autocommit=True) as conn:
        while time.perf_counter() - start < limit_s:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.05)
    return time.perf_counter() - start


def run_wrk(port: int, paths: list[str], headers: dict, seconds: float, connections: int):
    lua = WRK_LUA % (
        ", ".join(json.dumps(p) for p in paths),
        ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
    try:
        duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
        args = ["wrk", "-t", "1", "-c", str(connections), "-d", duration, "--latency"]
        args += ["--timeout", "30s", "-s", fh.name, f"http://127.0.0.1:{port}/"]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        Path(fh.name).unlink()
    return parse_wrk(out)


def fetch_all(port: int, paths: list[str], headers: dict) -> list[httpx.Response]:
    """GET every path once, in order (counts, payloads; also warms PostgreSQL's cache)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
        out = []
        for p in paths:
            r = c.get(p)
            # 204: a tile with no feature (wangge answers it without a body).
            if r.status_code not in (200, 204):
                raise RuntimeError(f"GET {p} -> {r.status_code}: {r.text[:300]}")
            out.append(r)
        return out


# --- main -----------------------------------------------------------------------------------


SERVERS = {  # name -> (port, needs the token)
    "tipg": (TIPG_PORT, False),
    "tipg simplify": (TIPG_PORT, False),  # tipg's own simplify= (and properties= for items)
    "tipg plain": (TIPG_PORT, False),  # grids without their counts, simplify=
    "wangge uncached": (WANGGE_PORT, True),
    "wangge cached": (WANGGE_CACHED_PORT, True),
}
WORKLOADS = {  # workload -> servers measured on it
    "tiles grids": ("tipg", "tipg simplify", "tipg plain", "wangge uncached", "wangge cached"),
    "tiles incidents": ("tipg", "wangge uncached", "wangge cached"),  # points: none simplified
    "items": ("tipg", "tipg simplify", "wangge uncached"),
    "items full": ("wangge uncached",),
    "bare": ("wangge cached",),  # GET /bench/bare: no auth, no database: the app's ceiling
}
TIPG_WAYS = ("tipg", "tipg simplify", "tipg plain")


def _combine(runs: list[dict]) -> dict:
    """Return the median of rounds (req/s, p50, p99), with the spread of req/s."""
    rps = sorted(r["rps"] for r in runs)
    return {
        "rps": statistics.median(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "spread": (rps[-1] - rps[0]) / statistics.median(rps),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "rounds": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=9, help="per measurement, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the servers")
    parser.add_argument("--quick", action="store_true", help="64 connections, 1 round of 3 s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--incidents",
        type=int,
        default=0,
        help="run on the demo plus this many incidents over a year (a volume database, built "
        "on first use; 0: the demo alone)",
    )
    parser.add_argument(
        "--database", help="the volume database (default wangge_bench_tiles_<incidents>)"
    )
    parser.add_argument(
        "--connections",
        type=lambda v: tuple(int(c) for c in v.split(",")),
        help="wrk connections, comma-separated (default 8,64; --quick 64)",
    )
    parser.add_argument(
        "--pages-only",
        action="store_true",
        help="time the map pages alone (every page for every role; no tipg, no load)",
    )
    args = parser.parse_args(argv)
    if args.pages_only:
        return main_pages(args)
    rounds = 1 if args.quick else max(1, args.rounds)
    seconds = 3 if args.quick else max(1, round(args.seconds / rounds))
    conns = args.connections or ((64,) if args.quick else (8, 64))
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2

    taken = ports_in_use(WANGGE_PORT, TIPG_PORT, WANGGE_CACHED_PORT)
    if taken:
        print(
            f"ports {taken} are in use (another bench.tiles run?): stop it first", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    tipg_version = ensure_tipg()
    url, token = volume_or_demo(args)
    with psycopg.connect(_pg(url)) as conn:
        n_incidents, n_open = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'closed') FROM incident"
        ).fetchone()
    make_views(url)
    auth = {"Authorization": f"Bearer {token}"}
    tiles, empty_tiles = tile_lists(url)
    boxes = bboxes(url)
    wangge_paths = {
        **{f"tiles {n}": [wangge_tile(n, t) for t in tiles[n]] for n in LAYER_NAMES},
        "items": [wangge_items(b, z) for b, z in boxes],
        "items full": [wangge_items(b, None) for b, _ in boxes],
        "bare": ["/bench/bare"],
    }
    paths = {
        "tipg": {
            **{f"tiles {n}": [tipg_tile(n, t) for t in tiles[n]] for n in LAYER_NAMES},
            "items": [tipg_items(b) for b, _ in boxes],
        },
        "tipg simplify": {
            "tiles grids": [tipg_tile("grids", t, simplify=True) for t in tiles["grids"]],
            "items": [tipg_items(b, z) for b, z in boxes],
        },
        "tipg plain": {
            "tiles grids": [tipg_tile("grids_plain", t, simplify=True) for t in tiles["grids"]],
        },
        "wangge uncached": wangge_paths,
        "wangge cached": wangge_paths,
    }
    goals = Goals("tiles", quick=args.quick)
    results: dict[str, dict] = {}  # "server|workload|connections" -> figures
    fetched: dict[str, dict[str, list]] = {}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_tipg(url))
        procs.append(start_wangge(url, cache=False, port=WANGGE_PORT))
        procs.append(start_wangge(url, cache=True, port=WANGGE_CACHED_PORT))
        # Every URL once from each server (counts, payloads, PostgreSQL's cache), and the
        # cached server's cache warmed and checked.
        # A non-200 answer here stops the run (exit status 1): the figures would mean nothing.
        for way in TIPG_WAYS:
            fetched[way] = {k: fetch_all(TIPG_PORT, v, {}) for k, v in paths[way].items()}
        fetched["wangge"] = {
            k: fetch_all(WANGGE_PORT, v, auth) for k, v in wangge_paths.items() if k != "bare"
        }
        for layer in LAYER_NAMES:
            v = wangge_paths[f"tiles {layer}"]
            fetch_all(WANGGE_CACHED_PORT, v, auth)
            states = {r.headers.get("x-tile-cache") for r in fetch_all(WANGGE_CACHED_PORT, v, auth)}
            goals.check(
                f"cache_warm_{layer}",
                f"the warmed cache answers every {layer} tile as a hit",
                states == {"hit"},
                "" if states == {"hit"} else f"x-tile-cache {sorted(map(str, states))}",
            )
        # The servers take turns: one loaded at a time, alternating round by round, so that
        # whatever else the machine does falls on all of them alike.
        for workload, servers in WORKLOADS.items():
            for server in servers:
                port, needs_token = SERVERS[server]
                run_wrk(port, paths[server][workload], auth if needs_token else {}, 1, 8)
            for c in conns:
                runs: dict[str, list] = {s: [] for s in servers}
                for _ in range(rounds):
                    for server in servers:
                        port, needs_token = SERVERS[server]
                        headers = auth if needs_token else {}
                        urls = paths[server][workload]
                        settle(url)
                        runs[server].append(run_wrk(port, urls, headers, seconds, c))
                for server in servers:
                    results[f"{server}|{workload}|{c}"] = _combine(runs[server])
        # The map pages, on the same data, with the load off.
        page_rows = measure_pages(WANGGE_PORT, page_cases(url))
    finally:
        for proc in procs:
            stop(proc)
        drop_views(url)

    report = summarise(results, fetched, tiles, empty_tiles, boxes, conns, goals)
    print(
        f"\ntiles & items benchmark on {n_incidents:,} incidents ({n_open:,} not closed): "
        f"tipg {tipg_version} vs wangge, 1 uvicorn worker each, "
        f"pool {POOL}, wrk {rounds} x {seconds:g}s per row (servers alternating, median), "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after, {time.monotonic() - started:.0f}s in all\n"
    )
    print(report["text"])
    print()
    print(report_pages(page_rows, goals))
    if args.json:
        figures = {"results": results, **report["figures"], "pages": page_rows}
        args.json.write_text(json.dumps(figures, indent=1))
    return goals.finish()


def volume_or_demo(args) -> tuple[str, str]:
    """Return (url, city token) of the run's database: the volume one, or the demo's."""
    if args.incidents:
        database = args.database or f"wangge_bench_tiles_{args.incidents}"
        return prepare_volume(database, args.incidents)
    url, token = prepare_database()
    ensure_entities(url)
    return url, token


def main_pages(args) -> int:
    """Time every map page for every role on one wangge server (``--pages-only``)."""
    if ports_in_use(WANGGE_PORT):
        print(f"port {WANGGE_PORT} is in use (another bench.tiles run?)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    url, _ = volume_or_demo(args)
    with psycopg.connect(_pg(url)) as conn:
        n_incidents, n_open = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'closed') FROM incident"
        ).fetchone()
    goals = Goals("tiles pages", quick=args.quick)
    proc = start_wangge(url, cache=False, port=WANGGE_PORT)
    try:
        rows = measure_pages(WANGGE_PORT, page_cases(url))
    finally:
        stop(proc)
    print(
        f"\nmap pages on {n_incidents:,} incidents ({n_open:,} not closed), 1 uvicorn worker, "
        f"pool {POOL}, {os.cpu_count()} cores, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after, {time.monotonic() - started:.0f}s in all\n"
    )
    print(report_pages(rows, goals))
    if args.json:
        args.json.write_text(json.dumps({"pages": rows}, indent=1))
    return goals.finish()


def _kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB"


def summarise(results, fetched, tiles, empty_tiles, boxes, conns, goals: Goals) -> dict:
    lines = ["same tiles, same bboxes: what each server returned (every URL fetched once)"]
    figures: dict = {}
    for layer in LAYER_NAMES:
        key = f"tiles {layer}"
        # A clustered tile (incidents, where a tile holds more than the layer's cluster_above)
        # stands for the sum of its clusters' counts: compared with tipg's features so.
        a = [mvt_weight(r.content) for r in fetched["wangge"][key]]
        drawn = [mvt_features(r.content) for r in fetched["wangge"][key]]
        clustered = sum(1 for x, y in zip(a, drawn, strict=True) if x != y)
        b = [mvt_features(r.content) for r in fetched["tipg"][key]]
        diff = [x - y for x, y in zip(a, b, strict=True) if x != y]
        sample = next(i for i, t in enumerate(tiles[layer]) if t[0] == 12)
        simplified = ""
        if key in fetched["tipg simplify"]:
            c = [mvt_features(r.content) for r in fetched["tipg simplify"][key]]
            simplified = f", tipg simplify= {sum(c):,}"
        lines.append(
            f"  {layer:<10}{len(tiles[layer])} tiles z{LAYERS[layer].min_zoom}-14 "
            f"({empty_tiles[layer]} empty left out): features wangge {sum(a):,}, tipg "
            f"{sum(b):,}{simplified}; sample tile {'/'.join(map(str, tiles[layer][sample]))}: "
            f"{a[sample]} vs {b[sample]}; tiles differing {len(diff)} "
            f"(by {min(diff, default=0):+d}..{max(diff, default=0):+d})"
        )
        if clustered:
            lines.append(
                f"    {clustered} wangge tiles clustered (more than "
                f"{LAYERS[layer].cluster_above:,} {layer}): {sum(drawn):,} features drawn for "
                f"{sum(a):,} {layer}; tipg caps a tile at 10,000 features"
            )
        if 0 in drawn:  # a zero-byte tile stays in wangge's cache even at size 0: a hit
            lines.append(
                f"    {drawn.count(0)} of them empty in wangge (cached even when uncached)"
            )
        fewer = sum(1 for d in diff if d < 0)
        goals.check(
            f"tiles_{layer}_features",
            f"no {layer} tile where wangge has fewer features than tipg",
            fewer == 0,
            f"{fewer} tiles with fewer" if fewer else "",
        )
        figures[f"tile_features_{layer}"] = {"wangge": sum(a), "tipg": sum(b), "differ": len(diff)}
    lines.append(
        "    why: wangge takes what overlaps the tile's envelope (&&, float4 index boxes) and "
        "keeps what\n    ST_AsMVTGeom leaves in the 64-px buffer; tipg takes ST_Intersects "
        "with the tile itself. wangge's\n    extra features lie in the buffer: points a hair "
        "outside the edge, grids that only reach into it."
    )
    lines.append(
        "  not the same work: wangge filters a tile's features by bounding box (&&) and "
        "simplifies polygons\n    to one pixel of the 4096 extent (ST_Simplify) before "
        "ST_AsMVTGeom encodes them; tipg by default\n    tests ST_Intersects on the exact "
        "shapes and encodes full geometry. 'tipg simplify' rows: tipg's own\n    simplify= at "
        "the same tolerance (ST_SimplifyPreserveTopology + ST_SnapToGrid). Tile goals are "
        "checked\n    against the faster of tipg's ways."
    )
    n_w = [len(r.json()["features"]) for r in fetched["wangge"]["items"]]
    n_t = [len(r.json()["features"]) for r in fetched["tipg"]["items"]]
    n_s = [len(r.json()["features"]) for r in fetched["tipg simplify"]["items"]]
    differ = sum(1 for x, y in zip(n_w, n_t, strict=True) if x != y)
    lines.append(
        f"  items     {len(boxes)} bboxes of grids: features wangge {sum(n_w):,}, tipg "
        f"{sum(n_t):,} (simplify= {sum(n_s):,}); bboxes differing {differ}: wangge's bbox "
        "filter is && (bounding\n    boxes), tipg's ST_Intersects: wangge's extras are grids "
        "whose box, not shape, reaches into the bbox."
    )
    fewer = sum(1 for x, y, z in zip(n_w, n_t, n_s, strict=True) if x < max(y, z))
    goals.check(
        "items_features",
        "no bbox where wangge returns fewer grids than tipg",
        fewer == 0,
        f"{fewer} bboxes with fewer" if fewer else "",
    )

    def sizes(server: str, key: str) -> tuple[int, int, int]:
        """Return (body bytes, bytes sent to a client accepting gzip, body gzipped at -6)."""
        rs = fetched[server][key]
        return (
            sum(len(r.content) for r in rs),
            sum(r.num_bytes_downloaded for r in rs),
            sum(len(gzip.compress(r.content, 6)) for r in rs),
        )

    lines.append("")
    lines.append(
        f"{'payload of the ' + str(len(boxes)) + ' items responses':<50}"
        f"{'body':>11}{'sent, gzip accepted':>21}{'body gzip -6':>14}"
    )
    pay = {}
    wangge_items = "wangge zoom= (simplified, fewer digits)"
    tipg_full = "tipg default: full geometry, every property"
    tipg_same = "tipg simplify= properties= (same work)"
    rows = [
        (tipg_full, "tipg", "items"),
        (tipg_same, "tipg simplify", "items"),
        (wangge_items, "wangge", "items"),
        ("wangge, full geometry", "wangge", "items full"),
    ]
    rows += [(f"tiles {n}: {s}", s, f"tiles {n}") for n in LAYER_NAMES for s in ("tipg", "wangge")]
    rows.insert(-2, ("tiles grids: tipg simplify=", "tipg simplify", "tiles grids"))
    for label, server, key in rows:
        body, wire, packed = sizes(server, key)
        pay[label] = (body, wire, packed)
        lines.append(f"  {label:<48}{_kib(body):>11}{_kib(wire):>21}{_kib(packed):>14}")
    payload_ratio = pay[wangge_items][0] / pay[tipg_full][0]
    wire_ratio = pay[wangge_items][1] / pay[tipg_full][1]
    packed_ratio = pay[wangge_items][2] / pay[tipg_full][2]
    same_ratio = pay[wangge_items][0] / pay[tipg_same][0]
    figures["payload"] = pay

    lines.append("")
    lines.append(
        "throughput (wrk, URLs rotating) and latency; items = grids, limit=1000; no Accept-Encoding"
    )
    header = f"{'workload':<24}{'server':<17}"
    for c in conns:
        header += f"{'req/s c' + str(c):>13}{'±':>5}{'p50 ms':>8}{'p99 ms':>8}"
    lines.append(header)
    rows = [
        (
            "tiles grids",
            "tiles grids",
            ["tipg", "tipg simplify", "tipg plain", "wangge uncached", "wangge cached"],
        ),
        ("tiles incidents", "tiles incidents", ["tipg", "wangge uncached", "wangge cached"]),
        ("items, full geometry", "items", ["tipg"]),
        ("items, same work", "items", ["tipg simplify"]),
        ("items, zoom=", "items", ["wangge uncached"]),
        ("items, full geometry", "items full", ["wangge uncached"]),
        ("bare route (ceiling)", "bare", ["wangge cached"]),
    ]
    bad = []
    for label, workload, servers in rows:
        for server in servers:
            line = f"{label:<24}{server:<17}"
            for c in conns:
                r = results[f"{server}|{workload}|{c}"]
                spread = f"{r['spread'] * 50:.0f}%"  # half the range of the rounds
                line += f"{r['rps']:>13,.0f}{spread:>5}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
                if r["non_2xx"] or r["socket_errors"]:
                    bad.append(
                        f"{server} {workload} c{c}: {r['non_2xx']} non-2xx, "
                        f"{r['socket_errors']} socket errors of {r['requests']:,}"
                    )
            lines.append(line)
    goals.check(
        "all_2xx",
        "every answer under load 2xx, no socket error (every server, workload, connections)",
        not bad,
        "; ".join(bad),
    )

    def tipg_best(workload: str, c: int) -> float:
        """tipg's faster way on this workload (its default, or with simplify=)."""
        return max(
            results[f"{way}|{workload}|{c}"]["rps"]
            for way in TIPG_WAYS
            if f"{way}|{workload}|{c}" in results
        )

    def ratio(a: str, workload: str, c: int) -> float:
        return results[f"{a}|{workload}|{c}"]["rps"] / tipg_best(workload, c)

    lines.append("")
    lines.append("ratios wangge / tipg (tiles: tipg's faster way; items: tipg doing the same work)")
    ratios: dict = {}
    for c in conns:
        for layer in LAYER_NAMES:
            w = f"tiles {layer}"
            ratios[f"uncached_{layer}_c{c}"] = ratio("wangge uncached", w, c)
            ratios[f"cached_{layer}_c{c}"] = ratio("wangge cached", w, c)
        items = results[f"wangge uncached|items|{c}"]["rps"]
        ratios[f"items_c{c}"] = items / results[f"tipg simplify|items|{c}"]["rps"]
        ratios[f"items_vs_full_c{c}"] = items / results[f"tipg|items|{c}"]["rps"]
    # Grids: wangge's carry their open incidents; tipg's fastest way is its plain grids
    # (issue 12: with counts at least as fast as tipg's without; the goal here is 2x).
    for what, target in [("uncached", 2.0), ("cached", 20.0)]:
        for c in conns:
            g, i = ratios[f"{what}_grids_c{c}"], ratios[f"{what}_incidents_c{c}"]
            lines.append(
                f"  {what + ' tiles, c' + str(c):<22} grids {g:6.2f}x  incidents {i:6.2f}x   "
                f"goal >= {target:g}x (grids: tipg's fastest way, plain and simplified)"
            )
            goals.at_least(
                f"{what}_tiles_incidents_c{c}",
                f"{what} incident tiles / tipg's, wrk -c{c}",
                i,
                target,
            )
            goals.at_least(
                f"{what}_tiles_grids_c{c}",
                f"{what} grid tiles with counts / tipg's fastest (plain grids, simplify=), "
                f"wrk -c{c}",
                g,
                target,
            )
    for c in conns:
        if c > P99_CONNECTIONS:
            continue
        p99 = results[f"wangge uncached|tiles incidents|{c}"]["p99_ms"]
        lines.append(f"  {'uncached incidents, c' + str(c):<22} p99 {p99:.0f} ms (goal <= 300 ms)")
        goals.at_most(
            f"uncached_incidents_p99_c{c}",
            f"uncached incident tiles' p99, wrk -c{c}",
            p99,
            300,
            unit="ms",
        )
    for c in conns:
        bare = results[f"wangge cached|bare|{c}"]["rps"]
        tipg = min(tipg_best(f"tiles {n}", c) for n in LAYER_NAMES)
        ratios[f"bare_c{c}"] = bare / tipg
        lines.append(
            f"  {'bare route, c' + str(c):<22} {bare / tipg:6.2f}x of tipg's slower tiles: the "
            "most any route of this app can serve"
        )
    for c in conns:
        r = ratios[f"items_c{c}"]
        lines.append(
            f"  {'items, c' + str(c):<22} {r:6.2f}x tipg with simplify= and properties= "
            f"(same work), goal >= 1x; {ratios[f'items_vs_full_c{c}']:.2f}x tipg's default "
            "(full geometry: different work, not a goal)"
        )
        goals.at_least(
            f"items_c{c}",
            f"items / tipg with simplify= and properties= (same work), wrk -c{c}",
            r,
            1.0,
        )
    lines.append(
        f"  {'items payload (body)':<22} {payload_ratio:6.2f} of tipg's default response (goal "
        f"<= 0.5: the payload simplification saves); {same_ratio:.2f} of tipg's doing the same "
        "work"
    )
    lines.append(
        f"  {'':<22} sent to a client accepting gzip: {wire_ratio:.2f} (both compress); "
        f"both bodies gzipped at -6: {packed_ratio:.2f}"
    )
    lines.append(
        f"  {'':<22} (tipg has no option for fewer digits: with simplify= its coordinates are "
        "snapped to the tolerance's grid and written with up to 9 decimals; wangge writes as "
        "many as the tolerance needs)"
    )
    goals.at_most(
        "items_payload",
        "items body / tipg's default body (full geometry, every property: different work, "
        "the saving of simplifying)",
        payload_ratio,
        0.5,
    )

    top = max(conns)
    p99 = {
        k.replace(f"|{top}", ""): v["p99_ms"] for k, v in results.items() if k.endswith(f"|{top}")
    }
    lines.append(f"p99 at {top} connections, ms:")
    for k, v in p99.items():
        lines.append(f"  {k.replace('|', ' '):<40}{v:8.1f}")
    figures.update(
        ratios=ratios,
        payload_ratio=payload_ratio,
        payload_ratio_same_work=same_ratio,
        wire_ratio=wire_ratio,
        packed_ratio=packed_ratio,
        p99=p99,
    )
    return {"text": "\n".join(lines), "figures": figures}


if __name__ == "__main__":
    sys.exit(main())

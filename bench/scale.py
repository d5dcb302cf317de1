"""Cost curves: how lookups, assignment, import, tiles, items and the report grow with the data.

Three sizes, each in its own database on the project's cluster (``wangge_scale_<x>x``, kept
between runs and rebuilt only when the recipe changed; ``--drop`` drops them at the end):

- **1×**: the Guiyang demo's areas (:func:`fixtures.guiyang.build_guiyang_records`: 10
  county-level divisions, 111 communities, 345 grids) and ``--incidents`` incidents (default
  20,000: about a week of Guiyang's cases at the issue's 1 M a year).
- **10×**: three prefecture cities (Guiyang, Zunyi, Anshun: 30 county-level divisions) cut by
  :mod:`fixtures.province` into 3,450 grids, and 10× the incidents.
- **100×**: all of Guizhou (9 cities, 88 county-level divisions) cut into 34,500 grids (about
  1,100 people each: the dense grids of a provincial platform), and 100× the incidents
  (2,000,000 by default: four months of a province at ~6 M cases a year).

At every size the other entities (facilities, units, members, care households) come from
:func:`fixtures.province.build_province_entities`, and incidents are spread by population over
the size's communities (:func:`fixtures.province.province_incidents`) and written with COPY
from numpy arrays through the service's bulk path (cells from its rasterised index): the
10× and 100× data are generated, not inserted row by row. Incidents follow people, so the
urban core of Guiyang holds ~15× more incidents at 100× than at 1× (its share of the
province's people): tiles and items over it do more work per request at larger sizes, and
their table says how much (features per tile).

Measured at each size, one uvicorn worker per size, all three up at once; after the
lookups, each operation is measured for every size before the next operation, in
alternating order, so drift in the machine's other load falls on every size alike:

- ``lookup``: ``GET /lookup`` under ``wrk -c 32`` (points where people live, 10 % anywhere in
  the covered bbox); rounds alternate between sizes (median of ``--rounds``) so the
  machine's other load falls on every size alike. Unit: one lookup. Also the CPU a lookup
  cost the server process and PostgreSQL's backends (µs per request, from /proc), which the
  machine's other load disturbs far less than throughput.
- ``batch``: ``POST /lookup/batch`` with 1,000 points, one request at a time. Unit: a point.
- ``assign build`` / ``assign``: the service's :class:`service.bulk.CellAssigner` of the
  generation (unit: a grid) and assigning 1,000,000 points with it (unit: a point).
- ``import``: ``service.transfer.import_file`` of 100,000 incidents (CSV, WGS84: validate,
  assign, COPY, the incident table's triggers), rolled back; the generation's assigner is
  built before (a process builds it once: ``assign build``). Unit: a row.
- ``tile incidents`` / ``tile grids``, uncached (first request of each tile after the server
  started) and cached (the median of :data:`CACHED_PASSES` passes, every answer a cache hit):
  5 z12, 12 z13 and 24 z14 tiles over Guiyang's urban core, the same tiles at every size, one
  request at a time with this process's garbage collector paused. Unit: a tile. Beside the
  time, the CPU the server process spent per tile (its threads' run time, to the
  nanosecond): what a cache hit costs the server, which the machine's other load moves far
  less.
- ``items``: OGC API ``/ogc/collections/{incidents,grids}/items`` with ``limit=1000`` and a
  bbox. Unit: a feature.
- ``report``: ``GET /analysis/report?area=520121`` (the coverage report of Kaiyang county,
  which every size has; best of 2). Unit: a report (its grids and incidents are printed).

Printed per operation and size: time per unit, the exponent ``b`` of a least-squares fit
``time per unit ∝ size^b`` over the sizes (0: flat; an operation whose time per unit grows
with the data, b > 0.15, is marked), the work per unit where it varies, then the database size
and the peak RSS of each server and of this process.

Goals (the issue's): single lookups at 100× keep ≥ 0.8× their 1× throughput; the coverage
report of one county takes ≤ 2 s at 100×. Checks: every answer 2xx, lookups equal to a plain
``ST_Covers`` on the grids. Run: ``.venv/bin/python -m bench.scale [--sizes 1,10,100]
[--incidents 50000] [--seconds 10] [--rounds 3] [--drop] [--quick] [--ops tiles,items]``
(``--quick``: 1× and 10×, 5,000 incidents per 1×, 2 s rounds; ``--ops``: only these of
``lookup`` and the operations, with only their goals). The first full run builds the
databases (100×: about half an hour on 2 shared cores, most of it the 2 M incidents' COPY
through their statement triggers); later runs reuse them.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import text

from bench.common import database_url, lookup_lua, run_wrk, start_uvicorn, stop
from bench.goals import Goals
from bench.lookup import expected_grids
from fixtures.province import CITY_POPULATION
from service.db import ensure_database, make_engine, migrate

SEED = 2014
BASE_PORT = 8791
BATCH = 1_000
KAIYANG = "520121"
#: Guiyang's urban core, where tiles and items are read at every size.
CORE = (106.60, 26.50, 106.80, 26.70)
#: The servers' settings: no deadline sweep (its writes would drop cached tiles and load the
#: database while lookups are measured; bench.dispatch measures it).
SERVER_ENV = {"WANGGE_DB_POOL_SIZE": "20", "WANGGE_DISPATCH_SWEEP_SECONDS": "0"}


@dataclass(frozen=True)
class Size:
    x: int
    cities: tuple[str, ...] | None  # None: the Guiyang demo's areas
    grids: int

    @property
    def db(self) -> str:
        return f"wangge_scale_{self.x}x"


SIZES = {
    1: Size(1, None, 345),
    10: Size(10, ("520100", "520300", "520400"), 3_450),
    100: Size(100, tuple(sorted(CITY_POPULATION)), 34_500),
}


def _recipe(size: Size, incidents: int) -> str:
    return f"bench.scale v2 {size.x}x: {size.grids} grids, {incidents} incidents, seed {SEED}"


def prepare(size: Size, incidents: int) -> tuple[str, float]:
    """Return (url, seconds spent building) of the size's database, built when needed."""
    from fixtures.guiyang import build_guiyang_records
    from fixtures.province import build_province_entities, build_province_records
    from service.repositories import boundaries

    url = database_url(size.db)
    recipe = _recipe(size, incidents)
    ensure_database(url)
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        have = conn.execute(
            text("SELECT description FROM generation WHERE active ORDER BY id DESC LIMIT 1")
        ).scalar()
    engine.dispose()
    if have == recipe:
        return url, 0.0
    if have is not None:  # another recipe: start again
        print(f"{size.db}: built as {have!r}; rebuilding", flush=True)
        with (
            make_engine(database_url("postgres"))
            .connect()
            .execution_options(isolation_level="AUTOCOMMIT") as conn
        ):
            conn.execute(text(f'DROP DATABASE "{size.db}" WITH (FORCE)'))
        ensure_database(url)
        migrate(url)
    started = time.perf_counter()
    print(f"{size.db}: building {recipe}", flush=True)
    if size.cities is None:
        records = build_guiyang_records(seed=SEED)
    else:
        records = build_province_records(
            cities=size.cities, grids=size.grids, seed=SEED, progress=None
        )
    print(f"  {len(records):,} areas generated ({time.perf_counter() - started:.0f} s)", flush=True)
    engine = make_engine(url)
    with engine.begin() as conn:
        gen = boundaries.create_generation(conn, description=recipe)
        boundaries.write_areas(conn, generation_id=gen, records=records, source="bench.scale")
        boundaries.activate_generation(conn, generation_id=gen)
        print(f"  areas written ({time.perf_counter() - started:.0f} s)", flush=True)
        entities = build_province_entities(
            conn, seed=SEED, incidents=incidents, progress=lambda m: print(m, flush=True)
        )
        print(f"  {entities}", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    seconds = time.perf_counter() - started
    print(f"  built in {seconds:.0f} s", flush=True)
    return url, seconds


def drop(size: Size) -> None:
    with (
        make_engine(database_url("postgres"))
        .connect()
        .execution_options(isolation_level="AUTOCOMMIT") as conn
    ):
        conn.execute(text(f'DROP DATABASE IF EXISTS "{size.db}" WITH (FORCE)'))


# -- what is measured -------------------------------------------------------------------------
@dataclass
class Env:
    size: Size
    url: str
    port: int
    token: str
    points: np.ndarray  # lookups: where people live, 10 % anywhere in the bbox
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _token(url: str) -> str:
    from service.auth import create_token

    engine = make_engine(url)
    with engine.begin() as conn:
        token = create_token(conn, name="bench.scale", role="admin", area_code=None)
    engine.dispose()
    return token


def _points(url: str, n: int, seed: int) -> np.ndarray:
    from fixtures.province import province_incidents

    engine = make_engine(url)
    with engine.connect() as conn:
        pts, _ = province_incidents(conn, int(n * 0.9), seed=seed)
        box = conn.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent(geom) e FROM area WHERE level = 'city') s"
            )
        ).one()
    engine.dispose()
    rng = np.random.default_rng(seed)
    k = n - len(pts)
    anywhere = np.column_stack([rng.uniform(box[0], box[2], k), rng.uniform(box[1], box[3], k)])
    out = np.vstack([pts, anywhere])
    rng.shuffle(out)
    return np.round(out, 6)


def cpu_seconds(pids) -> float:
    """Return the CPU seconds (user + system) processes ``pids`` have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_seconds(pid: int) -> float:
    """Return the CPU seconds process ``pid``'s live threads have run, to the nanosecond
    (``/proc/<pid>/task/*/schedstat``; :func:`cpu_seconds` counts 10-ms ticks, too coarse
    for a few milliseconds of cache hits)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread ended meanwhile
            continue
    return total / 1e9


def backend_pids(url: str) -> list[int]:
    """Return the server processes of PostgreSQL serving database ``url`` (but this one)."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return [r[0] for r in rows]


def wrk(env: Env, seconds: int, connections: int) -> dict:
    """Run wrk's lookups; add the CPU each lookup cost the server process and PostgreSQL
    (µs per request: a figure the machine's other load disturbs far less than throughput)."""
    backends = backend_pids(env.url)
    server = [env.proc.pid] if env.proc is not None else []
    before = cpu_seconds(server), cpu_seconds(backends)
    try:
        out = run_wrk(
            env.base + "/",
            seconds=seconds,
            connections=connections,
            lua=lookup_lua(env.points[:5000], env.token),
        )
    except RuntimeError as exc:
        alive = env.proc is None or env.proc.poll() is None
        raise RuntimeError(
            f"{env.size.x}x (server {'running' if alive else 'exited'}): {exc}"
        ) from None
    n = max(out["requests"], 1)
    out["server_cpu_us"] = (cpu_seconds(server) - before[0]) / n * 1e6
    out["db_cpu_us"] = (cpu_seconds(backends) - before[1]) / n * 1e6
    return out


def check_lookups(env: Env, n: int) -> list[str]:
    """Return the wrong answers among n single lookups (against plain ST_Covers)."""
    pts = env.points[5000 : 5000 + n]
    want = expected_grids(env.url, pts)
    wrong = []
    with httpx.Client(base_url=env.base, timeout=60, headers=_auth(env)) as client:
        for (lon, lat), w in zip(pts, want, strict=True):
            r = client.get("/lookup", params={"lon": repr(float(lon)), "lat": repr(float(lat))})
            got = (r.json().get("grid") or {}).get("code") if r.status_code == 200 else None
            if r.status_code != 200 or got != w:
                wrong.append(f"{env.size.x}x {lon},{lat}: {r.status_code} {got} (want {w})")
    return wrong


def _auth(env: Env) -> dict:
    return {"Authorization": f"Bearer {env.token}"}


def time_batch(env: Env, rounds: int) -> float:
    """Seconds per point of POST /lookup/batch (1,000 points a request)."""
    spent = 0.0
    with httpx.Client(base_url=env.base, timeout=120, headers=_auth(env)) as client:
        for r in range(rounds):
            chunk = env.points[(r * BATCH) % (len(env.points) - BATCH) :][:BATCH]
            t = time.perf_counter()
            resp = client.post("/lookup/batch", json={"points": chunk.tolist()})
            spent += time.perf_counter() - t
            resp.raise_for_status()
    return spent / (rounds * BATCH)


def time_assign(env: Env, n: int) -> tuple[float, float, int]:
    """(seconds per grid to build the generation's CellAssigner, seconds per point to assign
    n points, grids)."""
    from service.bulk import CellAssigner

    engine = make_engine(env.url)
    with engine.connect() as conn:
        gen = conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar_one()
        rows = conn.execute(
            text(
                "SELECT code, level, path, ST_AsBinary(geom) AS wkb FROM area "
                "WHERE generation_low <= :g AND generation_high >= :g"
            ),
            {"g": gen},
        ).all()
    engine.dispose()
    grids = sum(r.level == "grid" for r in rows)
    t = time.perf_counter()
    assigner = CellAssigner(gen, rows)
    build = time.perf_counter() - t
    rng = np.random.default_rng(5)
    pts = env.points[rng.integers(0, len(env.points), n)]
    t = time.perf_counter()
    assigner.assign(pts[:, 0].copy(), pts[:, 1].copy())
    assign = time.perf_counter() - t
    return build / grids, assign / n, grids


def time_import(env: Env, n: int) -> float:
    """Seconds per row of importing n incidents from a CSV (rolled back)."""
    from fixtures.province import province_incidents
    from service.auth import Principal
    from service.specs.entity_kinds import INCIDENTS
    from service.transfer import import_file

    engine = make_engine(env.url)
    with engine.connect() as conn:
        pts, cols = province_incidents(conn, n, seed=99)
    frame = pd.DataFrame(
        {
            "category": cols["category"],
            "source": cols["source"],
            "description": "",
            "address": "",
            "reported_at": pd.Series(cols["reported_at"])
            .dt.tz_convert("Asia/Shanghai")
            .dt.strftime("%Y-%m-%d %H:%M:%S"),
            "lon": pts[:, 0],
            "lat": pts[:, 1],
        }
    )
    principal = Principal(
        token_id="bench", name="bench", role="admin", area_code=None, scope_path=None
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "incidents.csv"
        frame.to_csv(path, index=False)
        with engine.connect() as conn:
            # The generation's assigner is built once per process and kept (its own row,
            # ``assign build``): a server pays it on its first import, not on every one.
            from service.bulk import cell_assigner

            gen = conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar_one()
            cell_assigner(conn, gen)
            conn.rollback()  # end the reads' transaction: the import gets one of its own
            tx = conn.begin()
            t = time.perf_counter()
            report = import_file(
                conn, INCIDENTS, principal=principal, data=path, filename=path.name, crs="EPSG:4326"
            )
            seconds = time.perf_counter() - t
            tx.rollback()
    engine.dispose()
    if not report.committed:
        raise RuntimeError(f"import refused rows: {report.as_dict()['problems'][:3]}")
    return seconds / n


def core_tiles() -> list[tuple[int, int, int]]:
    """5 z12, 12 z13 and 24 z14 tiles over Guiyang's urban core, spread evenly."""
    out = []
    for z, k in ((12, 5), (13, 12), (14, 24)):
        n = 2**z
        x0 = int((CORE[0] + 180) / 360 * n)
        x1 = int((CORE[2] + 180) / 360 * n)

        y0, y1 = (
            int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
            for lat in (CORE[3], CORE[1])
        )
        tiles = [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
        step = max(1, len(tiles) // k)
        out.extend(tiles[::step][:k])
    return out


#: Rounds of passes over the tiles once they are cached, each round one pass per size in
#: alternating order; the figure is a size's median pass. One pass of 41 hits is ~30 ms of
#: work: one pass per size measured the machine's load of that moment (bench.scale's cached
#: tiles 0.7 -> 4.7 ms from 1x to 100x in one run, 3.3 -> 0.6 ms in the next, no work in the
#: server growing: its CPU per hit is flat).
CACHED_ROUNDS = 25


@contextmanager
def collector_paused():
    """Run the block without this process's cyclic garbage collector.

    The timed loops allocate little, and what they allocate is freed by reference counting;
    a full collection of the bench's heap (the sizes' data, pandas, the assigner: 0.05-0.4 s
    on the loaded machine) started among a few milliseconds of requests would be timed as
    the server's.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def time_tiles(envs: list[Env], layer: str, tiles) -> tuple[dict[int, dict], list[str]]:
    """Time tiles of ``layer`` on every size: one pass over ``tiles`` each (uncached: the
    first request of each since the server started), then :data:`CACHED_ROUNDS` rounds of
    one pass each (cached: every answer must be a cache hit).

    Return per size the figures (s/tile, the server's CPU s/tile, mean KB per tile) and the
    errors seen.
    """
    errors: list[str] = []
    walls: dict[int, list[float]] = {e.size.x: [] for e in envs}
    cpus: dict[int, list[float]] = {e.size.x: [] for e in envs}
    sizes: dict[int, list[int]] = {e.size.x: [] for e in envs}
    clients = {e.size.x: httpx.Client(base_url=e.base, timeout=120, headers=_auth(e)) for e in envs}

    def one_pass(env: Env, cached: bool) -> None:
        client = clients[env.size.x]
        cpu0 = run_seconds(env.proc.pid) if env.proc is not None else math.nan
        t = time.perf_counter()
        for z, x, y in tiles:
            r = client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt")
            if r.status_code not in (200, 204):
                errors.append(f"{env.size.x}x tile {layer}/{z}/{x}/{y}: {r.status_code}")
            elif cached and r.headers.get("x-tile-cache") != "hit":
                errors.append(f"{env.size.x}x tile {layer}/{z}/{x}/{y}: not cached")
            if not cached:
                sizes[env.size.x].append(len(r.content))
        walls[env.size.x].append((time.perf_counter() - t) / len(tiles))
        cpu = run_seconds(env.proc.pid) if env.proc is not None else math.nan
        cpus[env.size.x].append((cpu - cpu0) / len(tiles))

    try:
        with collector_paused():
            for env in envs:
                one_pass(env, cached=False)
            for r in range(CACHED_ROUNDS):
                for env in envs if r % 2 == 0 else envs[::-1]:
                    one_pass(env, cached=True)
    finally:
        for client in clients.values():
            client.close()
    return {
        x: {
            "uncached": walls[x][0],
            "cached": statistics.median(walls[x][1:]),
            "uncached cpu": cpus[x][0],
            "cached cpu": statistics.median(cpus[x][1:]),
            "KB": statistics.mean(sizes[x]) / 1024,
        }
        for x in walls
    }, errors


def time_items(env: Env, layer: str, bbox) -> tuple[float, int, list[str]]:
    """(s per feature, features) of one page of 1,000 in bbox (best of 3)."""
    best, n, errors = math.inf, 0, []
    box = ",".join(map(str, bbox))
    with httpx.Client(base_url=env.base, timeout=120, headers=_auth(env)) as client:
        for _ in range(3):
            t = time.perf_counter()
            r = client.get(f"/ogc/collections/{layer}/items", params={"limit": 1000, "bbox": box})
            spent = time.perf_counter() - t
            if r.status_code != 200:
                errors.append(f"{env.size.x}x items {layer}: {r.status_code} {r.text[:200]}")
                return math.nan, 0, errors
            n = len(r.json()["features"])
            best = min(best, spent)
    return best / max(n, 1), n, errors


def time_report(env: Env) -> tuple[float, list[str]]:
    """Seconds of the coverage report of Kaiyang (best of 2)."""
    best, errors = math.inf, []
    with httpx.Client(base_url=env.base, timeout=600, headers=_auth(env)) as client:
        for _ in range(2):
            t = time.perf_counter()
            r = client.get("/analysis/report", params={"area": KAIYANG})
            best = min(best, time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"{env.size.x}x report: {r.status_code} {r.text[:200]}")
    return best, errors


#: The operations measured after the lookups, each for every size before the next.
OPERATIONS = ("batch", "assign", "import", "tiles", "items", "report")


def measure(op: str, env: Env, out: dict, args) -> list[str]:
    """Measure operation ``op`` of :data:`OPERATIONS` (but tiles: :func:`time_tiles`) on
    ``env`` into ``out``; return the errors seen."""
    errors: list[str] = []
    if op == "batch":
        out["batch"] = time_batch(env, 5 if args.quick else 20)
    elif op == "assign":
        n = 100_000 if args.quick else 1_000_000
        out["assign build"], out["assign"], out["grids"] = time_assign(env, n)
    elif op == "import":
        out["import"] = time_import(env, 10_000 if args.quick else 100_000)
        out["bench rss MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elif op == "items":
        s, n, errs = time_items(env, "incidents", CORE)
        out["items incidents"], out["items incidents n"] = s, n
        errors += errs
        s, n, errs = time_items(env, "grids", (106.8, 26.9, 107.2, 27.3))  # Kaiyang
        out["items grids"], out["items grids n"] = s, n
        errors += errs
    elif op == "report":
        out["report"], errs = time_report(env)
        errors += errs
    else:
        raise ValueError(op)
    return errors


def free_port(start: int) -> int:
    """Return the first port from ``start`` that nothing listens on (another helper's server
    on the machine took the bench's port once: the health check reached it)."""
    import socket

    for port in range(start, start + 100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port from {start}")


def figures(url: str) -> dict:
    engine = make_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT pg_database_size(current_database()) AS bytes, "
                "(SELECT count(*) FROM area WHERE level = 'grid') AS grids, "
                "(SELECT count(*) FROM incident) AS incidents, "
                "(SELECT count(*) FROM area WHERE level = 'grid' AND path LIKE :k) AS k_grids, "
                "(SELECT count(*) FROM incident WHERE district_code = :c) AS k_incidents"
            ),
            {"k": f"%/{KAIYANG}/%", "c": KAIYANG},
        ).one()
    engine.dispose()
    return dict(row._mapping)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def slope(xs, ys) -> float:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = np.isfinite(ys) & (ys > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="of 1, 10, 100")
    parser.add_argument("--incidents", type=int, default=20_000, help="at 1x")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--drop", action="store_true", help="drop the databases at the end")
    parser.add_argument("--quick", action="store_true", help="1x and 10x, small, short")
    parser.add_argument(
        "--ops",
        default=",".join(("lookup", *OPERATIONS)),
        help="what to measure, of lookup, " + ", ".join(OPERATIONS) + " (default: all)",
    )
    args = parser.parse_args(argv)
    chosen = args.ops.split(",")
    unknown = set(chosen) - {"lookup", *OPERATIONS}
    if unknown:
        parser.error(f"--ops: unknown {', '.join(sorted(unknown))}")
    if args.quick:
        args.sizes, args.incidents, args.seconds, args.rounds = "1,10", 5_000, 2, 1
    sizes = [SIZES[int(s)] for s in args.sizes.split(",")]
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    goals = Goals("scale", quick=args.quick)
    n_import = 10_000 if args.quick else 100_000
    n_assign = 100_000 if args.quick else 1_000_000

    envs: list[Env] = []
    built: dict[int, float] = {}
    for i, size in enumerate(sizes):
        url, seconds = prepare(size, args.incidents * size.x)
        built[size.x] = seconds
        port = free_port(BASE_PORT + i if not envs else envs[-1].port + 1)
        envs.append(Env(size, url, port, _token(url), _points(url, 20_000, seed=7)))

    res: dict[int, dict] = {e.size.x: {} for e in envs}
    errors: list[str] = []
    wrong: list[str] = []
    tiles = core_tiles()
    try:
        for env in envs:  # a loaded machine may take minutes to import the app
            env.proc = start_uvicorn(
                "service.app:create_app",
                env.port,
                SERVER_ENV | {"DATABASE_URL": env.url},
                timeout=240,
            )
        for env in envs if "lookup" in chosen else ():
            wrong += check_lookups(env, 50 if args.quick else 200)
            # Warm-up: long enough for every point of the rotation to be looked up once, as
            # in a server that has run for a while (it keeps each grid's chain: a 1 s
            # warm-up left most of 100x's 34,500 grids for the measured rounds to fetch).
            wrk(env, 2 if args.quick else 10, args.connections)
        rounds: dict[int, list[dict]] = {e.size.x: [] for e in envs}
        for r in range(args.rounds if "lookup" in chosen else 0):
            # Alternate the order, so no size always follows another.
            for env in envs if r % 2 == 0 else envs[::-1]:
                rounds[env.size.x].append(wrk(env, args.seconds, args.connections))
        for env in envs if "lookup" in chosen else ():
            out = res[env.size.x]
            rps = statistics.median(w["rps"] for w in rounds[env.size.x])
            bad = sum(w["non_2xx"] + w["socket_errors"] for w in rounds[env.size.x])
            if bad:
                errors.append(f"{env.size.x}x wrk lookups: {bad} non-2xx or socket errors")
            out["lookup"] = 1 / rps
            out["lookup_rps"] = rps
            out["lookup_p99_ms"] = statistics.median(w["p99_ms"] for w in rounds[env.size.x])
            for key in ("server_cpu_us", "db_cpu_us"):
                out[f"lookup_{key}"] = statistics.median(w[key] for w in rounds[env.size.x])
        # Every other operation is measured size after size, one operation at a time, in
        # alternating order: the machine's other load drifts over minutes, and measuring
        # one size's everything before the next's put that drift into the exponents.
        for k, op in enumerate(op for op in OPERATIONS if op in chosen):
            order = envs if k % 2 == 0 else envs[::-1]
            if op == "tiles":  # every size at once: the cached passes alternate
                for layer in ("incidents", "grids"):
                    per_size, errs = time_tiles(order, layer, tiles)
                    for x, got in per_size.items():
                        res[x].update({f"tile {layer} {name}": v for name, v in got.items()})
                    errors += errs
                continue
            for env in order:
                errors += measure(op, env, res[env.size.x], args)
        for env in envs:
            out = res[env.size.x]
            out.update(figures(env.url))
            out["server rss MB"] = peak_rss_mb(env.proc.pid)
            print(out, flush=True)  # the raw figures
            print(
                f"{env.size.x}x measured: {out['grids']:,} grids, {out['incidents']:,} incidents",
                flush=True,
            )
    finally:
        for env in envs:
            if env.proc is not None:
                stop(env.proc)
        if args.drop:
            for env in envs:
                drop(env.size)

    xs = [e.size.x for e in envs]
    col = "".join(f"{f'{x}x':>14}" for x in xs)
    print(
        f"\nscale benchmark: sizes {', '.join(f'{x}x' for x in xs)}; 1 uvicorn worker per size, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'size':<36}{col}")
    for key, label in (
        ("grids", "grids"),
        ("incidents", "incidents"),
        ("k_grids", "Kaiyang grids"),
        ("k_incidents", "Kaiyang incidents"),
    ):
        print(f"{label:<36}" + "".join(f"{res[x][key]:>14,}" for x in xs))
    print(f"{'database size':<36}" + "".join(f"{res[x]['bytes'] / 2**30:>10.2f} GiB" for x in xs))
    print(f"{'build (0: reused)':<36}" + "".join(f"{built[x]:>12.0f} s" for x in xs))
    print(f"\n{'time per unit of work':<36}{col}{'b':>8}  unit")
    ops = [
        ("lookup", f"GET /lookup (wrk -c {args.connections})", "µs/lookup", 1e6),
        ("batch", "POST /lookup/batch", "µs/point", 1e6),
        ("assign build", "CellAssigner build", "ms/grid", 1e3),
        ("assign", f"CellAssigner assign {n_assign:,}", "µs/point", 1e6),
        ("import", f"import {n_import:,} incidents (CSV)", "µs/row", 1e6),
        ("tile incidents uncached", "tile incidents, uncached", "ms/tile", 1e3),
        ("tile incidents cached", "tile incidents, cached", "ms/tile", 1e3),
        ("tile incidents uncached cpu", "tile incidents, uncached: server CPU", "ms/tile", 1e3),
        ("tile incidents cached cpu", "tile incidents, cached: server CPU", "µs/tile", 1e6),
        ("tile grids uncached", "tile grids, uncached", "ms/tile", 1e3),
        ("tile grids cached", "tile grids, cached", "ms/tile", 1e3),
        ("tile grids uncached cpu", "tile grids, uncached: server CPU", "ms/tile", 1e3),
        ("tile grids cached cpu", "tile grids, cached: server CPU", "µs/tile", 1e6),
        ("items incidents", "items incidents (1,000, core)", "µs/feature", 1e6),
        ("items grids", "items grids (Kaiyang bbox)", "µs/feature", 1e6),
        ("report", "coverage report of Kaiyang", "s/report", 1),
    ]
    exponents = {}
    for key, label, unit, scale in ops:
        if any(key not in res[x] for x in xs):  # not measured (--ops)
            continue
        b = slope(xs, [res[x][key] for x in xs])
        exponents[label] = b
        mark = "  GROWS" if b > 0.15 else ""
        print(
            f"{label:<36}"
            + "".join(f"{res[x][key] * scale:>14.3g}" for x in xs)
            + f"{b:>8.2f}  {unit}{mark}"
        )
    print(f"\n{'work per unit':<36}{col}")
    for key, label in (
        ("tile incidents KB", "incident tile, KB (uncached pass)"),
        ("tile grids KB", "grid tile, KB"),
        ("items grids n", "grid items in the Kaiyang bbox"),
        ("lookup_p99_ms", "lookup p99 ms"),
        ("lookup_rps", "lookup req/s"),
        ("lookup_server_cpu_us", "lookup server CPU µs/request"),
        ("lookup_db_cpu_us", "lookup PostgreSQL CPU µs/request"),
    ):
        if all(key in res[x] for x in xs):
            print(f"{label:<36}" + "".join(f"{res[x][key]:>14,.1f}" for x in xs))
    print(f"{'server peak RSS':<36}" + "".join(f"{res[x]['server rss MB']:>11.0f} MB" for x in xs))
    if all("bench rss MB" in res[x] for x in xs):
        print(
            f"{'bench process peak RSS (so far)':<36}"
            + "".join(f"{res[x]['bench rss MB']:>11.0f} MB" for x in xs)
        )
    finite = {k: v for k, v in exponents.items() if math.isfinite(v)}
    if finite:
        lo, hi = min(finite, key=finite.get), max(finite, key=finite.get)
        print(
            f"\nslowest-growing: {lo} (b = {finite[lo]:.2f}); "
            f"fastest-growing: {hi} (b = {finite[hi]:.2f})"
        )

    big, small = xs[-1], xs[0]
    if "lookup" in chosen:
        cpu = {x: res[x]["lookup_server_cpu_us"] + res[x]["lookup_db_cpu_us"] for x in (big, small)}
        print(
            f"lookup CPU per request (server + PostgreSQL) at {big}x / at {small}x: "
            f"{cpu[big] / cpu[small]:.2f} (throughput on an idle machine would be about "
            f"{cpu[small] / cpu[big]:.2f}x)"
        )
        goals.at_least(
            f"lookup_{big}x_vs_{small}x",
            f"GET /lookup throughput at {big}x / at {small}x (median of {args.rounds} "
            f"alternating wrk rounds)",
            res[big]["lookup_rps"] / res[small]["lookup_rps"],
            0.8,
        )
    if "report" in chosen:
        goals.at_most(
            f"report_county_{big}x",
            f"coverage report of Kaiyang at {big}x ({res[big]['k_grids']:,} grids, "
            f"{res[big]['k_incidents']:,} incidents)",
            res[big]["report"],
            2.0,
            unit="s",
        )
    goals.check(
        "scale_lookup_answers",
        "single lookups equal plain ST_Covers on the grids",
        not wrong,
        "; ".join(wrong[:3]),
    )
    goals.check("scale_all_2xx", "every request answered 2xx", not errors, "; ".join(errors[:3]))
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())

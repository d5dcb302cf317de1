"""Incident bins of a statement: binned once at the finest zoom, the coarser ones rolled up.

0012/0021 computed every incident's tile at each of the eight zooms (a CROSS JOIN of the
statement's rows with the zooms, then one GROUP BY over rows × 8) and upserted the groups
with ``INSERT ... ON CONFLICT``. Measured on 200,000 imported incidents of bench.bulk_import
(backend CPU, same machine, side by side): grouping 2.8 s, upsert of the 615k bins 2.4 s;
the bins were 40 % of the import's database time.

Now the statement's rows are grouped once, at zoom 21 (one tile computation per row), and
each coarser zoom is grouped from the next finer one's groups (a tile number at zoom z is the
one at zoom z + k shifted right by k: the formula scales by an exact power of two, so the
result is bit for bit the per-zoom formula's, clamping included); zoom 0 (the counters) from
zoom 15's. Each level groups fewer rows than the last. The groups then go in as an UPDATE of
the bins that exist and a plain INSERT of the others instead of a speculative insertion per
bin: every statement that writes bins holds the event lock (0015), so no other writer can
add a bin in between; :func:`incident_bins_rebuild` now takes that lock too. Measured as
above: grouping 0.9 s, whole trigger 3.5 s against 4.4–5.2 s. The bins are the same (keys,
counts; sums of coordinates up to the order of additions).
"""

import importlib

from alembic import op

revision = "0022"
down_revision = "0021"

_bins = importlib.import_module("service.migrations.versions.0012_incident_bins")
_lifecycle = importlib.import_module("service.migrations.versions.0010_case_lifecycle")
_v21 = importlib.import_module("service.migrations.versions.0021_incident_bins_every_zoom")

LOCK = f"PERFORM pg_advisory_xact_lock({_lifecycle.EVENT_LOCK});"


def rolled_up(source: str, zooms: tuple[int, ...] = _v21.ZOOMS) -> str:
    """Return the SELECT of the bins (z, x, y, status, area_path, n, sx, sy) of ``source``
    (rows of status, area_path, lon, lat, s: +1/-1), at ``zooms``, that change anything."""
    levels = sorted(zooms, reverse=True)
    top = levels[0]
    # 0012's Web Mercator tile numbers, at the finest zoom only.
    lat = "least(greatest(d.lat, -85.0511), 85.0511)"
    x = f"least(greatest(floor((d.lon + 180) / 360 * 2 ^ {top}), 0), 2 ^ {top} - 1)::integer"
    y = (
        f"least(greatest(floor((1 - ln(tan(radians({lat})) + 1 / cos(radians({lat}))) / pi())"
        f" / 2 * 2 ^ {top}), 0), 2 ^ {top} - 1)::integer"
    )
    ctes = [
        f"""b{top} AS MATERIALIZED (
            SELECT {x} AS x, {y} AS y, d.status, d.area_path, sum(d.s) AS n,
                   sum(d.s * d.lon) AS sx, sum(d.s * d.lat) AS sy
            FROM ({source}) d GROUP BY 1, 2, 3, 4)"""
    ]
    for finer, z in zip(levels, levels[1:], strict=False):
        k = finer - z
        ctes.append(
            f"""b{z} AS MATERIALIZED (
            SELECT x >> {k} AS x, y >> {k} AS y, status, area_path, sum(n) AS n,
                   sum(sx) AS sx, sum(sy) AS sy
            FROM b{finer} GROUP BY 1, 2, 3, 4)"""
        )
    union = " UNION ALL ".join(
        f"SELECT CAST({z} AS smallint) AS z, x, y, status, area_path, n, sx, sy FROM b{z}"
        for z in levels
    )
    return (
        f"WITH {', '.join(ctes)} SELECT * FROM ({union}) a WHERE a.n <> 0 OR a.sx <> 0 OR a.sy <> 0"
    )


def _add(source: str) -> str:
    """Return the statement adding the bins of ``source`` to ``incident_bin`` (event lock
    held: no other writer adds a bin meanwhile)."""
    key = "(b.z, b.x, b.y, b.status, b.area_path) = (a.z, a.x, a.y, a.status, a.area_path)"
    return f"""
        WITH a AS MATERIALIZED ({rolled_up(source)}),
        u AS (
            UPDATE incident_bin b SET n = b.n + a.n, sx = b.sx + a.sx, sy = b.sy + a.sy
            FROM a WHERE {key}
            RETURNING b.z, b.x, b.y, b.status, b.area_path
        )
        INSERT INTO incident_bin (z, x, y, status, area_path, n, sx, sy)
        SELECT a.z, a.x, a.y, a.status, a.area_path, a.n, a.sx, a.sy FROM a
        WHERE NOT EXISTS (SELECT FROM u b WHERE {key})
        ORDER BY 1, 2, 3, 4, 5
    """


def upgrade() -> None:
    moved = _bins.MOVED
    updated = (
        f"SELECT o_status AS status, o_path AS area_path, o_lon AS lon, o_lat AS lat, -1 AS s "
        f"FROM ({moved}) m UNION ALL SELECT n_status, n_path, n_lon, n_lat, 1 FROM ({moved}) m"
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION incident_bins_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {LOCK}
                {_add(_bins._rows("new_rows", 1))};
            ELSIF TG_OP = 'DELETE' THEN
                {LOCK}
                {_add(_bins._rows("old_rows", -1))};
            ELSIF (SELECT count(*) FROM ({moved}) m) > 0 THEN
                {LOCK}
                {_add(updated)};
            END IF;
            RETURN NULL;
        END $$;

        CREATE OR REPLACE FUNCTION incident_bins_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            total bigint;
        BEGIN
            {LOCK}
            DELETE FROM incident_bin;
            INSERT INTO incident_bin (z, x, y, status, area_path, n, sx, sy)
            SELECT * FROM ({rolled_up(_bins._rows("incident", 1))}) r ORDER BY 1, 2, 3, 4, 5;
            SELECT coalesce(sum(n), 0) INTO total FROM incident_bin WHERE z = 0;
            RETURN total;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(_v21._with(_v21._v18._function(True), _v21.ZOOMS))
    op.execute(_v21._rebuild(_v21.ZOOMS))

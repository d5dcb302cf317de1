"""Incident counts kept current on write: per area and per map bin, for counts and clusters.

At a year of cases (1 M incidents) counting them per request does not hold: a grid tile's
``open_incidents`` recounted every grid's incidents (28–49 tiles/s), and an incident tile at
zoom 12 drew 5,000 of 60,000 points. ``incident_bin`` holds how many incidents there are, by
status and by the area chain they lie in (``area_path``; '' outside every area), at one place
per ``z``:

- ``z = 0`` (x = y = 0): one row per (area path, status): the counters the areas'
  ``open_incidents`` and the pages' totals sum, by path prefix;
- ``z`` in 15, 17, 19, 21: per Web Mercator tile (x, y) of that zoom, with the sums of the
  points' longitudes and latitudes (``sx``, ``sy``): an incident tile at zoom z draws the
  bins of zoom z + 5 (32 × 32 per tile) as clusters at their centroids when it holds too many
  points, reading at most 4,096 rows whatever the table holds.

Statement-level triggers with transition tables keep it current (one grouped upsert per
statement, in key order so concurrent writers lock rows in the same order); an UPDATE that
moves no incident between statuses, areas or places writes nothing. They stay on the parent
of a partitioned ``incident`` (PostgreSQL passes every partition's rows). Rows leaving or
entering ``incident`` without triggers (a partition detached or attached, triggers disabled)
are followed by ``SELECT incident_bins_rebuild()``, which recounts in one statement.
"""

from alembic import op

revision = "0012"
down_revision = "0011"

#: The zooms binned besides the counters (z = 0). service.specs.map_layers.INCIDENT_BIN_ZOOMS
#: reads the same zooms (tests/service/test_layers.py checks they agree).
ZOOMS = (0, 15, 17, 19, 21)


def _upsert(source: str) -> str:
    """Return the upsert of the bins of ``source`` (status, area_path, lon, lat, s: +1/-1)."""
    zooms = "{" + ",".join(map(str, ZOOMS)) + "}"
    # Web Mercator tile numbers of the point at zoom l.z (latitudes clamped to the
    # projection's; z = 0 is the counter: x = y = 0).
    lat = "least(greatest(d.lat, -85.0511), 85.0511)"
    x = "least(greatest(floor((d.lon + 180) / 360 * 2 ^ l.z), 0), 2 ^ l.z - 1)::integer"
    y = (
        f"least(greatest(floor((1 - ln(tan(radians({lat})) + 1 / cos(radians({lat}))) / pi())"
        " / 2 * 2 ^ l.z), 0), 2 ^ l.z - 1)::integer"
    )
    return f"""
        INSERT INTO incident_bin AS b (z, x, y, status, area_path, n, sx, sy)
        SELECT l.z, {x}, {y}, d.status, d.area_path, sum(d.s), sum(d.s * d.lon),
               sum(d.s * d.lat)
        FROM ({source}) d CROSS JOIN unnest('{zooms}'::smallint[]) AS l(z)
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(d.s) <> 0 OR sum(d.s * d.lon) <> 0 OR sum(d.s * d.lat) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (z, x, y, status, area_path) DO UPDATE
        SET n = b.n + EXCLUDED.n, sx = b.sx + EXCLUDED.sx, sy = b.sy + EXCLUDED.sy
    """


def _rows(table: str, sign: int) -> str:
    return (
        f"SELECT status, coalesce(area_path, '') AS area_path, ST_X(geom) AS lon, "
        f"ST_Y(geom) AS lat, {sign} AS s FROM {table}"
    )


#: Of an UPDATE, only the incidents whose status, area chain or place changed.
MOVED = """
    SELECT o.status AS o_status, coalesce(o.area_path, '') AS o_path, ST_X(o.geom) AS o_lon,
           ST_Y(o.geom) AS o_lat, n.status AS n_status, coalesce(n.area_path, '') AS n_path,
           ST_X(n.geom) AS n_lon, ST_Y(n.geom) AS n_lat
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE o.status <> n.status OR o.area_path IS DISTINCT FROM n.area_path
       OR ST_X(o.geom) <> ST_X(n.geom) OR ST_Y(o.geom) <> ST_Y(n.geom)
"""


def upgrade() -> None:
    updated = (
        f"SELECT o_status AS status, o_path AS area_path, o_lon AS lon, o_lat AS lat, -1 AS s "
        f"FROM ({MOVED}) m UNION ALL SELECT n_status, n_path, n_lon, n_lat, 1 FROM ({MOVED}) m"
    )
    op.execute(
        f"""
        CREATE TABLE incident_bin (
            z smallint NOT NULL,
            x integer NOT NULL,
            y integer NOT NULL,
            status text NOT NULL,
            area_path text COLLATE "C" NOT NULL,
            n integer NOT NULL,
            sx double precision NOT NULL,
            sy double precision NOT NULL,
            CONSTRAINT incident_bin_pkey PRIMARY KEY (z, x, y, status, area_path)
        );
        -- The counters by path: an area's are its path and the range of its descendants'
        -- (digits and '/' only: path <= p < path || '0').
        CREATE INDEX incident_bin_area ON incident_bin (area_path, status) WHERE z = 0;

        CREATE FUNCTION incident_bins_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_upsert(_rows("new_rows", 1))};
            ELSIF TG_OP = 'DELETE' THEN
                {_upsert(_rows("old_rows", -1))};
            ELSE
                {_upsert(updated)};
            END IF;
            RETURN NULL;
        END $$;

        CREATE FUNCTION incident_bins_clear() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE incident_bin;
            RETURN NULL;
        END $$;

        CREATE FUNCTION incident_bins_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            total bigint;
        BEGIN
            DELETE FROM incident_bin;
            {_upsert(_rows("incident", 1))};
            SELECT coalesce(sum(n), 0) INTO total FROM incident_bin WHERE z = 0;
            RETURN total;
        END $$;

        CREATE TRIGGER incident_bins_ins AFTER INSERT ON incident
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION incident_bins_apply();
        CREATE TRIGGER incident_bins_upd AFTER UPDATE ON incident
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION incident_bins_apply();
        CREATE TRIGGER incident_bins_del AFTER DELETE ON incident
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION incident_bins_apply();
        CREATE TRIGGER incident_bins_truncate AFTER TRUNCATE ON incident
            FOR EACH STATEMENT EXECUTE FUNCTION incident_bins_clear();

        SELECT incident_bins_rebuild();
        ANALYZE incident_bin;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS incident_bins_ins ON incident;
        DROP TRIGGER IF EXISTS incident_bins_upd ON incident;
        DROP TRIGGER IF EXISTS incident_bins_del ON incident;
        DROP TRIGGER IF EXISTS incident_bins_truncate ON incident;
        DROP FUNCTION IF EXISTS incident_bins_apply();
        DROP FUNCTION IF EXISTS incident_bins_clear();
        DROP FUNCTION IF EXISTS incident_bins_rebuild();
        DROP TABLE IF EXISTS incident_bin;
        """
    )

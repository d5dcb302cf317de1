"""Locate points on the stored boundaries, deepest level first (as the lookup API does).

The subdivided parts only find candidates through their index; covering is decided by
ST_Covers on the area's own geometry, so a point on an edge that a subdivision cut meets is
judged like any other, and exactly as the bulk path's cell index judges it. Levels are
searched from the grid up, and only while no deeper level covered the point.
"""

from alembic import op

revision = "0008"
down_revision = "0007"

LEVEL = """
    SELECT a.path, a.depth FROM area_part p JOIN area a ON a.id = p.area_id
    WHERE p.depth = {depth} AND p.geom && pt
      AND p.generation_low <= gen AND p.generation_high >= gen
      AND ST_Covers(a.geom, pt)
    ORDER BY p.code LIMIT 1
"""


def upgrade() -> None:
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION locate_point(pt geometry, gen integer,
            OUT area_path text, OUT grid_code text, OUT community_code text,
            OUT district_code text, OUT city_code text)
        LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
        DECLARE
            found record;
        BEGIN
            {LEVEL.format(depth=3).strip()} INTO found;
            IF found IS NULL THEN {LEVEL.format(depth=2).strip()} INTO found; END IF;
            IF found IS NULL THEN {LEVEL.format(depth=1).strip()} INTO found; END IF;
            IF found IS NULL THEN {LEVEL.format(depth=0).strip()} INTO found; END IF;
            IF found IS NULL THEN
                RETURN;
            END IF;
            area_path := found.path;
            grid_code := CASE WHEN found.depth >= 3 THEN split_part(found.path, '/', 4) END;
            community_code := CASE WHEN found.depth >= 2 THEN split_part(found.path, '/', 3) END;
            district_code := CASE WHEN found.depth >= 1 THEN split_part(found.path, '/', 2) END;
            city_code := split_part(found.path, '/', 1);
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION locate_point(pt geometry, gen integer,
            OUT area_path text, OUT grid_code text, OUT community_code text,
            OUT district_code text, OUT city_code text)
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT d.path,
                   CASE WHEN d.depth >= 3 THEN split_part(d.path, '/', 4) END,
                   CASE WHEN d.depth >= 2 THEN split_part(d.path, '/', 3) END,
                   CASE WHEN d.depth >= 1 THEN split_part(d.path, '/', 2) END,
                   split_part(d.path, '/', 1)
            FROM (
                SELECT a.path, a.depth
                FROM area_part p JOIN area a ON a.id = p.area_id
                WHERE ST_Covers(p.geom, pt)
                  AND p.generation_low <= gen AND p.generation_high >= gen
                ORDER BY p.depth DESC, p.code
                LIMIT 1
            ) d
        $$;
        """
    )

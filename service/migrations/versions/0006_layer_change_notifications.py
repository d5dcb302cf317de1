"""Tell map servers which tiles a write made stale: NOTIFY wangge_changes with bboxes.

Statement-level triggers (one notification per statement, however many rows, thanks to
transition tables) send the extent of the changed points for their own layer and, for
incidents, the extents of the grids, communities and districts whose open-incident counts
moved. Each server process listens and evicts exactly the cached tiles those boxes touch.
"""

from alembic import op

revision = "0006"
down_revision = "0005"

TABLES = {
    "unit": "units",
    "facility": "facilities",
    "care_household": "care-households",
    "incident": "incidents",
}


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION box_json(b box2d) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN b IS NULL THEN NULL
                   ELSE jsonb_build_array(ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)) END
        $$;

        CREATE FUNCTION notify_layer_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            layer text := TG_ARGV[0];
            changed_extent box2d;
            grids text[]; communities text[]; districts text[];
            layers jsonb;
            gen integer := (SELECT max(id) FROM generation WHERE active);
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT ST_Extent(geom), array_agg(DISTINCT grid_code),
                       array_agg(DISTINCT community_code), array_agg(DISTINCT district_code)
                  INTO changed_extent, grids, communities, districts FROM new_rows;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT ST_Extent(geom), array_agg(DISTINCT grid_code),
                       array_agg(DISTINCT community_code), array_agg(DISTINCT district_code)
                  INTO changed_extent, grids, communities, districts FROM old_rows;
            ELSE
                SELECT ST_Extent(geom), array_agg(DISTINCT grid_code),
                       array_agg(DISTINCT community_code), array_agg(DISTINCT district_code)
                  INTO changed_extent, grids, communities, districts
                  FROM (SELECT geom, grid_code, community_code, district_code FROM new_rows
                        UNION ALL
                        SELECT geom, grid_code, community_code, district_code FROM old_rows) c;
            END IF;
            IF changed_extent IS NULL THEN
                RETURN NULL;
            END IF;
            layers := jsonb_build_object(layer, box_json(changed_extent));
            IF layer = 'incidents' THEN
                layers := layers || jsonb_strip_nulls(jsonb_build_object(
                    'grids', (SELECT box_json(ST_Extent(geom)) FROM area WHERE code = ANY(grids)
                              AND generation_low <= gen AND generation_high >= gen),
                    'communities', (SELECT box_json(ST_Extent(geom)) FROM area
                              WHERE code = ANY(communities)
                              AND generation_low <= gen AND generation_high >= gen),
                    'districts', (SELECT box_json(ST_Extent(geom)) FROM area
                              WHERE code = ANY(districts)
                              AND generation_low <= gen AND generation_high >= gen)));
            END IF;
            PERFORM pg_notify('wangge_changes', jsonb_build_object('layers', layers)::text);
            RETURN NULL;
        END $$;
        """
    )
    for table, layer in TABLES.items():
        op.execute(
            f"""
            CREATE TRIGGER {table}_changes_ins AFTER INSERT ON {table}
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION notify_layer_change('{layer}');
            CREATE TRIGGER {table}_changes_upd AFTER UPDATE ON {table}
                REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION notify_layer_change('{layer}');
            CREATE TRIGGER {table}_changes_del AFTER DELETE ON {table}
                REFERENCING OLD TABLE AS old_rows
                FOR EACH STATEMENT EXECUTE FUNCTION notify_layer_change('{layer}');
            """
        )


def downgrade() -> None:
    for table in TABLES:
        for suffix in ("ins", "upd", "del"):
            op.execute(f"DROP TRIGGER {table}_changes_{suffix} ON {table}")
    op.execute("DROP FUNCTION notify_layer_change")
    op.execute("DROP FUNCTION box_json")

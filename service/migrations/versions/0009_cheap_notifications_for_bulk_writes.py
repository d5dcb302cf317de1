"""Bulk writes announce "this whole layer changed" instead of computing exact boxes.

Computing the extent and the distinct cells of a million-row COPY cost seconds; a write that
large changes most tiles of its layers anyway. Up to 5,000 rows per statement the boxes stay
exact (an edit to one grid never flushes the city).
"""

from alembic import op

revision = "0009"
down_revision = "0008"

BULK_ROWS = 5000


def upgrade() -> None:
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION notify_layer_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            layer text := TG_ARGV[0];
            changed integer;
            changed_extent box2d;
            grids text[]; communities text[]; districts text[];
            layers jsonb;
            everywhere jsonb := '[-180, -90, 180, 90]';
            gen integer := (SELECT max(id) FROM generation WHERE active);
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT count(*) INTO changed FROM new_rows;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT count(*) INTO changed FROM old_rows;
            ELSE
                SELECT count(*) INTO changed FROM new_rows;
            END IF;
            IF changed = 0 THEN
                RETURN NULL;
            END IF;
            IF changed > {BULK_ROWS} THEN
                layers := jsonb_build_object(layer, everywhere);
                IF layer = 'incidents' THEN
                    layers := layers || jsonb_build_object('grids', everywhere,
                        'communities', everywhere, 'districts', everywhere);
                END IF;
                PERFORM pg_notify('wangge_changes', jsonb_build_object('layers', layers)::text);
                RETURN NULL;
            END IF;
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


def downgrade() -> None:
    pass  # 0006's exact-box function is recreated by downgrading past 0006

"""Cell triggers that a bulk writer can skip without a function call per row.

A bulk import assigns cells itself (same rule, a rasterised index, identical results) and
COPYs rows with their cells filled in; the ``WHEN`` conditions are evaluated by PostgreSQL
without entering PL/pgSQL, so those rows cost nothing extra.
"""

from alembic import op

revision = "0004"
down_revision = "0003"

TABLES = ("unit", "facility", "care_household", "incident")


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION locate_entity() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            gen integer := (SELECT max(id) FROM generation WHERE active);
            loc record;
        BEGIN
            SELECT * INTO loc FROM locate_point(NEW.geom, gen);
            NEW.generation := gen;
            NEW.area_path := loc.area_path;
            NEW.grid_code := loc.grid_code;
            NEW.community_code := loc.community_code;
            NEW.district_code := loc.district_code;
            NEW.city_code := loc.city_code;
            IF TG_OP = 'UPDATE' THEN
                NEW.updated_at := now();
            END IF;
            RETURN NEW;
        END $$;
        """
    )
    for table in TABLES:
        op.execute(
            f"""
            DROP TRIGGER {table}_locate ON {table};
            CREATE TRIGGER {table}_locate BEFORE INSERT ON {table}
                FOR EACH ROW WHEN (NEW.generation IS NULL) EXECUTE FUNCTION locate_entity();
            CREATE TRIGGER {table}_relocate BEFORE UPDATE OF geom ON {table}
                FOR EACH ROW EXECUTE FUNCTION locate_entity();
            """
        )
    op.execute(
        """
        DROP TRIGGER incident_zreported ON incident;
        CREATE TRIGGER incident_zreported BEFORE INSERT ON incident
            FOR EACH ROW WHEN (NEW.reported_generation IS NULL)
            EXECUTE FUNCTION incident_reported_cell();
        """
    )


def downgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""
            DROP TRIGGER {table}_relocate ON {table};
            DROP TRIGGER {table}_locate ON {table};
            CREATE TRIGGER {table}_locate BEFORE INSERT OR UPDATE OF geom ON {table}
                FOR EACH ROW EXECUTE FUNCTION locate_entity();
            """
        )

"""Point entities mapped to cells: units, members, care households, facilities, incidents;
access log, idempotency keys, intake sources on tokens.
"""

from alembic import op

revision = "0003"
down_revision = "0002"

# Every point entity carries the cell chain of the generation current when it was written
# (or re-mapped): set in the database by a trigger, so no writer can forget or fake it.
CELL_COLUMNS = """
    generation integer REFERENCES generation(id),
    area_path text,
    grid_code text,
    community_code text,
    district_code text,
    city_code text
"""


def _point_table(name: str, columns: str) -> str:
    return f"""
    CREATE TABLE {name} (
        id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
        {columns},
        geom geometry(Point, 4326) NOT NULL,
        {CELL_COLUMNS},
        properties jsonb NOT NULL DEFAULT '{{}}',
        created_by text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX {name}_geom ON {name} USING gist (geom);
    CREATE INDEX {name}_path ON {name} (area_path text_pattern_ops);
    CREATE INDEX {name}_grid ON {name} (grid_code);
    CREATE TRIGGER {name}_locate BEFORE INSERT OR UPDATE OF geom ON {name}
        FOR EACH ROW EXECUTE FUNCTION locate_entity();
    """


def upgrade() -> None:
    op.execute(
        """
        -- The chain of the deepest area covering a point in a generation, with the same
        -- tie-break as the lookup API: deepest level, then smallest code.
        CREATE FUNCTION locate_point(pt geometry, gen integer,
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

        CREATE FUNCTION locate_entity() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            gen integer := (SELECT max(id) FROM generation WHERE active);
            loc record;
        BEGIN
            -- A bulk writer that assigned cells itself (same rule, faster) says so by
            -- setting generation; everyone else gets the database's answer.
            IF TG_OP = 'INSERT' AND NEW.generation IS NOT NULL THEN
                RETURN NEW;
            END IF;
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
    op.execute(
        _point_table(
            "unit",
            """
            name text NOT NULL CHECK (length(btrim(name)) > 0),
            kind text NOT NULL CHECK (kind IN ('government_agency', 'enterprise',
                'public_institution', 'non_public_firm', 'social_organisation', 'shop')),
            address text NOT NULL DEFAULT '',
            party_org text NOT NULL DEFAULT 'none' CHECK (party_org IN ('none', 'group',
                'branch', 'general_branch', 'committee')),
            party_members integer NOT NULL DEFAULT 0 CHECK (party_members >= 0),
            staff integer CHECK (staff >= 0),
            co_building boolean NOT NULL DEFAULT false
            """,
        )
    )
    op.execute(
        _point_table(
            "facility",
            """
            name text NOT NULL CHECK (length(btrim(name)) > 0),
            kind text NOT NULL CHECK (kind IN ('service_hall', 'service_station',
                'party_member_station')),
            address text NOT NULL DEFAULT '',
            floor_area_m2 numeric CHECK (floor_area_m2 >= 0)
            """,
        )
    )
    op.execute(
        """
        CREATE TABLE member (
            id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            name text NOT NULL CHECK (length(btrim(name)) > 0),
            kind text NOT NULL CHECK (kind IN ('party_member', 'volunteer', 'grid_staff')),
            home_community_code text NOT NULL,
            team_role text CHECK (team_role IN ('party_building_instructor', 'grid_manager',
                'grid_police')),
            serving_grid_code text,
            phone text NOT NULL DEFAULT '',
            properties jsonb NOT NULL DEFAULT '{}',
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            home_path text,
            serving_path text,
            CHECK ((team_role IS NULL) = (serving_grid_code IS NULL))
        );
        CREATE INDEX member_home ON member (home_path text_pattern_ops);
        CREATE INDEX member_grid ON member (serving_grid_code);
        CREATE INDEX member_serving ON member (serving_path text_pattern_ops);

        -- Scope filters compare materialised paths; codes never change meaning, so the
        -- path of a code is that of its newest version.
        CREATE FUNCTION member_paths() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.home_path := (SELECT path FROM area WHERE code = NEW.home_community_code
                              ORDER BY generation_high DESC LIMIT 1);
            NEW.serving_path := (SELECT path FROM area WHERE code = NEW.serving_grid_code
                                 ORDER BY generation_high DESC LIMIT 1);
            IF TG_OP = 'UPDATE' THEN
                NEW.updated_at := now();
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER member_paths BEFORE INSERT OR UPDATE ON member
            FOR EACH ROW EXECUTE FUNCTION member_paths();
        """
    )
    op.execute(
        _point_table(
            "care_household",
            """
            kind text NOT NULL CHECK (kind IN ('hardship', 'dispute', 'laid_off',
                'serious_illness', 'correction', 'elderly_alone')),
            head_name text NOT NULL CHECK (length(btrim(head_name)) > 0),
            address text NOT NULL DEFAULT '',
            notes text NOT NULL DEFAULT '',
            cadre_member_id bigint REFERENCES member(id) ON DELETE SET NULL
            """,
        )
    )
    op.execute(
        _point_table(
            "incident",
            """
            category text NOT NULL CHECK (category IN ('water', 'gas', 'street_light',
                'road', 'sanitation', 'public_order', 'other')),
            description text NOT NULL DEFAULT '',
            address text NOT NULL DEFAULT '',
            source text NOT NULL CHECK (source IN ('hotline_12319', 'patrol', 'resident',
                'camera', 'referral')),
            status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'open', 'closed')),
            reported_at timestamptz NOT NULL DEFAULT now(),
            closed_at timestamptz,
            attachments text[] NOT NULL DEFAULT '{}',
            -- Where it was reported: fixed for ever, even after boundaries are redrawn.
            reported_generation integer REFERENCES generation(id),
            reported_area_path text,
            reported_grid_code text,
            CHECK ((status = 'closed') = (closed_at IS NOT NULL))
            """,
        )
        + """
        CREATE INDEX incident_reported_grid ON incident (reported_grid_code);
        CREATE INDEX incident_status ON incident (status, reported_at);
        CREATE FUNCTION incident_reported_cell() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.reported_generation := NEW.generation;
            NEW.reported_area_path := NEW.area_path;
            NEW.reported_grid_code := NEW.grid_code;
            RETURN NEW;
        END $$;
        -- Runs after incident_locate (triggers fire in name order).
        CREATE TRIGGER incident_zreported BEFORE INSERT ON incident
            FOR EACH ROW EXECUTE FUNCTION incident_reported_cell();
        """
    )
    op.execute(
        """
        ALTER TABLE api_token ADD COLUMN source text CHECK (source IN ('hotline_12319',
            'patrol', 'resident', 'camera', 'referral'));
        ALTER TABLE api_token DROP CONSTRAINT api_token_role_check;
        ALTER TABLE api_token ADD CONSTRAINT api_token_role_check CHECK (role IN ('admin',
            'planner', 'city_dispatcher', 'district_dispatcher', 'community_dispatcher',
            'grid_officer', 'intake'));

        -- Who read which sensitive record, and when (PIPL: record access).
        CREATE TABLE access_log (
            id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            at timestamptz NOT NULL DEFAULT now(),
            token_id text NOT NULL,
            role text NOT NULL,
            action text NOT NULL,
            entity text NOT NULL,
            entity_id bigint NOT NULL
        );
        CREATE INDEX access_log_entity ON access_log (entity, entity_id);

        CREATE TABLE idempotency_key (
            token_id text NOT NULL,
            key text NOT NULL,
            request_sha256 bytea NOT NULL,
            status integer,
            response jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (token_id, key)
        );
        """
    )


def downgrade() -> None:
    for table in (
        "idempotency_key",
        "access_log",
        "incident",
        "care_household",
        "member",
        "facility",
        "unit",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("ALTER TABLE api_token DROP COLUMN source")
    op.execute(
        "DROP FUNCTION IF EXISTS incident_reported_cell, member_paths, locate_entity, locate_point"
    )

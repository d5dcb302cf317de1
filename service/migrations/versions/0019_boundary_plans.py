"""Boundary plans: drafts of an area's grids, edited apart from what dispatch uses.

A plan is a named copy of the grids of one community or county (district) as they were in
its base generation. Its grids are edited in ``boundary_plan_grid`` (``code`` is kept only
while a grid is unchanged from the base; ``key`` names a grid within the plan), every edit is
recorded in ``boundary_plan_edit`` (who, when, what) and bumps the plan's ``version``, which
is the ETag that ``If-Match`` compares. Publishing writes a new generation through the
generation machinery (``service.repositories.boundaries``) and marks the plan published.
"""

from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE boundary_plan (
            id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            name text NOT NULL,
            area_code text NOT NULL,
            area_level text NOT NULL,
            base_generation integer NOT NULL REFERENCES generation(id),
            status text NOT NULL DEFAULT 'draft',
            version integer NOT NULL DEFAULT 1,
            next_key integer NOT NULL DEFAULT 1,
            created_by text NOT NULL,
            created_by_name text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            published_generation integer REFERENCES generation(id),
            published_at timestamptz,
            CONSTRAINT boundary_plan_name_check CHECK (length(btrim(name)) > 0),
            CONSTRAINT boundary_plan_area_level_check
                CHECK (area_level IN ('district', 'community')),
            CONSTRAINT boundary_plan_status_check
                CHECK (status IN ('draft', 'published', 'discarded')),
            CONSTRAINT boundary_plan_published_check
                CHECK ((status = 'published') = (published_generation IS NOT NULL)),
            CONSTRAINT boundary_plan_version_check CHECK (version >= 1)
        );
        CREATE INDEX boundary_plan_area ON boundary_plan (area_code);

        CREATE TABLE boundary_plan_grid (
            plan_id bigint NOT NULL REFERENCES boundary_plan(id) ON DELETE CASCADE,
            key text NOT NULL,
            code text,
            parent_code text NOT NULL,
            name text NOT NULL,
            geom geometry(MultiPolygon, 4326) NOT NULL,
            PRIMARY KEY (plan_id, key),
            CONSTRAINT boundary_plan_grid_geom_check CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom))
        );
        CREATE INDEX boundary_plan_grid_geom ON boundary_plan_grid USING gist (geom);

        CREATE TABLE boundary_plan_edit (
            id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            plan_id bigint NOT NULL REFERENCES boundary_plan(id) ON DELETE CASCADE,
            version integer NOT NULL,
            op text NOT NULL,
            actor text NOT NULL,
            actor_name text NOT NULL DEFAULT '',
            at timestamptz NOT NULL DEFAULT now(),
            removed text[] NOT NULL DEFAULT '{}',
            added text[] NOT NULL DEFAULT '{}',
            payload jsonb NOT NULL DEFAULT '{}',
            CONSTRAINT boundary_plan_edit_plan_id_version_key UNIQUE (plan_id, version)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS boundary_plan_edit")
    op.execute("DROP TABLE IF EXISTS boundary_plan_grid")
    op.execute("DROP TABLE IF EXISTS boundary_plan")

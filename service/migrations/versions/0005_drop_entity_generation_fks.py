"""Drop the foreign keys from entity rows to their generation.

Generations are never deleted, so the keys guarded nothing, while their per-row checks were
most of the cost of a bulk COPY (two RI queries per incident).
"""

from alembic import op

revision = "0005"
down_revision = "0004"

TABLES = ("unit", "facility", "care_household", "incident")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_generation_fkey")
    op.execute("ALTER TABLE incident DROP CONSTRAINT IF EXISTS incident_reported_generation_fkey")
    # What the keys promised, kept where it is cheap: a generation is never deleted.
    op.execute(
        """
        CREATE FUNCTION generation_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'generations are history and are never deleted';
        END $$;
        CREATE TRIGGER generation_no_delete BEFORE DELETE ON generation
            FOR EACH ROW EXECUTE FUNCTION generation_no_delete();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER generation_no_delete ON generation")
    op.execute("DROP FUNCTION generation_no_delete")
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_generation_fkey "
            "FOREIGN KEY (generation) REFERENCES generation(id)"
        )
    op.execute(
        "ALTER TABLE incident ADD CONSTRAINT incident_reported_generation_fkey "
        "FOREIGN KEY (reported_generation) REFERENCES generation(id)"
    )

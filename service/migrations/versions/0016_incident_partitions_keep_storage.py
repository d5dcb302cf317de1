"""A new month of incidents gets the storage parameters every partition has (fillfactor 90).

PostgreSQL takes storage parameters on a partitioned table's leaves only, and ``CREATE TABLE
... (LIKE incident)`` copies none: 0014 set ``fillfactor = 90`` on every leaf that existed,
but the months ``incident_add_partition`` (0013) created afterwards were back at 100, so
the deadline sweep's flag was no longer a HOT update there. The default partition carries
the parameters every leaf should have (0014 set them on it); a new month now copies them
before its first row, whatever they are.
"""

from alembic import op

revision = "0016"
down_revision = "0015"

_FUNCTION = """
CREATE OR REPLACE FUNCTION incident_add_partition(day date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := incident_partition_name(day);
    b record := incident_month_bounds(day);
    storage text := (SELECT array_to_string(reloptions, ', ') FROM pg_class
                     WHERE oid = 'public.incident_default'::regclass);
BEGIN
    IF to_regclass(format('public.%I', name)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF to_regclass(format('archive.%I', name)) IS NOT NULL THEN
        RAISE EXCEPTION 'month % is archived (archive.%): reattach it', to_char(day, 'YYYY-MM'),
            name USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format('CREATE TABLE public.%I (LIKE public.incident INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE)', name);
    IF storage IS NOT NULL THEN
        EXECUTE format('ALTER TABLE public.%I SET (%s)', name, storage);
    END IF;
    EXECUTE format('WITH moved AS (DELETE FROM public.incident_default '
                   'WHERE reported_at >= $1 AND reported_at < $2 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', name) USING b.lo, b.hi;
    EXECUTE format('ALTER TABLE public.incident ATTACH PARTITION public.%I '
                   'FOR VALUES FROM (%L) TO (%L)', name, b.lo, b.hi);
    RETURN name;
END $$;
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    # Months created between 0014 and now: the parameters of the default partition.
    op.execute(
        """
        DO $$
        DECLARE
            storage text := (SELECT array_to_string(reloptions, ', ') FROM pg_class
                             WHERE oid = 'public.incident_default'::regclass);
            leaf regclass;
        BEGIN
            IF storage IS NULL THEN
                RETURN;
            END IF;
            FOR leaf IN
                SELECT c.oid FROM pg_partition_tree('public.incident'::regclass) t
                JOIN pg_class c ON c.oid = t.relid
                WHERE t.isleaf AND c.reloptions IS NULL
            LOOP
                EXECUTE format('ALTER TABLE %s SET (%s)', leaf, storage);
            END LOOP;
        END $$;
        """
    )


_STORAGE_DECLARED = """
    storage text := (SELECT array_to_string(reloptions, ', ') FROM pg_class
                     WHERE oid = 'public.incident_default'::regclass);
"""
_STORAGE_SET = """
    IF storage IS NOT NULL THEN
        EXECUTE format('ALTER TABLE public.%I SET (%s)', name, storage);
    END IF;
"""


def downgrade() -> None:
    # 0013's function; the parameters set on leaves stay (0014's downgrade resets them).
    op.execute(_FUNCTION.replace(_STORAGE_DECLARED, "\n").replace(_STORAGE_SET, "\n"))

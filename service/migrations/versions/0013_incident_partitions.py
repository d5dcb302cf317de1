"""Incidents partitioned by month of ``reported_at``; old months detachable into an archive.

Why: a province files tens of millions of cases a year. Time-bounded reads (the evaluation,
``/incidents`` and ``/cases`` with ``since``/``until``, Open311 ``start_date``/``end_date``,
the 90-day counts) read only the months they ask for (partition pruning, at plan time or,
for the hot pool's generic plans, when the executor starts), each month has its own small
indexes, and a closed year leaves the live table by detaching its partitions (no mass
``DELETE``, no bloat) while staying queryable in schema ``archive``.

Design (issue 12; PostgreSQL 15 rules checked on the project's cluster):

- **Key**: ``PARTITION BY RANGE (reported_at)``, one partition ``incident_YYYY_MM`` per
  calendar month *in Guiyang's time* (bounds at 00:00 Asia/Shanghai on the 1st, the zone
  :data:`service.bulk.LOCAL_TZ` reads local times in), the case's time column
  (``EntitySpec.time_column``). ``reported_at`` is never updated (``IncidentUpdate`` leaves it
  out), so rows never move between partitions.
- **DEFAULT partition** ``incident_default``: the API accepts any ``reported_at`` from year
  1000 to 9000; a month without its own partition lands here rather than failing. The
  migration creates a partition for every month holding rows, and this month and the next
  :data:`MONTHS_AHEAD`; ``incident_ensure_partitions(months_ahead, since)`` (``wangge
  incidents ensure``, to run monthly) creates further ones, moving the rows the default
  partition holds for that month into it first. PostgreSQL refuses ``DETACH PARTITION ...
  CONCURRENTLY`` when a default partition exists ("cannot detach partitions concurrently when
  a default partition exists"): the archive uses a plain ``DETACH`` inside its transaction
  (a short ``ACCESS EXCLUSIVE`` lock on ``incident``; the CLI sets a ``lock_timeout`` so it
  gives up rather than queue behind a long read), which buys atomicity: a month, its events
  and its photos move together or not at all.
- **Primary key** ``(id, reported_at)``: a unique constraint of a partitioned table must
  contain the partition key. ``id`` stays what the API addresses; it is unique because only
  its identity sequence draws it. A lookup by id alone cannot prune: it reads every
  partition's primary-key index, and PostgreSQL 15 locks and opens every partition and its
  indexes for it. Measured (1 M cases over 25 months, 35 partitions, pgbench ``-M prepared``,
  4 clients, ``SELECT ... FROM incident WHERE id = $1``): 9,000–14,000 statements/s
  unpartitioned, 1,000–2,900 partitioned, i.e. 4–7x slower per by-id statement; with
  ``reported_at`` given as well (prunable) 4,800 against 8,300. The cost grows with the number
  of partitions: archive old months (``wangge incidents archive``) to keep it at a year or so.
  What would remove it, not done here: by-id reads that also name the month (an id that
  encodes its month, or a small id→month table read first), so every by-id statement prunes.
- **Indexes and triggers**: every index and every trigger ``incident`` has when this
  migration runs is recreated on the partitioned table from its own definition
  (``pg_get_indexdef``, ``pg_get_triggerdef``), under the same name: indexes become
  partitioned indexes (one per partition, created with each new partition); row triggers
  (cells, lifecycle start) are cloned to every partition; statement triggers with transition
  tables (first events, deleted events, tile notifications) stay on the parent and see the
  rows of every partition (PostgreSQL 10+ allows them on partitioned tables, not on
  partitions).
- **Foreign keys**: ``case_attachment`` references ``incident`` by a unique key holding the
  partition key: it gets ``incident_reported_at`` (filled from the case by a ``BEFORE INSERT``
  trigger, so writers still send only the case id) and ``FOREIGN KEY (incident_id,
  incident_reported_at) REFERENCES incident (id, reported_at) ON DELETE CASCADE``.
  ``case_event`` has no foreign key (0010) and keeps none.
- **Archive**: ``incident_archive(before)`` moves every month partition ending on or before
  ``before`` into schema ``archive`` (``archive.incident_YYYY_MM``) together with its cases'
  events and photos (``archive.case_event_YYYY_MM``, ``archive.case_attachment_YYYY_MM``);
  ``incident_reattach(month)`` brings one month back whole (rows filed for that month
  meanwhile, held by the default partition, join it). Rows that leave or enter ``incident``
  this way fire no triggers: derived counters are rebuilt (``incident_bins_rebuild()`` when
  it exists). The API answers for the attached months only.
- **pg_partman** (``postgresql-15-partman`` 4.7.2 is in Debian) is not used: it would be a
  server extension every deployment and the test cluster must install, for what the three
  functions below do.
"""

from datetime import date

from alembic import op
from sqlalchemy import text

revision = "0013"
down_revision = "0012"

#: Months after the current one that get their partition at migration time.
MONTHS_AHEAD = 3
#: Guiyang's time zone: month boundaries are local midnights (service.bulk.LOCAL_TZ).
ZONE = "Asia/Shanghai"

FUNCTIONS = f"""
-- The bounds of the month containing ``day``, in Guiyang's time.
CREATE FUNCTION incident_month_bounds(day date, OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', day::timestamp) AT TIME ZONE '{ZONE}',
           (date_trunc('month', day::timestamp) + interval '1 month') AT TIME ZONE '{ZONE}'
$$;

CREATE FUNCTION incident_partition_name(day date) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'incident_' || to_char(day, 'YYYY_MM')
$$;

-- Give one month its partition (NULL: it has one). Rows of that month held by the default
-- partition move into it first; they stay in incident, so no trigger fires.
CREATE FUNCTION incident_add_partition(day date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := incident_partition_name(day);
    b record := incident_month_bounds(day);
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
    EXECUTE format('WITH moved AS (DELETE FROM public.incident_default '
                   'WHERE reported_at >= $1 AND reported_at < $2 RETURNING *) '
                   'INSERT INTO public.%I SELECT * FROM moved', name) USING b.lo, b.hi;
    EXECUTE format('ALTER TABLE public.incident ATTACH PARTITION public.%I '
                   'FOR VALUES FROM (%L) TO (%L)', name, b.lo, b.hi);
    RETURN name;
END $$;

-- Partitions for this month and the next ``months_ahead`` (and from ``since`` on, when
-- given); the names of those created.
CREATE FUNCTION incident_ensure_partitions(months_ahead integer DEFAULT 12,
                                           since date DEFAULT NULL)
RETURNS SETOF text LANGUAGE sql AS $$
    SELECT p FROM (
        SELECT incident_add_partition(m::date) AS p
        FROM generate_series(
            date_trunc('month', least(since::timestamp, now() AT TIME ZONE '{ZONE}')),
            date_trunc('month', now() AT TIME ZONE '{ZONE}')
                + make_interval(months => months_ahead),
            interval '1 month') m
    ) made WHERE p IS NOT NULL
$$;

-- Counters derived from incident rows (tile bins, if a migration added them) after rows
-- left or entered it without firing triggers.
CREATE FUNCTION incident_derived_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF to_regprocedure('public.incident_bins_rebuild()') IS NOT NULL THEN
        PERFORM incident_bins_rebuild();
    END IF;
END $$;

-- Move every month partition that ends on or before ``before`` (a month's first day) into
-- schema archive, with its cases' events and photos. Returns the months archived.
CREATE FUNCTION incident_archive(before date) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    part record;
    month text;
BEGIN
    IF before <> date_trunc('month', before)::date THEN
        RAISE EXCEPTION 'archive before the first day of a month, not %', before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CREATE SCHEMA IF NOT EXISTS archive;
    FOR part IN
        SELECT c.relname AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'public.incident'::regclass
          AND c.relname ~ '^incident_[0-9]{{4}}_[0-9]{{2}}$'
          AND to_date(substr(c.relname, 10), 'YYYY_MM') < before
        ORDER BY c.relname
    LOOP
        month := substr(part.name, 10);
        EXECUTE format('CREATE TABLE archive.%I (LIKE public.case_event INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS)', 'case_event_' || month);
        EXECUTE format('WITH moved AS (DELETE FROM public.case_event e USING public.%I i '
                       'WHERE e.incident_id = i.id RETURNING e.*) '
                       'INSERT INTO archive.%I SELECT * FROM moved', part.name,
                       'case_event_' || month);
        EXECUTE format('CREATE TABLE archive.%I (LIKE public.case_attachment '
                       'INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                       'case_attachment_' || month);
        EXECUTE format('WITH moved AS (DELETE FROM public.case_attachment a USING public.%I i '
                       'WHERE a.incident_id = i.id AND a.incident_reported_at = i.reported_at '
                       'RETURNING a.*) INSERT INTO archive.%I SELECT * FROM moved', part.name,
                       'case_attachment_' || month);
        EXECUTE format('ALTER TABLE public.incident DETACH PARTITION public.%I', part.name);
        EXECUTE format('ALTER TABLE public.%I SET SCHEMA archive', part.name);
        RETURN NEXT to_char(to_date(month, 'YYYY_MM'), 'YYYY-MM');
    END LOOP;
    PERFORM incident_derived_rebuild();
END $$;

-- Bring an archived month back, whole; rows filed for it meanwhile join it.
CREATE FUNCTION incident_reattach(day date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := incident_partition_name(day);
    month text := to_char(day, 'YYYY_MM');
    b record := incident_month_bounds(day);
BEGIN
    IF to_regclass(format('archive.%I', name)) IS NULL THEN
        RAISE EXCEPTION 'month % is not archived', to_char(day, 'YYYY-MM')
            USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('WITH moved AS (DELETE FROM public.incident_default '
                   'WHERE reported_at >= $1 AND reported_at < $2 RETURNING *) '
                   'INSERT INTO archive.%I SELECT * FROM moved', name) USING b.lo, b.hi;
    EXECUTE format('ALTER TABLE archive.%I SET SCHEMA public', name);
    EXECUTE format('ALTER TABLE public.incident ATTACH PARTITION public.%I '
                   'FOR VALUES FROM (%L) TO (%L)', name, b.lo, b.hi);
    EXECUTE format('INSERT INTO public.case_event OVERRIDING SYSTEM VALUE '
                   'SELECT * FROM archive.%I', 'case_event_' || month);
    EXECUTE format('INSERT INTO public.case_attachment SELECT * FROM archive.%I',
                   'case_attachment_' || month);
    EXECUTE format('DROP TABLE archive.%I, archive.%I', 'case_event_' || month,
                   'case_attachment_' || month);
    PERFORM incident_derived_rebuild();
    RETURN to_char(day, 'YYYY-MM');
END $$;
"""


def upgrade() -> None:
    conn = op.get_bind()
    # What incident has now, by name, to recreate on the partitioned table: every index but
    # the primary key, every trigger but the foreign keys' internal ones.
    indexes = (
        conn.execute(
            text(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = 'public.incident'::regclass AND NOT i.indisprimary "
                "ORDER BY i.indexrelid"
            )
        )
        .scalars()
        .all()
    )
    triggers = (
        conn.execute(
            text(
                "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "WHERE t.tgrelid = 'public.incident'::regclass AND NOT t.tgisinternal "
                "ORDER BY t.tgname"
            )
        )
        .scalars()
        .all()
    )
    months = (
        conn.execute(
            text(
                f"SELECT DISTINCT date_trunc('month', reported_at AT TIME ZONE '{ZONE}')::date "
                "FROM incident "
                f"UNION SELECT generate_series(date_trunc('month', now() AT TIME ZONE '{ZONE}'), "
                f"date_trunc('month', now() AT TIME ZONE '{ZONE}') "
                f"+ interval '{MONTHS_AHEAD} months', interval '1 month')::date "
                "ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    op.execute(
        """
        CREATE TABLE incident_partitioned (LIKE incident INCLUDING DEFAULTS INCLUDING IDENTITY
            INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)
            PARTITION BY RANGE (reported_at);
        ALTER TABLE incident RENAME TO incident_unpartitioned;
        ALTER TABLE incident_partitioned RENAME TO incident;
        CREATE TABLE incident_default PARTITION OF incident DEFAULT;
        """
    )
    for month in months:
        after = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        op.execute(
            f"CREATE TABLE incident_{month:%Y_%m} PARTITION OF incident FOR VALUES "
            f"FROM ('{month:%Y-%m-%d} 00:00 {ZONE}') TO ('{after:%Y-%m-%d} 00:00 {ZONE}')"
        )
    # No trigger on the new table yet: the rows keep their cells, lifecycle and events.
    op.execute(
        """
        INSERT INTO incident OVERRIDING SYSTEM VALUE SELECT * FROM incident_unpartitioned;
        SELECT setval(pg_get_serial_sequence('incident', 'id'),
                      greatest(nextval(pg_get_serial_sequence('incident_unpartitioned', 'id')),
                               (SELECT max(id) FROM incident_unpartitioned) + 1), false);
        ALTER TABLE case_attachment DROP CONSTRAINT case_attachment_incident_id_fkey;
        DROP TABLE incident_unpartitioned;
        ALTER SEQUENCE incident_partitioned_id_seq RENAME TO incident_id_seq;
        ALTER TABLE incident ADD CONSTRAINT incident_pkey PRIMARY KEY (id, reported_at);
        """
    )
    for ddl in (*indexes, *triggers):
        op.execute(ddl.replace(" ON ONLY public.incident ", " ON public.incident "))
    op.execute(
        """
        ALTER TABLE case_attachment ADD COLUMN incident_reported_at timestamptz;
        UPDATE case_attachment a SET incident_reported_at = i.reported_at
        FROM incident i WHERE i.id = a.incident_id;
        ALTER TABLE case_attachment ALTER COLUMN incident_reported_at SET NOT NULL,
            ADD CONSTRAINT case_attachment_incident_id_incident_reported_at_fkey
            FOREIGN KEY (incident_id, incident_reported_at)
            REFERENCES incident (id, reported_at) ON DELETE CASCADE;

        -- Writers name the case; its month comes from the case.
        CREATE FUNCTION case_attachment_month() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.incident_reported_at :=
                (SELECT reported_at FROM incident WHERE id = NEW.incident_id);
            RETURN NEW;
        END $$;
        CREATE TRIGGER case_attachment_month BEFORE INSERT ON case_attachment
            FOR EACH ROW WHEN (NEW.incident_reported_at IS NULL)
            EXECUTE FUNCTION case_attachment_month();
        """
    )
    op.execute(FUNCTIONS)
    op.execute("ANALYZE incident")


def downgrade() -> None:
    conn = op.get_bind()
    archived = conn.execute(
        text("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive'")
    ).scalar()
    if archived:
        raise RuntimeError("reattach the archived months (wangge incidents reattach) first")
    indexes = (
        conn.execute(
            text(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = 'public.incident'::regclass AND NOT i.indisprimary "
                "ORDER BY i.indexrelid"
            )
        )
        .scalars()
        .all()
    )
    triggers = (
        conn.execute(
            text(
                "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "WHERE t.tgrelid = 'public.incident'::regclass AND NOT t.tgisinternal "
                "AND t.tgparentid = 0 ORDER BY t.tgname"
            )
        )
        .scalars()
        .all()
    )
    op.execute(
        """
        DROP FUNCTION incident_reattach, incident_archive, incident_derived_rebuild,
            incident_ensure_partitions, incident_add_partition, incident_partition_name,
            incident_month_bounds;
        DROP TRIGGER case_attachment_month ON case_attachment;
        DROP FUNCTION case_attachment_month;
        ALTER TABLE case_attachment
            DROP CONSTRAINT case_attachment_incident_id_incident_reported_at_fkey,
            DROP COLUMN incident_reported_at;
        CREATE TABLE incident_plain (LIKE incident INCLUDING DEFAULTS INCLUDING IDENTITY
            INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS);
        INSERT INTO incident_plain OVERRIDING SYSTEM VALUE SELECT * FROM incident;
        SELECT setval(pg_get_serial_sequence('incident_plain', 'id'),
                      nextval(pg_get_serial_sequence('incident', 'id')), false);
        ALTER TABLE case_attachment DROP CONSTRAINT IF EXISTS
            case_attachment_incident_id_incident_reported_at_fkey;
        DROP TABLE incident;
        ALTER TABLE incident_plain RENAME TO incident;
        ALTER SEQUENCE incident_plain_id_seq RENAME TO incident_id_seq;
        ALTER TABLE incident ADD CONSTRAINT incident_pkey PRIMARY KEY (id);
        ALTER TABLE case_attachment ADD CONSTRAINT case_attachment_incident_id_fkey
            FOREIGN KEY (incident_id) REFERENCES incident (id) ON DELETE CASCADE;
        """
    )
    for ddl in (*indexes, *triggers):
        op.execute(ddl.replace(" ON ONLY public.incident ", " ON public.incident "))

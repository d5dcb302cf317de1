"""Incident bins written under the event lock; a grid's incidents indexed with their time.

**Lock order.** 0012's bins triggers locked ``incident_bin`` rows before the case-event trigger
took the event lock (0010, ``pg_advisory_xact_lock``): an import's INSERT held bin rows and
waited for the event lock while the deadline sweep held the event lock and waited for the
same bin rows — a deadlock (seen by bench.scale: an import of 10,000 cases beside the
sweep). Now every statement that changes bins takes the event lock first, so bin rows are
only ever locked under it: incident row locks, then the event lock, then bin rows, the order
case actions already keep. Statements that move no incident between statuses, areas or
places (most lifecycle steps) still take nothing.

**Index.** ``incident_grid`` becomes ``(grid_code, reported_at)``: the planning page's
incidents of the last 90 days per grid are an index-only range per grid (8 s at 1 M cases
reading every incident of each grid, 0.2 s so); lookups by grid alone use it as before.
"""

import importlib

from alembic import op

revision = "0015"
down_revision = "0014"

_bins = importlib.import_module("service.migrations.versions.0012_incident_bins")
_lifecycle = importlib.import_module("service.migrations.versions.0010_case_lifecycle")


def _apply(lock: str) -> str:
    upsert, rows, moved = _bins._upsert, _bins._rows, _bins.MOVED
    updated = (
        f"SELECT o_status AS status, o_path AS area_path, o_lon AS lon, o_lat AS lat, -1 AS s "
        f"FROM ({moved}) m UNION ALL SELECT n_status, n_path, n_lon, n_lat, 1 FROM ({moved}) m"
    )
    return f"""
        CREATE OR REPLACE FUNCTION incident_bins_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {lock}
                {upsert(rows("new_rows", 1))};
            ELSIF TG_OP = 'DELETE' THEN
                {lock}
                {upsert(rows("old_rows", -1))};
            ELSIF EXISTS ({moved}) THEN
                {lock}
                {upsert(updated)};
            END IF;
            RETURN NULL;
        END $$;
    """


def upgrade() -> None:
    op.execute(_apply(f"PERFORM pg_advisory_xact_lock({_lifecycle.EVENT_LOCK});"))
    op.execute("DROP INDEX incident_grid")
    op.execute("CREATE INDEX incident_grid ON incident (grid_code, reported_at)")


def downgrade() -> None:
    op.execute("DROP INDEX incident_grid")
    op.execute("CREATE INDEX incident_grid ON incident (grid_code)")
    op.execute(_apply(""))

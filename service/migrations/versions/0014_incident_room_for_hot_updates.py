"""Incident pages keep 10 % free (fillfactor 90), so the deadline sweep's flag is a HOT update.

The sweep flags a late case by setting ``step_overdue``, ``supervised``, ``version`` and
``updated_at``: columns no index holds. PostgreSQL then writes the new row version on the same
page without touching any index (a heap-only tuple) — provided the page has room. At 100 %
(the default) it never has, and each flagged case cost a new entry in every one of
incident's indexes (~25 buffer hits a row at 1 M cases; 5,000 rows: 819 ms with 0 HOT
updates, 260 ms with 5,000 of 5,000 HOT, EXPLAIN ANALYZE on one machine).

PostgreSQL takes storage parameters on the partitions (leaves) of a partitioned table, not on
the parent (migration 0013): every leaf gets ``fillfactor = 90`` here;
``incident_add_partition`` creates new months with it. Rows already stored are rewritten with
the room (``VACUUM FULL``: an exclusive lock per partition, about a minute at 1 M rows), so
the sweep is HOT from the first day; new rows get it as they are written.
"""

from alembic import op

revision = "0014"
down_revision = "0013"

FILLFACTOR = 90

# Every leaf of incident (itself when it is not partitioned).
_EACH_LEAF = """
DO $$
DECLARE
    leaf regclass;
BEGIN
    FOR leaf IN
        SELECT 'public.incident'::regclass
        WHERE (SELECT relkind FROM pg_class WHERE oid = 'public.incident'::regclass) = 'r'
        UNION ALL
        SELECT relid FROM pg_partition_tree('public.incident'::regclass) WHERE isleaf
    LOOP
        EXECUTE format('ALTER TABLE %s {action}', leaf);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute(_EACH_LEAF.format(action=f"SET (fillfactor = {FILLFACTOR})"))
    with op.get_context().autocommit_block():
        op.execute("VACUUM (FULL, ANALYZE) incident")


def downgrade() -> None:
    op.execute(_EACH_LEAF.format(action="RESET (fillfactor)"))

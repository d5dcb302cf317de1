"""Incident bins at every zoom from 15 to 21: a clustered tile reads 32 × 32 bins, whatever
its zoom.

0012 binned incidents at zooms 15, 17, 19 and 21, and a tile at zoom z clusters the bins of
the first of those at or above z + 5. A tile at an odd zoom (11, 13, 15) read the bins two
zooms finer: 64 × 64 cells, four times the rows, for the same 32 × 32 clusters (at 1 M
incidents a z13 tile of the urban core read 5,844 bin rows against 1,269 for a z14 one, and
took 12 ms at best against 2.6 ms). With 16, 18 and 20 binned too, every clustered tile reads
the bins of z + 5 exactly: at most 1,024 cells, bounded by what it draws.

The cost is on write: each incident counts in eight bins instead of five (the same one
grouped upsert per statement), and the table holds about twice the rows. The trigger
function and the rebuild are 0018's and 0012's with the longer list of zooms, and the bins
are rebuilt once here.
"""

import importlib

from alembic import op

revision = "0021"
down_revision = "0020"

_bins = importlib.import_module("service.migrations.versions.0012_incident_bins")
_v18 = importlib.import_module("service.migrations.versions.0018_incident_bins_moved_by_hash_join")

#: The zooms binned besides the counters (z = 0). service.specs.map_layers.INCIDENT_BIN_ZOOMS
#: reads the same zooms (tests/service/test_incident_volume.py checks the table holds them).
ZOOMS = (0, 15, 16, 17, 18, 19, 20, 21)


def _zooms(zooms: tuple[int, ...]) -> str:
    return "'{" + ",".join(map(str, zooms)) + "}'::smallint[]"


def _with(text: str, zooms: tuple[int, ...]) -> str:
    old = _zooms(_bins.ZOOMS)
    assert old in text
    return text.replace(old, _zooms(zooms))


def _rebuild(zooms: tuple[int, ...]) -> str:
    upsert = _with(_bins._upsert(_bins._rows("incident", 1)), zooms)
    return f"""
        CREATE OR REPLACE FUNCTION incident_bins_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            total bigint;
        BEGIN
            DELETE FROM incident_bin;
            {upsert};
            SELECT coalesce(sum(n), 0) INTO total FROM incident_bin WHERE z = 0;
            RETURN total;
        END $$;
    """


def _apply(zooms: tuple[int, ...]) -> None:
    op.execute(_with(_v18._function(True), zooms))
    op.execute(_rebuild(zooms))
    op.execute("SELECT incident_bins_rebuild()")
    op.execute("ANALYZE incident_bin")


def upgrade() -> None:
    _apply(ZOOMS)


def downgrade() -> None:
    _apply(_bins.ZOOMS)

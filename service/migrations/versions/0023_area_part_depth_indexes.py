"""Point lookups search each level's parts through that level's own GiST index.

lookup_batch.sql tries the levels from the grid up, each with ``p.depth = k AND p.geom &&
point``; the one GiST index on ``area_part (geom)`` returned the parts of every level whose
box holds the point (grid, community, district, city: ~6 rows a point) and the depth was
filtered after reading each from the heap. With one partial index per depth a level's search
reads only that level's parts. Measured with bench.scale's points on its 100x database
(34,500 grids), batches of 16: buffers per point 16 -> 9, backend CPU per point ~55 -> ~37 µs
(1x: 25 -> 21). The general index stays for the other readers of area_part.
"""

from alembic import op

revision = "0023"
down_revision = "0022"

DEPTHS = (0, 1, 2, 3)


def upgrade() -> None:
    for depth in DEPTHS:
        op.execute(
            f"CREATE INDEX area_part_geom_depth{depth} ON area_part USING gist (geom) "
            f"WHERE depth = {depth}"
        )
    op.execute("ANALYZE area_part")


def downgrade() -> None:
    for depth in DEPTHS:
        op.execute(f"DROP INDEX IF EXISTS area_part_geom_depth{depth}")

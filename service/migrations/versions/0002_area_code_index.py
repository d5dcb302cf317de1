"""B-tree index on area codes for the lookup's ancestor chain."""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    # The exclusion constraint's GiST index can answer code = ANY(...), but a B-tree on
    # (code, generations) makes the per-point ancestor lookup an index-only probe.
    op.execute(
        "CREATE INDEX area_code_generations ON area (code, generation_low, generation_high) "
        "INCLUDE (depth, name)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX area_code_generations")

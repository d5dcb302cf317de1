"""Months of incidents are created one writer at a time (a transaction advisory lock).

``incident_ensure_partitions`` is meant to run unattended (cron, or each server at start):
two of them at once both saw a month missing and the second failed on "relation already
exists" once the first committed. ``incident_add_partition`` now takes a transaction
advisory lock before it looks, so the second waits, then finds the month made and does
nothing.
"""

import importlib

from alembic import op

revision = "0017"
down_revision = "0016"

#: Any constant: the lock every month creation takes (pg_advisory_xact_lock(bigint)).
PARTITION_LOCK = 7_716_398_420_114

_0016 = importlib.import_module("service.migrations.versions.0016_incident_partitions_keep_storage")
_CHECK = "BEGIN\n    IF to_regclass(format('public.%I', name)) IS NOT NULL THEN"
assert _0016._FUNCTION.count(_CHECK) == 1
_LOCKED = _0016._FUNCTION.replace(
    _CHECK,
    f"BEGIN\n    PERFORM pg_advisory_xact_lock({PARTITION_LOCK});\n"
    "    IF to_regclass(format('public.%I', name)) IS NOT NULL THEN",
)


def upgrade() -> None:
    op.execute(_LOCKED)


def downgrade() -> None:
    op.execute(_0016._FUNCTION)

"""Alembic environment: runs migrations on the connection or URL the caller configured.

The revisions are written by hand (PostGIS functions, triggers, exclusion constraints), and
``service.tables`` declares the schema they leave behind. It is the target metadata, so
``alembic check`` (and ``tests/service/test_tables_match_migrations.py``) compares the two:
tables, columns, types, nullability, server defaults, identities, keys and indexes. Alembic
does not compare check or exclusion constraints, triggers or functions; the test compares
the constraints through PostgreSQL's catalog instead.
"""

import re

from alembic import context
from sqlalchemy import create_engine

from service.tables import metadata

config = context.config
target_metadata = metadata

# Tables created by extensions, not by the migrations: left out, or autogenerate would
# propose to drop them. PostGIS owns spatial_ref_sys; pgRouting 3 creates no tables;
# PostGIS topology and tiger (not installed) would live in their own schemas, which
# autogenerate does not visit (include_schemas is off).
EXTENSION_TABLES = frozenset({"spatial_ref_sys"})


# The partitions of incident (migration 0013: one per month and a default one) are its
# storage, created and archived at run time: service.tables declares the partitioned table.
PARTITION = re.compile(r"^incident_([0-9]{4}_[0-9]{2}|default)$")


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Return whether autogenerate compares the reflected object ``name``."""
    if type_ == "table":
        return name not in EXTENSION_TABLES and not PARTITION.match(name or "")
    return True


def include_object(obj, name: str | None, type_: str, reflected: bool, compare_to) -> bool:
    """Leave out the foreign keys PostgreSQL derives per partition of a referenced table."""
    if type_ == "foreign_key_constraint":
        return not PARTITION.match(obj.referred_table.name)
    return True


COMPARE = {
    "target_metadata": target_metadata,
    "include_name": include_name,
    "include_object": include_object,
    "compare_type": True,
    # Server defaults are compared by PostgreSQL itself (Alembic asks it whether the two
    # expressions are equal), so '{}' and '{}'::jsonb match.
    "compare_server_default": True,
}


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **COMPARE)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, **COMPARE)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

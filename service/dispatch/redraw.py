"""Open cases follow a boundary redraw: their owner and grid team, with a ``redraw`` event.

When a new generation of boundaries is activated (:func:`service.repositories.boundaries.
activate_generation`), every open case is re-mapped to the cells it lies in now (closed and
cancelled cases keep the cells they were handled in, so evaluation and history stay as they
were; every case keeps its ``reported_*`` cell). Then :func:`follow_redrawn_boundaries` moves
what depends on the place, as the system action ``redraw`` of the lifecycle
(:data:`service.dispatch.lifecycle.ACTIONS`) declares:

- the owner becomes the dispatch centre of the same level on the case's new chain (the
  lowest it has when the chain is shorter; a case now outside every area keeps its owner),
  so a case in a grid that moved to another community is in that community's queue;
- a grid team as handler becomes the grid the case lies in now (the team that walks there);
  a unit stays the handler, its path following the unit's own cell;
- the state, the clock and everything else stay.

Only cases whose owner or handler changed get an event (``redraw`` by the system, in the
activation's transaction), so each row stays the replay of its events. Set-based: one
statement for all of them. The rows were locked by the re-map's ``UPDATE`` in the same
transaction before any event is inserted (the event lock rule of migration 0010).
``tests/service/test_generations.py`` checks the SQL against
:func:`~service.dispatch.lifecycle.decide` and :func:`~service.dispatch.lifecycle.apply`.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from service.dispatch.lifecycle import ACTIONS, OPEN_STATES, OWNER_LEVELS, SYSTEM

__all__ = ["OPEN_CASES", "follow_redrawn_boundaries"]

_redraw = ACTIONS["redraw"]
if not (
    _redraw.states == OPEN_STATES
    and _redraw.actors == frozenset({SYSTEM})
    and (_redraw.to, _redraw.owner, _redraw.assignee, _redraw.clock)
    == (None, "area", "set", "keep")
    and not _redraw.flags
    and _redraw.counts is None
    and OWNER_LEVELS == ("city", "district", "community")
):
    raise RuntimeError(
        "service.dispatch.lifecycle changed the redraw action: bring service.dispatch.redraw "
        "in line"
    )

_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATES)
_OWNER_LEVELS = "ARRAY[" + ", ".join(f"'{level}'" for level in OWNER_LEVELS) + "]"
#: The incidents a redraw re-maps (the condition :func:`service.bulk.remap_table` takes).
OPEN_CASES = f"state IN ({_OPEN})"

_FOLLOW = text(
    f"""
    WITH now_at AS (
        SELECT i.id, i.state, i.owner_level, i.owner_area_code, i.owner_area_path,
               i.assignee_kind, i.assignee_code, i.assignee_path,
               CASE WHEN i.area_path IS NULL OR i.owner_level IS NULL THEN i.owner_area_path
                    ELSE array_to_string((string_to_array(i.area_path, '/'))[1:least(
                             array_position({_OWNER_LEVELS}, i.owner_level),
                             cardinality(string_to_array(i.area_path, '/')),
                             {len(OWNER_LEVELS)})], '/')
               END AS new_owner_path,
               CASE WHEN i.assignee_kind = 'grid' AND i.grid_code IS NOT NULL
                    THEN i.grid_code ELSE i.assignee_code END AS new_assignee_code,
               CASE WHEN i.assignee_kind = 'grid' AND i.grid_code IS NOT NULL THEN i.area_path
                    WHEN i.assignee_kind = 'unit'
                    THEN coalesce((SELECT u.area_path FROM unit u
                                   WHERE CAST(u.id AS text) = i.assignee_code), i.assignee_path)
                    ELSE i.assignee_path END AS new_assignee_path
        FROM incident i
        WHERE i.generation = :g AND i.{OPEN_CASES}
    ), moved AS (
        SELECT n.*, substring(new_owner_path FROM '[^/]*$') AS new_owner_code,
               ({_OWNER_LEVELS})[cardinality(string_to_array(new_owner_path, '/'))]
                   AS new_owner_level
        FROM now_at n
        WHERE new_owner_path IS DISTINCT FROM owner_area_path
           OR new_assignee_code IS DISTINCT FROM assignee_code
           OR new_assignee_path IS DISTINCT FROM assignee_path
    ), changed AS (
        UPDATE incident i SET
            owner_level = m.new_owner_level, owner_area_code = m.new_owner_code,
            owner_area_path = m.new_owner_path,
            assignee_code = m.new_assignee_code, assignee_path = m.new_assignee_path,
            supervised = CASE WHEN m.new_owner_code IS DISTINCT FROM i.owner_area_code
                              THEN false ELSE i.supervised END,
            version = i.version + 1, updated_at = now()
        FROM moved m WHERE i.id = m.id
        RETURNING i.id, i.version, i.state, m.owner_area_code AS from_owner,
                  m.owner_area_path AS from_owner_path, i.owner_area_code, i.owner_level,
                  i.owner_area_path, i.assignee_kind, i.assignee_code, i.assignee_path
    )
    INSERT INTO case_event (incident_id, seq, at, action, actor_role, from_state, to_state,
                            from_owner_area_code, to_owner_area_code, assignee_kind,
                            assignee_code, data)
    SELECT id, version, now(), 'redraw', '{SYSTEM}', state, state, from_owner,
           owner_area_code, assignee_kind, assignee_code,
           CASE WHEN owner_area_code IS DISTINCT FROM from_owner
                  OR owner_area_path IS DISTINCT FROM from_owner_path
                THEN jsonb_build_object('owner_level', owner_level,
                                        'owner_area_path', owner_area_path)
                ELSE CAST('{{}}' AS jsonb) END
           || CASE WHEN assignee_code IS NOT NULL
                   THEN jsonb_build_object('assignee_path', assignee_path)
                   ELSE CAST('{{}}' AS jsonb) END
    FROM changed ORDER BY id
    RETURNING incident_id
    """
)


def follow_redrawn_boundaries(conn: Connection, *, generation_id: int) -> list[int]:
    """Move the owner and grid team of every open case re-mapped to ``generation_id`` to
    where it lies now, each with its ``redraw`` event; return the ids of the cases moved."""
    return list(conn.execute(_FOLLOW, {"g": generation_id}).scalars())

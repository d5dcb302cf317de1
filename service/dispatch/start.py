"""The start of new cases for bulk writers: the lifecycle columns, a whole column at a time.

The database starts every inserted incident itself (migration 0010: the row trigger
``incident_start`` fills state, owner and the accept deadline, a statement trigger writes
the first events). A bulk import of a million rows pays that trigger's call per row; it
fills the same columns here instead, by the same rule, and the trigger (``WHEN state IS
NULL``) is skipped. The first events are still the database's, one statement for all rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from service.dispatch.lifecycle import OWNER_LEVELS

__all__ = ["start_columns"]

_STATE_OF_STATUS = {"new": "reported", "open": "registered", "closed": "closed"}


def _owner(path: str) -> tuple[str, str, str]:
    """Return (path, level, code) of the owner of a case at ``path``: the community
    containing it, else the lowest level containing it (a grid's case: the grid's community)."""
    owner = path.rpartition("/")[0] if path.count("/") >= 3 else path
    return owner, OWNER_LEVELS[owner.count("/")], owner.rpartition("/")[2]


def start_columns(
    conn: Connection, *, columns: Mapping[str, Any], paths: np.ndarray
) -> dict[str, Any]:
    """Return the lifecycle columns ``incident_start`` would give these new incidents.

    ``columns``: the rows' values (``category``; ``status`` and ``reported_at`` when the file
    had them); ``paths``: each row's cell path (None outside every area). A row without a
    ``reported_at`` gets the transaction's time, as the column's default would give it.
    """
    n = len(paths)
    status = pd.Series(columns.get("status", np.full(n, "new", dtype=object)), dtype=object)
    state = status.map(_STATE_OF_STATUS)
    # The owner (see _owner), once per distinct path (one per area; many rows): no owner
    # outside every area, and columns of no owner when no row lies in an area or none is left.
    inverse, unique = pd.factorize(pd.Series(paths, dtype=object), use_na_sentinel=True)
    owners = np.array([*(_owner(p) for p in unique), (None, None, None)], dtype=object)
    owner_path, owner_level, owner_code = (
        pd.Series(owners[inverse, i] if n else [], dtype=object) for i in range(3)
    )

    now = pd.Timestamp(conn.execute(text("SELECT now()")).scalar_one()).tz_convert("UTC")
    utc = "datetime64[ns, UTC]"
    if columns.get("reported_at") is None:
        reported = pd.Series(now, index=range(n), dtype=utc)
    else:
        reported = pd.to_datetime(pd.Series(columns["reported_at"]), utc=True)
        reported = reported.astype(utc).fillna(now).reset_index(drop=True)
    limits = dict(
        conn.execute(
            text(
                "SELECT category, minutes FROM case_time_limit "
                "WHERE step = 'accept' AND priority = 'normal'"
            )
        ).all()
    )
    minutes = pd.Series(columns["category"], dtype=object).map(limits).astype(float)
    waiting = state.isin(["reported", "registered"])
    due = (reported + pd.to_timedelta(minutes, unit="min")).where(waiting)
    return {
        "state": state.to_numpy(object),
        "owner_level": owner_level.astype(object).where(owner_level.notna(), None).to_numpy(),
        "owner_area_code": owner_code.astype(object).where(owner_code.notna(), None).to_numpy(),
        "owner_area_path": owner_path.astype(object).where(owner_path.notna(), None).to_numpy(),
        "step": np.where(waiting.to_numpy(), "accept", None).astype(object),
        "step_due_at": due,
        "reported_at": reported,
    }

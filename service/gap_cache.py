"""The planning page's coverage analyses, kept in the server process until what they read
changes.

Each analysis the page draws (:data:`maps.gaps.MAP_GAP_LAYERS`) is kept per (analysis, role,
scope) together with a fingerprint of its inputs that announce no change themselves, and
dropped when a change it reads is learnt:

- ``reach`` reads facilities, units and care households (their writes are announced on
  ``wangge_changes``, which the tile cache learns: :class:`service.tiles.cache.TileCache`)
  and the road network (imports announce nothing: the newest ``road_import`` is in the
  fingerprint);
- ``staffing`` reads team members (no announcement: the count, id sum and newest
  ``updated_at`` of ``member`` are in the fingerprint; its trigger sets ``updated_at`` on
  every update);
- ``topology`` reads only the areas of a generation;
- ``workload`` counts incidents, which change with every case action: it is kept at most
  :data:`WORKLOAD_MAX_AGE_S` seconds.

Every analysis also reads the areas of the current generation, which is in every
fingerprint (and a new generation is announced as "everything changed", which drops all).
Nothing is served or stored while the tile cache is not listening (changes may be missed);
the cache is an LRU of at most ``max_entries`` results.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

__all__ = ["GapCache", "READS", "WORKLOAD_MAX_AGE_S"]

#: The announced layers (service.specs.map_layers) each analysis reads.
READS: dict[str, frozenset[str]] = {
    "reach": frozenset({"facilities", "units", "care-households"}),
    "staffing": frozenset(),
    "topology": frozenset(),
    "workload": frozenset({"incidents"}),
}

#: How long a workload result is kept (incidents change with every case action).
WORKLOAD_MAX_AGE_S = 300.0

#: Max age per analysis (None: until a change it reads is learnt).
MAX_AGE_S: dict[str, float | None] = {"workload": WORKLOAD_MAX_AGE_S}

# Workload would otherwise be dropped by every incident write: it is kept for its max age
# instead, so it ignores the incident announcements.
_DROPPED_BY = {name: layers - {"incidents"} for name, layers in READS.items()}

# One cheap statement for the inputs that announce nothing.
_FINGERPRINT_SQL = text(
    """
    SELECT (SELECT max(id) FROM generation WHERE active) AS generation,
           (SELECT concat_ws(':', count(*), max(updated_at), sum(id)) FROM member) AS members,
           (SELECT concat_ws(':', count(*), max(id)) FROM road_import) AS roads
    """
)

_FINGERPRINT_USES = {
    "reach": ("generation", "roads"),
    "staffing": ("generation", "members"),
    "topology": ("generation",),
    "workload": ("generation",),
}


@dataclass(frozen=True)
class _Entry:
    result: dict[str, Any]
    stored_at: float  #: time.time() when the analysis started


class GapCache:
    """LRU of coverage-analysis results, dropped by the tile cache's change feed.

    Parameters
    ----------
    tiles
        The process's :class:`~service.tiles.cache.TileCache`: its ``listening`` flag says
        whether changes are being learnt, and it tells this cache every change it learns.
    max_entries
        How many results are kept at most (each is one analysis for one scope).
    clock
        ``time.time`` (a test may pass another).
    """

    def __init__(self, tiles, *, max_entries: int = 64, clock: Callable[[], float] = time.time):
        self.tiles = tiles
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # analyses run in worker threads
        #: Per analysis, how many changes it reads were learnt (a result computed across
        #: one is not stored: it may predate it).
        self._epochs = dict.fromkeys(READS, 0)
        self.hits = self.misses = self.runs = 0
        tiles.subscribe(self._learn)

    def __len__(self) -> int:
        return len(self._entries)

    def _learn(self, layer: str | None) -> None:
        with self._lock:
            if layer is None:
                self._entries.clear()
                for name in self._epochs:
                    self._epochs[name] += 1
                return
            names = {n for n, layers in _DROPPED_BY.items() if layer in layers}
            if not names:
                return
            for name in names:
                self._epochs[name] += 1
            for key in [k for k in self._entries if k[0] in names]:
                del self._entries[key]

    def analyses(
        self, conn, principal, run: Callable[[str], dict[str, Any]], names
    ) -> dict[str, dict[str, Any]]:
        """Return the results of the analyses ``names`` for ``principal``: kept ones when
        still true, else ``run(name)`` (on ``conn``, in its transaction), kept if it may be."""
        listening = self.tiles.listening
        fingerprint = dict(conn.execute(_FINGERPRINT_SQL).mappings().one()) if listening else {}
        results = {}
        for name in names:
            key = (
                name,
                principal.role,
                principal.scope_path,
                principal.area_code,
                tuple(fingerprint.get(f) for f in _FINGERPRINT_USES.get(name, ("generation",))),
            )
            now = self.clock()
            if listening:
                with self._lock:
                    entry = self._entries.get(key)
                    max_age = MAX_AGE_S.get(name)
                    if entry is not None and (max_age is None or now - entry.stored_at < max_age):
                        self._entries.move_to_end(key)
                        self.hits += 1
                        results[name] = entry.result
                        continue
                    epoch = self._epochs.get(name, 0)
            self.misses += 1
            self.runs += 1
            result = run(name)
            results[name] = result
            if listening and self.tiles.listening:
                with self._lock:
                    if self._epochs.get(name, 0) == epoch:
                        self._entries[key] = _Entry(result, now)
                        self._entries.move_to_end(key)
                        while len(self._entries) > self.max_entries:
                            self._entries.popitem(last=False)
        return results

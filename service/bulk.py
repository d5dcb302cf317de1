"""Bulk paths: validate a whole table at once, assign cells with a rasterised index, COPY.

Used by imports (API and CLI) and by re-mapping after a new generation is activated. Cells
come from :class:`geo.cellindex.CellIndex`, which gives the same answer as ``ST_Covers``
with the lookup's tie-break (deepest level, then smallest code) on every point, at a
fraction of the cost of a per-row query. Rows are written with ``COPY``, their cells filled
in, so the per-row triggers are skipped (see migration 0004).
"""

from __future__ import annotations

import io
import re
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
from psycopg.copy import QueuedLibpqWriter
from pydantic import AnyHttpUrl
from pydantic.fields import FieldInfo
from sqlalchemy import Connection, text

from geo.areas import LEVELS
from geo.cellindex import CellIndex
from geo.coords import check_points, parse_input_crs, to_wgs84
from geo.tables import PointTable, RowProblem
from service.auth import Principal
from service.inputs import NUL_REASON
from service.references import reference_problems
from service.specs.entity_kinds import EntitySpec, unwrap

__all__ = [
    "CellAssigner",
    "ImportReport",
    "cell_assigner",
    "validate_frame",
    "rule_problems",
    "import_points",
    "copy_rows",
    "remap_table",
]

LOCAL_TZ = "Asia/Shanghai"
#: Columns an export writes that an import recomputes (ids and cells) rather than stores;
#: the report lists them as ignored, so a re-imported export loses nothing silently.
DERIVED_COLUMNS = (
    "id",
    "grid_code",
    "community_code",
    "district_code",
    "city_code",
    "generation",
    "reported_grid_code",
    "closed_at",
    "created_at",
    "updated_at",
)
_TRUE = {"true", "1", "yes", "y", "t", "是", "有"}
_FALSE = {"false", "0", "no", "n", "f", "否", "无", ""}
_URL = re.compile(r"^https?://\S+$")
ProgressFn = Callable[[str, int, int], None]


# -- cells --------------------------------------------------------------------------------
class CellAssigner:
    """Assign points to the chain of areas of one generation, exactly as ``locate_point``."""

    def __init__(self, generation: int, rows: list[Any]):
        self.generation = generation
        self._levels: list[tuple[CellIndex, np.ndarray]] = []
        by_level: dict[str, list[Any]] = {}
        for r in rows:
            by_level.setdefault(r.level, []).append(r)
        # Deepest level first: a point in a grid takes the grid's chain, and only points in
        # no grid fall through to the communities, and so on up.
        for level in reversed(LEVELS):
            items = by_level.get(level)
            if not items:
                continue
            index = CellIndex(
                [r.code for r in items], [shapely.from_wkb(bytes(r.wkb)) for r in items]
            )
            paths = np.array([r.path for r in items], dtype=object)
            self._levels.append((index, paths))

    def assign(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return, per point, the path of the deepest covering area (None if none)."""
        out = np.full(lon.shape, None, dtype=object)
        todo = np.arange(lon.size)
        for index, paths in self._levels:
            if todo.size == 0:
                break
            hit = index.assign(lon[todo], lat[todo])
            found = hit >= 0
            out[todo[found]] = paths[hit[found]]
            todo = todo[~found]
        return out


_ASSIGNERS: dict[tuple, CellAssigner] = {}


def cell_assigner(conn: Connection, generation: int) -> CellAssigner:
    """Return the assigner of ``generation`` (cached: active generations never change)."""
    row = conn.execute(
        text("SELECT active, activated_at FROM generation WHERE id = :g"), {"g": generation}
    ).first()
    active = row is not None and row.active
    # activated_at is part of the key: an activation that rolled back leaves no entry a
    # later, different activation of the same generation could pick up.
    key = (
        conn.engine.url.render_as_string(hide_password=True),
        generation,
        row.activated_at if row else None,
    )
    if active and key in _ASSIGNERS:
        return _ASSIGNERS[key]
    rows = conn.execute(
        text(
            "SELECT code, level, path, ST_AsBinary(geom) AS wkb FROM area "
            "WHERE generation_low <= :g AND generation_high >= :g"
        ),
        {"g": generation},
    ).all()
    assigner = CellAssigner(generation, rows)
    if active:
        _ASSIGNERS[key] = assigner
    return assigner


def split_paths(paths: np.ndarray) -> dict[str, np.ndarray]:
    """Return the grid/community/district/city code columns of materialised paths."""
    # Few distinct paths (one per area), many points: split each distinct path once.
    inverse, unique = pd.factorize(
        pd.Series(np.where(paths == None, "", paths), dtype=object),  # noqa: E711
        use_na_sentinel=False,
    )
    out = {}
    split = [u.split("/") if u else [] for u in unique]
    for depth, level in enumerate(LEVELS):
        codes = np.array([p[depth] if len(p) > depth else None for p in split], dtype=object)
        out[f"{level}_code"] = codes[inverse] if len(unique) else np.array([], dtype=object)
    return out


# -- validation ---------------------------------------------------------------------------
def _bounds(info, extra: list) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in [*info.metadata, *extra]:
        for name in ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern"):
            if getattr(m, name, None) is not None:
                out[name] = getattr(m, name)
    return out


def _by_distinct(
    series: pd.Series, convert: Callable[[pd.Series], Any], missing: Any
) -> np.ndarray:
    """Return ``convert`` of every value of ``series``, computed once per distinct value.

    File columns repeat few values (categories, sources, addresses, cell paths): a Python
    call per distinct value instead of one per row. ``missing``: the result for nulls.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    done = np.asarray(convert(pd.Series(np.asarray(uniques, dtype=object), dtype=object)))
    return np.append(done.astype(object), np.array([missing], dtype=object))[codes]


def _strings(series: pd.Series) -> pd.Series:
    text_values = series.astype(object).where(series.notna(), "").astype(str)

    def clean(values: pd.Series) -> pd.Series:
        # Exports defuse spreadsheet formulas with a leading apostrophe ('=…): undo it.
        return values.str.strip().str.replace(r"^'(?=[=+\-@])", "", regex=True)

    return pd.Series(_by_distinct(text_values, clean, ""), index=series.index, dtype=object)


def validate_frame(
    spec: EntitySpec, frame: pd.DataFrame, row_numbers: np.ndarray
) -> tuple[dict[str, Any], list[RowProblem], list[str]]:
    """Return column values converted per the spec's create schema, the problems, and the
    columns the schema does not know (kept in ``properties``).

    Vectorised per column; a value that cannot be converted is a problem naming its row
    and column, never a silent default.
    """
    problems: list[RowProblem] = []
    values: dict[str, Any] = {}
    lower = {str(c).strip().lower(): c for c in frame.columns}
    n = len(frame)

    def flag(mask: np.ndarray, column: str, reason: str) -> None:
        for i in np.flatnonzero(mask):
            problems.append(RowProblem(int(row_numbers[i]), column, reason))

    # PostgreSQL's text and jsonb cannot hold NUL: refuse it in every column, those kept in
    # ``properties`` too (a CSV sniffed as text past its first 8 KiB, GeoJSON "\u0000").
    for column in frame.columns:
        if "\x00" in str(column):
            problems.append(RowProblem(0, str(column).replace("\x00", "\\x00"), NUL_REASON))
        elif frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype):
            has_nul = _by_distinct(
                frame[column], lambda u: [isinstance(v, str) and "\x00" in v for v in u], False
            )
            flag(has_nul.astype(bool), str(column), NUL_REASON)

    fields = import_fields(spec)
    for name, info in fields.items():
        if name in ("lon", "lat", "crs"):
            continue
        column = lower.get(name)
        required = info.is_required()
        if column is None:
            if required:
                problems.append(RowProblem(0, name, "required column is missing"))
            continue
        raw = _strings(frame[column])
        empty = (raw == "").to_numpy()
        if required:
            flag(empty, column, "required")
        values[name] = _convert(spec, name, info, raw, empty, column, flag)
    lifecycle = spec.lifecycle
    if lifecycle is not None and lifecycle.column in values:
        # The table's rule, row by row: the closed status and its time go together.
        closed = values[lifecycle.column] == lifecycle.closed
        stamp = values.get(lifecycle.closed_at)
        stamped = np.zeros(n, bool) if stamp is None else ~pd.isna(pd.Series(stamp)).to_numpy()
        flag(
            closed & ~stamped,
            lower.get(lifecycle.closed_at, lifecycle.closed_at),
            f"a {lifecycle.closed} row needs its {lifecycle.closed_at}",
        )
        flag(~closed & stamped, lifecycle.closed_at, f"only {lifecycle.closed} rows have one")
    known = {k.lower() for k in fields}
    extra = [c for c in frame.columns if str(c).strip().lower() not in known | set(DERIVED_COLUMNS)]
    return values, problems, extra


def _convert(
    spec: EntitySpec,
    name: str,
    info: FieldInfo,
    raw: pd.Series,
    empty: np.ndarray,
    column: str,
    flag: Callable[[np.ndarray, str, str], None],
) -> Any:
    """Return the column ``raw`` (stripped text, ``empty`` where blank) converted to field
    ``name``'s type; ``flag`` the rows whose value does not convert or breaks a bound."""
    annotation, nullable, extra_meta = unwrap(info.annotation)
    required = info.is_required()
    n = len(raw)
    bounds = _bounds(info, extra_meta)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = [str(a) for a in typing.get_args(annotation)]
        bad = ~raw.isin(allowed).to_numpy() & ~empty
        flag(bad, column, f"must be one of {', '.join(allowed)}")
        col = raw.to_numpy(object)
        if nullable:
            col = np.where(empty, None, col)
        elif info.default is not None and not required:
            col = np.where(empty, info.default, col)
    elif annotation is str:
        too_long = (raw.str.len() > bounds.get("max_length", 10**9)).to_numpy()
        flag(too_long, column, f"longer than {bounds.get('max_length')} characters")
        if "pattern" in bounds:
            bad = ~raw.str.fullmatch(bounds["pattern"].strip("^$")).to_numpy(bool) & ~empty
            flag(bad, column, "not a code of digits")
        col = raw.to_numpy(object)
        if nullable:
            col = np.where(empty, None, col)
    elif annotation in (int, float):
        num = pd.to_numeric(raw.where(~empty), errors="coerce").to_numpy(float)
        bad = np.isnan(num) & ~empty
        if annotation is int:
            bad |= ~np.isnan(num) & (np.mod(num, 1) != 0)
        flag(bad, column, "not a whole number" if annotation is int else "not a number")
        lo, hi = bounds.get("ge", -np.inf), bounds.get("le", np.inf)
        out_of = ~np.isnan(num) & ((num < lo) | (num > hi))
        flag(out_of, column, f"must be between {lo} and {hi}")
        if nullable:
            col = np.where(np.isnan(num), None, num).astype(object)
            if annotation is int:
                col = np.array([None if v is None else int(v) for v in col], dtype=object)
        else:
            default = info.default if info.default is not None else 0
            col = np.where(np.isnan(num), default, num)
            col = col.astype(np.int64) if annotation is int else col
    elif annotation is bool:
        low = raw.str.lower()
        truthy = low.isin(_TRUE).to_numpy()
        falsy = low.isin(_FALSE).to_numpy()
        flag(~truthy & ~falsy, column, "not true/false (是/否)")
        col = np.where(empty, bool(info.default), truthy)
    elif annotation is datetime:
        parsed = pd.to_datetime(raw.where(~empty), errors="coerce", utc=False, format="mixed")
        bad = parsed.isna().to_numpy() & ~empty
        flag(bad, column, "not a date-time (ISO 8601, e.g. 2026-11-27T08:30)")
        if getattr(parsed.dt, "tz", None) is None:
            # Chinese field data without a zone is China Standard Time.
            parsed = parsed.dt.tz_localize(LOCAL_TZ)
        # A datetime array (its items are Timestamps, as in an object array): no Python
        # object per row, and writers format it as one column.
        col = parsed.dt.tz_convert("UTC").array
    elif typing.get_origin(annotation) is list and typing.get_args(annotation)[0] is AnyHttpUrl:
        # Tuples (hashable, one shared empty tuple) so that writing can factorise them.
        col = np.empty(n, dtype=object)
        col[:] = [()] * n
        bad = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(~empty):
            urls = tuple(u for u in re.split(r"[;\s]+", raw.iat[i]) if u)
            bad[i] = any(not _URL.match(u) for u in urls)
            col[i] = urls
        flag(bad, column, "not http(s) URLs separated by ';'")
    else:  # pragma: no cover - a schema field type this importer does not know
        raise TypeError(f"cannot import {spec.name}.{name} of type {annotation}")
    return col


def import_fields(spec: EntitySpec) -> dict[str, FieldInfo]:
    """Return the fields a file import reads: the create schema's and, for a kind with a
    lifecycle, its status and closing time, so that imported history keeps them (incidents:
    the database starts each case in the state its status implies, an ``import`` event)."""
    fields = dict(spec.create.model_fields)
    lifecycle = spec.lifecycle
    if lifecycle is not None:
        fields[lifecycle.column] = FieldInfo.from_annotated_attribute(
            Literal[lifecycle.statuses], lifecycle.initial
        )
        fields[lifecycle.closed_at] = FieldInfo.from_annotated_attribute(datetime | None, None)
    return fields


def rule_problems(
    spec: EntitySpec, values: dict[str, Any], row_numbers: np.ndarray
) -> list[RowProblem]:
    """Return the rows that break one of the spec's rules across columns."""
    if not spec.rules:
        return []
    problems = []
    for i, row_number in enumerate(row_numbers):
        row = {k: v[i] for k, v in values.items()}
        for rule in spec.rules:
            broken = rule(row)
            if broken is not None:
                problems.append(RowProblem(int(row_number), *broken))
    return problems


# -- import -------------------------------------------------------------------------------
@dataclass
class ImportReport:
    """What an import did: counts, per grid, and every problem (row, field, reason)."""

    entity: str
    rows: int
    accepted: int = 0
    rejected: int = 0
    unassigned: int = 0
    per_grid: dict[str, int] = field(default_factory=dict)
    problems: list[RowProblem] = field(default_factory=list)
    committed: bool = False
    skip_bad: bool = False
    crs: str = "EPSG:4326"
    kept_in_properties: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def as_dict(self, max_problems: int = 1000) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "unassigned": self.unassigned,
            "committed": self.committed,
            "skip_bad": self.skip_bad,
            "crs": self.crs,
            "per_grid": dict(sorted(self.per_grid.items())),
            "kept_in_properties": self.kept_in_properties,
            "ignored_columns": self.ignored_columns,
            "problems": [p.as_dict() for p in self.problems[:max_problems]],
            "problems_total": len(self.problems),
        }


def _choose_crs(table: PointTable, requested: str | None) -> str:
    if requested:
        return parse_input_crs(requested)
    if table.declared_crs:
        return parse_input_crs(table.declared_crs)
    return "EPSG:4326"


def import_points(
    conn: Connection,
    spec: EntitySpec,
    *,
    principal: Principal,
    table: PointTable,
    crs: str | None = None,
    skip_bad: bool = False,
    forced: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Validate, convert, assign and write a table of points, all or nothing by default.

    With ``skip_bad`` the good rows are written and the bad ones reported. Rows outside the
    caller's area are refused like any other bad row. The spec's forced values and
    ``forced`` replace the file's. Nothing is committed here: the caller owns the
    transaction (and rolls back when ``report.committed`` is False).
    """
    say = progress or (lambda _stage, _done, _total: None)
    n = len(table.lon)
    report = ImportReport(entity=spec.name, rows=n, skip_bad=skip_bad)
    report.crs = crs_name = _choose_crs(table, crs)
    problems = list(table.problems)
    say("validate", 0, n)
    values, value_problems, extra = validate_frame(spec, table.attributes, table.row_numbers)
    problems += value_problems
    report.kept_in_properties = [str(c) for c in extra]
    imported = {k.lower() for k in import_fields(spec)}
    report.ignored_columns = [
        str(c)
        for c in table.attributes.columns
        if str(c).strip().lower() in set(DERIVED_COLUMNS) - imported
    ]
    for key, value in {**spec.forced_values(principal), **(forced or {})}.items():
        values[key] = np.full(n, value, dtype=object)
    problems += rule_problems(spec, values, table.row_numbers)
    problems += reference_problems(conn, spec, principal, values, table.row_numbers)
    # Coordinates: the reader already flagged unreadable ones (NaN); flag the rest here.
    readable = ~(np.isnan(table.lon) | np.isnan(table.lat))
    for p in check_points(table.lon[readable], table.lat[readable], crs=crs_name):
        problems.append(RowProblem(int(table.row_numbers[readable][p.index]), p.field, p.message))
    bad_rows = {p.row for p in problems}
    if any(p.row == 0 for p in problems):  # a missing column fails every row
        bad_rows = set(table.row_numbers.tolist())
    good = ~np.isin(table.row_numbers, list(bad_rows))
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    if good.any():
        x[good], y[good] = to_wgs84(table.lon[good], table.lat[good], crs_name)
    say("assign", 0, n)
    generation = conn.execute(text("SELECT max(id) FROM generation WHERE active")).scalar_one()
    paths = np.full(n, None, dtype=object)
    if good.any():
        paths[good] = cell_assigner(conn, generation).assign(x[good], y[good])
    if principal.scope_path is not None:
        # Rows outside the caller's area are refused like any other bad row.
        scope = principal.scope_path
        city_level = "/" not in scope
        as_text = pd.Series(paths).fillna("")
        inside = (as_text == scope) | as_text.str.startswith(scope + "/")
        if city_level:
            inside |= pd.Series(paths).isna()
        outside = good & ~inside.to_numpy()
        for i in np.flatnonzero(outside):
            problems.append(
                RowProblem(
                    int(table.row_numbers[i]), "lon,lat", f"outside your area {principal.area_code}"
                )
            )
        good &= ~outside
    problems.sort(key=lambda p: (p.row, p.field))
    report.problems = problems
    report.rejected = int((~good).sum())
    if report.rejected and not skip_bad:
        return report
    cells = split_paths(paths[good])
    report.accepted = int(good.sum())
    report.unassigned = int(sum(1 for g in cells["grid_code"] if g is None))
    report.per_grid = dict(Counter(g for g in cells["grid_code"] if g is not None))
    columns = {k: v[good] for k, v in values.items()}
    properties = None
    if extra:
        properties = (
            table.attributes.loc[good, extra]
            .astype(object)
            .where(table.attributes.loc[good, extra].notna(), None)
            .to_json(orient="records", lines=True, force_ascii=False)
            .splitlines()
        )
    if spec.lifecycle is not None and spec.lifecycle.starts is not None:
        columns.update(spec.lifecycle.starts(conn, columns=columns, paths=paths[good]))
    say("write", 0, report.accepted)
    copy_rows(
        conn,
        spec,
        columns=columns,
        x=x[good],
        y=y[good],
        generation=generation,
        paths=paths[good],
        cells=cells,
        properties=properties,
        created_by=principal.token_id,
        progress=lambda done: say("write", done, report.accepted),
    )
    report.committed = True
    return report


def _copy_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "\\N"
    if isinstance(value, bool | np.bool_):
        return "t" if value else "f"
    if isinstance(value, list | tuple):
        inner = ",".join(
            '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value
        )
        value = "{" + inner + "}"
    elif isinstance(value, datetime | pd.Timestamp):
        value = value.isoformat()
    elif isinstance(value, np.datetime64):
        value = str(pd.Timestamp(value, tz="UTC").isoformat())
    return (
        str(value)
        .replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def _copy_column(values: Any) -> np.ndarray:
    """Return a column as an object array of COPY text (``\\N`` for null).

    Columns repeat few values (categories, cell codes, paths), so each distinct value is
    escaped once and the results are gathered with the factorised codes.
    """
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        naive = series.dt.tz_convert("UTC").dt.tz_localize(None) if series.dt.tz else series
        out = np.datetime_as_string(naive.to_numpy().astype("datetime64[us]"), unit="us")
        out = out.astype(object) + "Z"
        out[series.isna().to_numpy()] = "\\N"
        return out
    if series.dtype == bool:
        return np.where(series.to_numpy(), "t", "f").astype(object)
    if pd.api.types.is_numeric_dtype(series.dtype):
        out = series.astype(str).to_numpy(object)
        out[series.isna().to_numpy()] = "\\N"
        return out
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.array([*(_copy_text(u) for u in uniques), "\\N"], dtype=object)
    return table[codes]


_EWKB_POINT_4326 = "0101000020E6100000"  # little-endian, Point with SRID, 4326


def _hex_ewkb_points(x: np.ndarray, y: np.ndarray) -> list[str]:
    """Return hex EWKB (SRID 4326) of points, as COPY text.

    The layout of a point is fixed (a header, then x and y as little-endian doubles), so the
    whole column is one ``bytes.hex()`` cut into rows: ten times faster than building
    geometries only to serialise them.
    """
    coords = np.column_stack([x, y]).astype("<f8").tobytes().hex().encode("ascii")
    return [_EWKB_POINT_4326 + c for c in np.frombuffer(coords, dtype="S32").astype("U32").tolist()]


def copy_rows(
    conn: Connection,
    spec: EntitySpec,
    *,
    columns: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    generation: int,
    paths: np.ndarray,
    cells: dict[str, np.ndarray],
    properties: list[str] | None,
    created_by: str,
    chunk: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """COPY rows with their cells into the entity's table.

    One COPY statement, fed chunk by chunk: PostgreSQL parses and indexes one chunk while
    Python formats the next, so the two cores work at once. The chunks are sent by a thread
    (psycopg's queued writer): a plain write returns only once the server has read all but
    a socket buffer of it, so Python would format while the server waited, and the reverse.
    """
    n = len(x)
    sources: dict[str, Any] = {
        **columns,
        "geom": None,
        "generation": str(generation),
        "area_path": paths,
    }
    for level in ("grid", "community", "district", "city"):
        sources[f"{level}_code"] = cells[f"{level}_code"]
    if spec.keeps_reported_cell:
        sources["reported_generation"] = str(generation)
        sources["reported_area_path"] = paths
        sources["reported_grid_code"] = cells["grid_code"]
    sources["created_by"] = _copy_text(created_by)
    if properties is not None:
        sources["properties"] = np.asarray(properties, dtype=object)
    names = list(sources)
    raw = conn.connection.driver_connection
    sql = f"COPY {spec.table} ({', '.join(names)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(sql, writer=QueuedLibpqWriter(cur)) as copy:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            size = stop - start
            arrays = []
            for name, source in sources.items():
                if name == "geom":
                    arrays.append(_hex_ewkb_points(x[start:stop], y[start:stop]))
                elif isinstance(source, str):
                    arrays.append([source] * size)
                else:
                    arrays.append(_copy_column(source[start:stop]))
            copy.write("\n".join(map("\t".join, zip(*arrays, strict=True))) + "\n")
            if progress:
                progress(stop)


def remap_table(conn: Connection, table: str, generation: int, where: str = "true") -> int:
    """Re-map the rows of a point table (those matching ``where``, an SQL condition) to
    ``generation``'s cells; return how many rows."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(f"SELECT id, ST_X(geom), ST_Y(geom) FROM {table} WHERE {where}")
        rows = cur.fetchall()
    if not rows:
        return 0
    arr = np.array(rows, dtype=float)
    ids = arr[:, 0].astype(np.int64)
    paths = cell_assigner(conn, generation).assign(arr[:, 1], arr[:, 2])
    cells = split_paths(paths)
    conn.execute(
        text(
            "CREATE TEMP TABLE remap (id bigint, area_path text, grid_code text, "
            "community_code text, district_code text, city_code text)"
        )
    )
    frame = pd.DataFrame(
        {
            "id": ids,
            "area_path": [_copy_text(p) for p in paths],
            **{
                f"{lv}_code": [_copy_text(v) for v in cells[f"{lv}_code"]]
                for lv in ("grid", "community", "district", "city")
            },
        }
    )
    buffer = io.StringIO()
    frame.to_csv(buffer, sep="\t", header=False, index=False, quoting=3, lineterminator="\n")
    with raw.cursor() as cur:
        with cur.copy("COPY remap FROM STDIN") as copy:
            copy.write(buffer.getvalue())
    conn.execute(
        text(
            f"UPDATE {table} t SET generation = :g, area_path = r.area_path, "
            "grid_code = r.grid_code, community_code = r.community_code, "
            "district_code = r.district_code, city_code = r.city_code "
            "FROM remap r WHERE r.id = t.id"
        ),
        {"g": generation},
    )
    conn.execute(text("DROP TABLE remap"))
    return len(ids)

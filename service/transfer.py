"""Import and export entities as files (GeoJSON, CSV, GeoPackage, zipped Shapefile).

Shared by the API (run in a worker thread) and the CLI. Imports are all or nothing unless
``skip_bad``; either way they return a per-row report. Exports are scoped to the caller and
follow the sensitive-data rules (details only for entitled roles; every row read logged).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.tables import RowProblem, TableFormatError, read_point_table, write_point_table
from service.auth import Principal
from service.bulk import ImportReport, ProgressFn, import_points, rule_problems, validate_frame
from service.errors import ForbiddenError, UnprocessableError
from service.references import reference_problems
from service.specs.entity_kinds import EntitySpec

__all__ = ["import_file", "export_rows", "EXPORT_MEDIA"]

EXPORT_MEDIA = {
    "geojson": ("application/geo+json", "geojson"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "gpkg": ("application/geopackage+sqlite3", "gpkg"),
    "shp": ("application/zip", "zip"),
}


def _check_role(spec: EntitySpec, principal: Principal) -> None:
    if principal.role not in spec.import_roles:
        raise ForbiddenError(f"a {principal.role} may not import {spec.name}", field="role")


def import_file(
    conn: Connection,
    spec: EntitySpec,
    *,
    principal: Principal,
    data: bytes | Path,
    filename: str,
    crs: str | None = None,
    lon_column: str | None = None,
    lat_column: str | None = None,
    layer: str | None = None,
    skip_bad: bool = False,
    max_rows: int | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Read a file and import its rows as ``spec`` entities; return the report."""
    _check_role(spec, principal)
    if not spec.point:
        return _import_without_location(
            conn, spec, principal=principal, data=data, filename=filename, skip_bad=skip_bad
        )
    if progress:
        progress("read", 0, 0)
    try:
        table = read_point_table(
            data,
            filename=filename,
            lon_column=lon_column,
            lat_column=lat_column,
            layer=layer,
            max_rows=max_rows,
        )
    except TableFormatError as exc:
        raise UnprocessableError(str(exc), field="file") from None
    try:
        return import_points(
            conn,
            spec,
            principal=principal,
            table=table,
            crs=crs,
            skip_bad=skip_bad,
            progress=progress,
        )
    except ValueError as exc:  # an unknown crs name
        raise UnprocessableError(str(exc), field="crs") from None


def _import_without_location(
    conn: Connection,
    spec: EntitySpec,
    *,
    principal: Principal,
    data: bytes | Path,
    filename: str,
    skip_bad: bool,
) -> ImportReport:
    """Import a CSV of a kind without location (members), scoped by its area references."""
    if not filename.lower().endswith(".csv"):
        raise UnprocessableError(
            f"{spec.name} are imported from CSV (they have no location)", field="file"
        )
    raw = data.read_bytes() if isinstance(data, Path) else data
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            frame = pd.read_csv(
                io.BytesIO(raw), dtype=str, keep_default_na=False, encoding=encoding
            )
            break
        except UnicodeDecodeError:
            continue
    else:
        raise UnprocessableError("the CSV is neither UTF-8 nor GB18030", field="file")
    rows = np.arange(1, len(frame) + 1)
    values, problems, extra = validate_frame(spec, frame, rows)
    report = ImportReport(entity=spec.name, rows=len(frame), skip_bad=skip_bad)
    if extra:
        problems.append(
            RowProblem(
                0, ",".join(map(str, extra)), f"unknown columns ({spec.name} keep no extra fields)"
            )
        )
    if not any(p.row == 0 for p in problems):
        problems += reference_problems(conn, spec, principal, values, rows)
        problems += rule_problems(spec, values, rows)
    bad = {p.row for p in problems}
    if any(p.row == 0 for p in problems):
        bad = set(rows.tolist())
    good = ~np.isin(rows, list(bad))
    report.problems = sorted(problems, key=lambda p: (p.row, p.field))
    report.rejected = int((~good).sum())
    if report.rejected and not skip_bad:
        return report
    records = [{c: values[c][i] for c in spec.columns if c in values} for i in np.flatnonzero(good)]
    if records:
        cols = list(records[0])
        conn.execute(
            text(
                f"INSERT INTO {spec.table} ({', '.join(cols)}, created_by) VALUES "
                f"({', '.join(':' + c for c in cols)}, :created_by)"
            ),
            [{**r, "created_by": principal.token_id} for r in records],
        )
    report.accepted = len(records)
    report.committed = True
    return report


def export_rows(conn: Connection, spec: EntitySpec, *, principal: Principal, format: str) -> bytes:
    """Return the caller's visible ``spec`` entities as a file in ``format``."""
    from service.repositories.entities import scope_params, visible_sql

    if format not in EXPORT_MEDIA:
        raise UnprocessableError(
            f"unknown format {format!r}; one of {', '.join(EXPORT_MEDIA)}", field="format"
        )
    if spec.sensitive and principal.role not in spec.detail_roles:
        raise ForbiddenError(
            f"{spec.name} are sensitive personal data: a {principal.role} may export counts "
            f"only (GET /{spec.name}/counts)",
            field="role",
        )
    cols = ["id", *spec.columns]
    if spec.point:
        cols += ["grid_code", "community_code", "district_code", "generation"]
    if spec.lifecycle is not None:
        cols.append(spec.lifecycle.closed_at)
    if spec.keeps_reported_cell:
        cols.append("reported_grid_code")
    select = ", ".join(f"t.{c}" for c in cols)
    geom = ", ST_X(t.geom) AS lon, ST_Y(t.geom) AS lat" if spec.point else ""
    rows = conn.execute(
        text(f"SELECT {select}{geom} FROM {spec.table} t WHERE {visible_sql(spec)} ORDER BY t.id"),
        scope_params(principal),
    ).all()
    frame = pd.DataFrame(
        [dict(r._mapping) for r in rows], columns=[*cols] + (["lon", "lat"] if spec.point else [])
    )
    if spec.sensitive and len(frame):
        conn.execute(
            text(
                "INSERT INTO access_log (token_id, role, action, entity, entity_id) "
                "SELECT :t, :r, 'export', :e, unnest(CAST(:ids AS bigint[]))"
            ),
            {
                "t": principal.token_id,
                "r": principal.role,
                "e": spec.table,
                "ids": frame["id"].tolist(),
            },
        )
    for column in frame.columns:
        if column in ("lon", "lat"):
            continue
        if frame[column].map(lambda v: isinstance(v, list)).any():
            frame[column] = frame[column].map(lambda v: ";".join(v) if v else "")
        elif (
            pd.api.types.is_datetime64_any_dtype(frame[column])
            or frame[column].map(lambda v: hasattr(v, "isoformat")).any()
        ):
            frame[column] = frame[column].map(
                lambda v: v.isoformat() if v is not None and not pd.isna(v) else None
            )
    if format == "csv":
        frame = _defuse_formulas(frame)
    if not spec.point:
        if format != "csv":
            raise UnprocessableError(
                f"{spec.name} have no location: export them as csv", field="format"
            )
        return frame.to_csv(index=False).encode("utf-8-sig")
    lon = frame.pop("lon").to_numpy(float)
    lat = frame.pop("lat").to_numpy(float)
    return write_point_table(lon, lat, frame, format=format, layer=spec.table)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with text that a spreadsheet would run as a formula made inert.

    A cell such as ``=HYPERLINK(…)`` in an exported CSV would be executed by Excel when a
    dispatcher opens it; a leading apostrophe makes it plain text (OWASP's advice). The
    importer removes that apostrophe again, so an export re-imports unchanged.
    """
    out = frame.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if not (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)):
            continue
        values = out[column]
        risky = values.map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START))
        if risky.any():
            out.loc[risky, column] = "'" + values[risky]
    return out

"""Read and write point tables in the formats field data arrives in.

Community dispatchers bulk-import stationed units, party members, care households and
incidents from spreadsheets (CSV with coordinate columns), GeoJSON, GeoPackage or a zipped
Shapefile, and export them back. This module is only the format layer: it turns a file into
coordinate arrays plus an attribute table plus a per-row problem report, and back. It does
not validate entity fields, check coordinate ranges or transform coordinates; the service
does that, using :attr:`PointTable.declared_crs` to decide what the coordinates mean.

Pure: numpy, pandas, shapely, pyproj, geopandas and pyogrio only.

Row numbers
-----------
Every row number here (:attr:`RowProblem.row`, :attr:`PointTable.row_numbers`) is the
1-based *data row* number: the first record after a CSV's header row is row 1 (so it is
spreadsheet row 2), the first feature of a GeoJSON/GeoPackage/Shapefile layer is row 1.
No row is ever dropped, so row ``k`` is always ``attributes.iloc[k - 1]``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import pyproj
import shapely

__all__ = [
    "ACCEPTED_FORMATS",
    "EXPORT_FORMATS",
    "DEFAULT_MAX_UNZIPPED_BYTES",
    "DEFAULT_MAX_COMPRESSION_RATIO",
    "DEFAULT_MAX_ZIP_MEMBERS",
    "TableFormatError",
    "RowProblem",
    "PointTable",
    "read_point_table",
    "write_point_table",
    "shapefile_field_names",
]

#: File extension (lower case) -> format name, for :func:`read_point_table`.
ACCEPTED_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".zip": "shp",
}
#: Format name -> (file extension, media type), for :func:`write_point_table`.
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "csv": (".csv", "text/csv; charset=utf-8"),
    "geojson": (".geojson", "application/geo+json"),
    "gpkg": (".gpkg", "application/geopackage+sqlite3"),
    "shp": (".zip", "application/zip"),
}

DEFAULT_MAX_UNZIPPED_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_COMPRESSION_RATIO = 100.0
DEFAULT_MAX_ZIP_MEMBERS = 1000
# Members this small cannot be a decompression bomb, while tiny sidecars and blank-padded
# .dbf files legitimately compress far beyond 100:1, so the ratio check skips them.
_RATIO_EXEMPT_BYTES = 1024 * 1024

_ACCEPTED_TEXT = ".csv, .geojson/.json, .gpkg, .zip (a zipped Shapefile)"
_FORMAT_LABELS = {"csv": "CSV", "geojson": "GeoJSON", "gpkg": "GeoPackage", "shp": "Shapefile"}
_HINTS = {
    ".shp": "a Shapefile is several files: zip the .shp with its .dbf, .shx and .prj "
    "(and .cpg if present) and upload the .zip",
    ".dbf": "zip the .dbf with its .shp, .shx and .prj and upload the .zip",
    ".shx": "zip the .shx with its .shp, .dbf and .prj and upload the .zip",
    ".xlsx": "save the sheet as CSV (UTF-8) first",
    ".xls": "save the sheet as CSV (UTF-8) first",
    ".kml": "convert it to GeoJSON first",
    ".kmz": "convert it to GeoJSON first",
}

# Auto-detected coordinate column names, compared after strip() and casefold(). Earlier
# tiers win: a file with "lon" and "x" uses "lon", since "x" is often a projected easting.
_LON_TIERS = (frozenset({"lon", "lng", "long", "longitude", "经度"}), frozenset({"x"}))
_LAT_TIERS = (frozenset({"lat", "latitude", "纬度"}), frozenset({"y"}))

_PYOGRIO_ERRORS = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError)


class TableFormatError(ValueError):
    """The file cannot be read (or the table cannot be written) in the requested format."""


@dataclass(frozen=True)
class RowProblem:
    """One problem with one field of one data row (1-based, see the module docstring)."""

    row: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        """Return ``{"row": ..., "field": ..., "reason": ...}`` for a JSON report.

        Examples
        --------
        >>> RowProblem(3, "经度", "empty").as_dict()
        {'row': 3, 'field': '经度', 'reason': 'empty'}
        """
        return {"row": self.row, "field": self.field, "reason": self.reason}


@dataclass
class PointTable:
    """Points read from a file: coordinates, attributes and what was wrong with which row.

    Attributes
    ----------
    lon, lat : numpy.ndarray
        float64 x/y in :attr:`declared_crs` (lon/lat for geographic CRSs), NaN where the row
        has a problem.
    attributes : pandas.DataFrame
        One row per input row, original column names, RangeIndex. CSV: every cell is the
        ``str`` as written ("" for an empty cell), coordinate columns excluded. Typed formats:
        the file's own field types (strings as ``str``, integers as int64 or nullable
        ``Int64`` when a value is null, booleans likewise, dates and date-times as ISO
        strings); nulls are None/NaN/NA.
    row_numbers : numpy.ndarray
        int64 1-based data row numbers, ``1..n``.
    format : str
        ``"csv"``, ``"geojson"``, ``"gpkg"`` or ``"shp"``.
    problems : list of RowProblem
        Sorted by row; field is the CSV column name or ``"geometry"``.
    declared_crs : str or None
        ``"EPSG:nnnn"`` when the file declares an identifiable CRS, its WKT when it declares
        one that is not identifiable, None when it declares none (always None for CSV; None
        for a GeoJSON without a ``crs`` member even though RFC 7946 implies WGS84, because
        Chinese files without one are often GCJ-02: the caller decides).
    encoding : str or None
        Text encoding the data was decoded with: ``"utf-8"``, ``"utf-8-sig"`` (UTF-8 with
        BOM), ``"utf-16"`` or ``"gb18030"`` (which covers GBK/GB2312) for CSV and GeoJSON;
        ``"utf-8"`` for GeoPackage; the .dbf encoding for Shapefile (None if unknown).
    columns : dict or None
        CSV only: ``{"lon": column name, "lat": column name}`` that were used.
    layer : str or None
        GeoPackage layer or zip member path of the .shp that was read.
    """

    lon: np.ndarray
    lat: np.ndarray
    attributes: pd.DataFrame
    row_numbers: np.ndarray
    format: str
    problems: list[RowProblem] = field(default_factory=list)
    declared_crs: str | None = None
    encoding: str | None = None
    columns: dict[str, str] | None = None
    layer: str | None = None

    def __len__(self) -> int:
        return len(self.lon)


# --------------------------------------------------------------------------- reading


def read_point_table(
    data: bytes | Path,
    *,
    filename: str,
    lon_column: str | None = None,
    lat_column: str | None = None,
    layer: str | None = None,
    max_rows: int | None = None,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    max_zip_members: int = DEFAULT_MAX_ZIP_MEMBERS,
) -> PointTable:
    """Return the points, attributes and per-row problems of an uploaded table.

    The format comes from ``filename``'s extension (see :data:`ACCEPTED_FORMATS`); a bare
    ``.shp`` is refused because its attributes and CRS live in sibling files.

    Rows are never dropped: a row whose coordinates are missing, non-numeric, or whose
    geometry is null, empty or not a single point gets NaN coordinates and a
    :class:`RowProblem`. Row numbers are 1-based *data* row numbers: for CSV the header is
    not counted, so data row 1 is the second line (spreadsheet row 2) unless a quoted cell
    spans lines; for the other formats it is the feature's position in the layer.

    Parameters
    ----------
    data : bytes or pathlib.Path
        File contents, or the path of the file.
    filename : str
        The user's file name; only its extension is used.
    lon_column, lat_column : str, optional
        CSV only: the coordinate columns. Each one not given is detected case-insensitively
        among lon/lng/long/longitude/经度 (then x) and lat/latitude/纬度 (then y).
    layer : str, optional
        GeoPackage: the layer (needed when there are several spatial layers). Zip: the
        .shp to read when there are several (its path in the zip, or its name without
        ``.shp``).
    max_rows : int, optional
        Refuse files with more data rows. GeoPackage and Shapefile: checked on the stored
        feature count before reading; CSV and GeoJSON: parsing stops after ``max_rows + 1``.
    max_unzipped_bytes, max_compression_ratio, max_zip_members : optional
        Zip safety limits, checked on the member list before anything is decompressed.
        The ratio check skips members under 1 MiB, which cannot be bombs.

    Raises
    ------
    TableFormatError
        Unknown extension, unreadable or malformed file, missing or ambiguous coordinate
        column, too many rows, or a zip that fails a safety check.

    Examples
    --------
    >>> t = read_point_table("名称,经度,纬度\\n甲,106.7,26.6\\n乙,,26.5\\n".encode(),
    ...                      filename="units.csv")
    >>> t.columns, t.lon.tolist(), t.attributes["名称"].tolist()
    ({'lon': '经度', 'lat': '纬度'}, [106.7, nan], ['甲', '乙'])
    >>> [p.as_dict() for p in t.problems]
    [{'row': 2, 'field': '经度', 'reason': 'empty'}]
    """
    fmt = _format_of(filename)
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 0):
        raise ValueError(f"max_rows must be a non-negative int, got {max_rows!r}")
    if fmt != "csv" and (lon_column is not None or lat_column is not None):
        raise TableFormatError(
            f"lon_column/lat_column apply to CSV only; a {_FORMAT_LABELS[fmt]} file "
            "carries point geometries"
        )
    if fmt in ("csv", "geojson") and layer is not None:
        raise TableFormatError(f"layer applies to .gpkg and .zip only, not {_FORMAT_LABELS[fmt]}")
    source = _source(data)
    if fmt == "csv":
        raw = source.read_bytes() if isinstance(source, Path) else source
        return _read_csv(raw, lon_column=lon_column, lat_column=lat_column, max_rows=max_rows)
    if fmt == "geojson":
        return _read_geojson(source, max_rows=max_rows)
    if fmt == "gpkg":
        return _read_gpkg(source, layer=layer, max_rows=max_rows)
    for name, value in (
        ("max_unzipped_bytes", max_unzipped_bytes),
        ("max_compression_ratio", max_compression_ratio),
        ("max_zip_members", max_zip_members),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return _read_zipped_shapefile(
        source,
        layer=layer,
        max_rows=max_rows,
        max_unzipped_bytes=max_unzipped_bytes,
        max_compression_ratio=max_compression_ratio,
        max_zip_members=max_zip_members,
    )


def _format_of(filename: str) -> str:
    if not isinstance(filename, str) or not filename.strip():
        raise TableFormatError(f"a file name with an extension is required, got {filename!r}")
    # Browsers on Windows may send the full path; only the last component matters.
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    fmt = ACCEPTED_FORMATS.get(suffix)
    if fmt is None:
        hint = _HINTS.get(suffix)
        what = f"{suffix!r} files are not accepted" if suffix else "the file has no extension"
        raise TableFormatError(
            f"{what}{'; ' + hint if hint else ''}. Accepted formats: {_ACCEPTED_TEXT}"
        )
    return fmt


def _source(data: bytes | Path) -> bytes | Path:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, Path):
        if not data.is_file():
            raise TableFormatError(f"no such file: {data}")
        return data
    raise TypeError(f"data must be bytes or a pathlib.Path, got {type(data).__name__}")


def _too_many_rows(max_rows: int, count: int | None = None) -> TableFormatError:
    # count is None when reading stopped at max_rows + 1 rows: the total is unknown.
    shown = f"more than {max_rows:,}" if count is None else f"{count:,}"
    return TableFormatError(f"the file has {shown} rows; at most {max_rows:,} are accepted")


# ------------------------------------------------------------------------------ CSV


def _decode_text(raw: bytes, what: str) -> tuple[str, str]:
    """Return (text, encoding name) of ``raw``: UTF-8 (BOM or not), UTF-16 with BOM, GB18030."""
    if raw.startswith(b"PK\x03\x04"):
        raise TableFormatError(
            f"this {what} file is a zip archive (an .xlsx workbook?); save it as CSV (UTF-8)"
        )
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise TableFormatError(f"this {what} file is an Excel .xls workbook; save it as CSV")
    if raw.startswith(codecs.BOM_UTF8):
        try:
            return raw[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise TableFormatError(
                f"the {what} file starts with a UTF-8 byte-order mark but byte {exc.start} is "
                "not UTF-8"
            ) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise TableFormatError(f"the {what} file is not valid UTF-16 text") from None
    if b"\x00" in raw[:8192]:
        raise TableFormatError(f"this {what} file is binary, not text")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc.start
    # Chinese Excel and WPS save "CSV" in the ANSI code page, GBK; GB18030 is its superset.
    try:
        return raw.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise TableFormatError(
            f"the {what} file is neither UTF-8 (invalid byte at offset {utf8_error}) nor "
            "GB18030/GBK text; save it as UTF-8"
        ) from None


def _lines(text: str) -> Iterator[str]:
    # Lazily, so that parsing the header does not split a million-row file.
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _fold(name: str) -> str:
    return name.strip().casefold()


def _listing(names: Iterable[str], limit: int = 20) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _pick_column(
    names: list[str],
    explicit: str | None,
    tiers: tuple[frozenset[str], ...],
    what: str,
    param: str,
) -> str:
    if explicit is not None:
        if explicit in names:
            return explicit
        loose = [n for n in names if _fold(n) == _fold(explicit)]
        if len(loose) == 1:
            return loose[0]
        raise TableFormatError(f"{param}={explicit!r} is not a column; columns: {_listing(names)}")
    for tier in tiers:
        hits = [n for n in names if _fold(n) in tier]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise TableFormatError(
                f"several {what} columns ({_listing(hits)}); pass {param} to choose one"
            )
    recognised = "/".join(sorted(set().union(*tiers)))
    raise TableFormatError(
        f"no {what} column found (recognised names: {recognised}); columns: "
        f"{_listing(names)}; pass {param}"
    )


def _coordinate_reason(cell: str) -> str:
    text = cell.strip()
    if not text:
        return "empty"
    shown = text if len(text) <= 40 else text[:37] + "..."
    if "°" in text or "度" in text:
        return f"not a decimal number: {shown!r} (degrees-minutes-seconds are not accepted)"
    if re.fullmatch(r"[+-]?\d+,\d+", text):
        return f"not a number: {shown!r} (use '.' as the decimal separator)"
    try:
        value = float(text)
    except ValueError:
        return f"not a number: {shown!r}"
    if math.isfinite(value):
        # Python's float() takes full-width digits and "1_000"; the table parser does not.
        return f"not a number: {shown!r} (write it with plain ASCII digits)"
    return f"not a finite number: {value!r}"


def _read_csv(
    raw: bytes, *, lon_column: str | None, lat_column: str | None, max_rows: int | None
) -> PointTable:
    text, encoding = _decode_text(raw, "CSV")
    if not text.strip():
        raise TableFormatError("the CSV file is empty: it needs a header row naming the columns")
    first_line = text[: text.find("\n")] if "\n" in text else text
    # Comma unless the header has none: European Excel uses ';', "Unicode text" uses tabs.
    delimiter = next((d for d in (",", "\t", ";") if d in first_line), ",")
    header = next(csv.reader(_lines(text), delimiter=delimiter))
    names = [h if h.strip() else f"column_{i + 1}" for i, h in enumerate(header)]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise TableFormatError(
                f"column name {name!r} appears twice (columns {seen[name] + 1} and {i + 1}); "
                "rename one"
            )
        seen[name] = i
    lon_name = _pick_column(names, lon_column, _LON_TIERS, "longitude", "lon_column")
    lat_name = _pick_column(names, lat_column, _LAT_TIERS, "latitude", "lat_column")
    if lon_name == lat_name:
        raise TableFormatError(f"longitude and latitude cannot both be column {lon_name!r}")

    # The C parser is fed UTF-8 (transcoded if need be): it is the fast path.
    if encoding == "utf-8":
        payload = raw
    elif encoding == "utf-8-sig":
        payload = raw[len(codecs.BOM_UTF8) :]
    else:
        payload = text.encode("utf-8")
    del text
    try:
        df = pd.read_csv(
            io.BytesIO(payload),
            sep=delimiter,
            header=0,
            index_col=False,
            dtype=object,
            na_filter=False,  # keep cells verbatim: "NA", "null" and "" stay strings
            keep_default_na=False,
            skip_blank_lines=False,  # a blank line is a row, so row numbers match the file
            nrows=None if max_rows is None else max_rows + 1,
            encoding="utf-8",
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise TableFormatError(
            f"malformed CSV: {exc} (line numbers count the header line)".replace("\n", " ")
        ) from None
    if max_rows is not None and len(df) > max_rows:
        raise _too_many_rows(max_rows)
    if len(df.columns) != len(names):
        raise TableFormatError(
            f"the header has {len(names)} columns but the rows have {len(df.columns)}"
        )
    df.columns = names

    n = len(df)
    lon_cells = df[lon_name].to_numpy(dtype=object)
    lat_cells = df[lat_name].to_numpy(dtype=object)
    lon = pd.to_numeric(df[lon_name], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    lat = pd.to_numeric(df[lat_name], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    bad_lon = ~np.isfinite(lon)
    bad_lat = ~np.isfinite(lat)
    lon[bad_lon] = np.nan
    lat[bad_lat] = np.nan
    problems: list[RowProblem] = []
    # Python per row only for the rows that have a problem.
    for i in np.flatnonzero(bad_lon | bad_lat):
        if bad_lon[i]:
            problems.append(RowProblem(int(i) + 1, lon_name, _coordinate_reason(lon_cells[i])))
        if bad_lat[i]:
            problems.append(RowProblem(int(i) + 1, lat_name, _coordinate_reason(lat_cells[i])))
    attributes = df.drop(columns=[lon_name, lat_name]).reset_index(drop=True)
    return PointTable(
        lon=lon,
        lat=lat,
        attributes=attributes,
        row_numbers=np.arange(1, n + 1, dtype=np.int64),
        problems=problems,
        declared_crs=None,
        format="csv",
        encoding=encoding,
        columns={"lon": lon_name, "lat": lat_name},
    )


# ------------------------------------------------------------- GDAL-read formats


def _normalize_crs(crs: str | None) -> str | None:
    """Return ``"EPSG:nnnn"`` for an identifiable CRS, the input otherwise, None for none."""
    if not crs:
        return None
    upper = crs.strip().upper()
    if upper in ("OGC:CRS84", "EPSG:4326"):  # CRS84 is WGS84 in lon/lat order
        return "EPSG:4326"
    if re.fullmatch(r"[A-Z]+:\d+", upper):
        return upper
    try:
        epsg = pyproj.CRS.from_user_input(crs).to_epsg()
    except pyproj.exceptions.CRSError:
        epsg = None
    return f"EPSG:{epsg}" if epsg else crs


# Little-endian 2D ISO WKB point: byte order, type, x, y (21 bytes, packed).
_WKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])


def _geometry_reason(blob: bytes | None) -> str:
    if blob is None:
        return "no geometry (null)"
    geom = shapely.from_wkb(blob)
    if geom.is_empty:
        return f"empty geometry ({geom.geom_type})"
    if geom.geom_type == "MultiPoint":
        return f"MultiPoint with {len(geom.geoms)} points; expected a single point"
    if geom.geom_type != "Point":
        return f"geometry is a {geom.geom_type}; expected a Point"
    return "non-finite coordinates"


def _points_from_wkb(wkb: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[RowProblem]]:
    """Return (x, y, problems) of an object array of WKB blobs (None for null)."""
    n = len(wkb)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    done = np.zeros(n, dtype=bool)
    # Fast path for plain 2D points (what GDAL hands back for almost every point layer):
    # decode the fixed 21-byte records with numpy instead of building shapely objects.
    lengths = np.fromiter((-1 if b is None else len(b) for b in wkb), dtype=np.int64, count=n)
    cand = np.flatnonzero(lengths == _WKB_POINT.itemsize)
    if cand.size:
        rec = np.frombuffer(b"".join(wkb[cand]), dtype=_WKB_POINT)
        plain = (rec["order"] == 1) & (rec["type"] == 1)
        idx = cand[plain]
        x[idx] = rec["x"][plain]
        y[idx] = rec["y"][plain]
        done[idx] = True
    rest = np.flatnonzero(~done & (lengths >= 0))
    if rest.size:
        geoms = shapely.from_wkb(wkb[rest])
        kind = shapely.get_type_id(geoms)
        single = (kind == shapely.GeometryType.MULTIPOINT) & (
            shapely.get_num_geometries(geoms) == 1
        )
        points = geoms.copy()
        points[single] = shapely.get_geometry(geoms[single], 0)
        ok = (kind == shapely.GeometryType.POINT) | single
        x[rest[ok]] = shapely.get_x(points[ok])
        y[rest[ok]] = shapely.get_y(points[ok])
    bad = ~(np.isfinite(x) & np.isfinite(y))
    x[bad] = np.nan
    y[bad] = np.nan
    problems = [
        RowProblem(int(i) + 1, "geometry", _geometry_reason(wkb[i])) for i in np.flatnonzero(bad)
    ]
    return x, y, problems


def _attribute_frame(meta: dict, field_data: list[np.ndarray], n: int) -> pd.DataFrame:
    columns: dict[str, object] = {}
    for name, dtype, values in zip(meta["fields"], meta["dtypes"], field_data, strict=True):
        if str(dtype).startswith(("int", "uint")) and values.dtype.kind == "f":
            # pyogrio turns an integer field with nulls into float; restore the integers.
            columns[name] = pd.array(values, dtype="Int64")
        elif str(dtype) == "bool" and values.dtype.kind == "f":
            columns[name] = pd.array(values, dtype="boolean")
        elif values.dtype == object:
            columns[name] = pd.Series(values, dtype=object, copy=False)
        else:
            columns[name] = values
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


@dataclass
class _OgrLayer:
    """One layer as GDAL read it: points, attributes, problems, GDAL's CRS and encoding."""

    x: np.ndarray
    y: np.ndarray
    attributes: pd.DataFrame
    problems: list[RowProblem]
    crs: str | None
    encoding: str | None

    def table(self, **fields) -> PointTable:
        """Return the layer as a :class:`PointTable` with ``fields`` (format, CRS, ...)."""
        return PointTable(
            lon=self.x,
            lat=self.y,
            attributes=self.attributes,
            row_numbers=np.arange(1, len(self.x) + 1, dtype=np.int64),
            problems=self.problems,
            **fields,
        )


def _read_ogr(
    path: Path, *, fmt: str, layer: str | None, encoding: str | None, max_rows: int | None
) -> _OgrLayer:
    """Return one layer of a file GDAL reads."""
    label = _FORMAT_LABELS[fmt]
    try:
        if max_rows is not None and fmt != "geojson":
            # GeoPackage and Shapefile store their feature count: refuse before reading.
            count = pyogrio.read_info(path, layer=layer, encoding=encoding)["features"]
            if count > max_rows:
                raise _too_many_rows(max_rows, count)
        meta, _, wkb, field_data = pyogrio.raw.read(
            path,
            layer=layer,
            encoding=encoding,
            max_features=None if max_rows is None else max_rows + 1,
            datetime_as_string=True,
        )
    except _PYOGRIO_ERRORS as exc:
        raise TableFormatError(f"cannot read the {label} file: {exc}") from None
    if wkb is None:
        raise TableFormatError(f"the {label} layer has no geometry column")
    n = len(wkb)
    if max_rows is not None and n > max_rows:
        raise _too_many_rows(max_rows)
    x, y, problems = _points_from_wkb(wkb)
    attributes = _attribute_frame(meta, field_data, n)
    return _OgrLayer(x, y, attributes, problems, meta.get("crs"), meta.get("encoding"))


def _geojson_declared_crs(raw: bytes, gdal_crs: str | None) -> str | None:
    # GDAL reports EPSG:4326 for a GeoJSON without a crs member; we must report None then.
    if b'"crs"' not in raw:
        return None
    normalized = _normalize_crs(gdal_crs)
    if normalized != "EPSG:4326":
        return normalized  # only a crs member can make GDAL report anything else
    # Either a crs member naming WGS84/CRS84, or merely a property called "crs".
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return normalized if isinstance(doc, dict) and doc.get("crs") is not None else None


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _read_geojson(source: bytes | Path, *, max_rows: int | None) -> PointTable:
    raw = source.read_bytes() if isinstance(source, Path) else source
    text, encoding = _decode_text(raw, "GeoJSON")
    # GDAL cuts a string at an escaped NUL ("a\u0000b" reads as "a"): refuse it rather than
    # store less than was sent. An even run of backslashes before it is escaped text.
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise TableFormatError(
            "the GeoJSON file holds a NUL character (\\u0000) in a string; it cannot be stored"
        )
    if encoding == "utf-8-sig":
        encoding = "utf-8"
    if encoding != "utf-8":
        raw = text.encode("utf-8")  # GDAL reads GeoJSON as UTF-8 only
    elif raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    del text
    with tempfile.TemporaryDirectory(prefix="wangge-table-") as tmp:
        path = Path(tmp, "upload.geojson")
        path.write_bytes(raw)
        read = _read_ogr(path, fmt="geojson", layer=None, encoding=None, max_rows=max_rows)
    return read.table(
        declared_crs=_geojson_declared_crs(raw, read.crs),
        format="geojson",
        encoding=encoding,
    )


def _choose_gpkg_layer(path: Path, layer: str | None) -> str:
    try:
        layers = pyogrio.list_layers(path)
    except _PYOGRIO_ERRORS as exc:
        raise TableFormatError(f"cannot read the GeoPackage file: {exc}") from None
    names = [str(name) for name, _ in layers]
    described = ", ".join(f"{name!r} ({kind or 'no geometry'})" for name, kind in layers)
    if layer is not None:
        if layer not in names:
            raise TableFormatError(f"no layer {layer!r} in the GeoPackage; layers: {described}")
        return layer
    spatial = [str(name) for name, kind in layers if kind is not None]
    if len(names) == 1:
        return names[0]
    if len(spatial) == 1:
        return spatial[0]
    if not names:
        raise TableFormatError("the GeoPackage has no layers")
    raise TableFormatError(
        f"the GeoPackage has {len(spatial)} spatial layers: {described}; pass layer to choose one"
    )


def _read_gpkg(source: bytes | Path, *, layer: str | None, max_rows: int | None) -> PointTable:
    with tempfile.TemporaryDirectory(prefix="wangge-table-") as tmp:
        if isinstance(source, Path):
            path = source
        else:
            # A real file with the right extension: GDAL's SQLite needs no /vsimem/ tricks.
            path = Path(tmp, "upload.gpkg")
            path.write_bytes(source)
        chosen = _choose_gpkg_layer(path, layer)
        read = _read_ogr(path, fmt="gpkg", layer=chosen, encoding=None, max_rows=max_rows)
    return read.table(
        declared_crs=_normalize_crs(read.crs),
        format="gpkg",
        encoding="utf-8",
        layer=chosen,
    )


# ------------------------------------------------------------------ zipped Shapefile


def _check_zip_members(
    infos: list[zipfile.ZipInfo],
    *,
    max_unzipped_bytes: int,
    max_compression_ratio: float,
    max_zip_members: int,
) -> None:
    """Raise TableFormatError if the member list is unsafe; nothing is decompressed here."""
    if len(infos) > max_zip_members:
        raise TableFormatError(
            f"the zip has {len(infos):,} members; at most {max_zip_members:,} are accepted"
        )
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise TableFormatError(f"the zip member {name!r} has an absolute path; refused")
        if ".." in parts:
            raise TableFormatError(
                f"the zip member {name!r} points outside the archive ('..' in its path); refused"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise TableFormatError(f"the zip member {name!r} is a symbolic link; refused")
        if info.flag_bits & 0x1:
            raise TableFormatError(f"the zip member {name!r} is encrypted; upload it unencrypted")
        total += info.file_size
        if info.file_size > _RATIO_EXEMPT_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > max_compression_ratio:
                raise TableFormatError(
                    f"the zip member {name!r} would expand {ratio:,.0f}-fold "
                    f"({info.compress_size:,} to {info.file_size:,} bytes), above the "
                    f"compression ratio limit of {max_compression_ratio:,.0f}; refused as a "
                    "possible zip bomb"
                )
    if total > max_unzipped_bytes:
        raise TableFormatError(
            f"the zip would expand to {total:,} bytes, above the uncompressed size limit of "
            f"{max_unzipped_bytes:,} bytes"
        )


def _is_junk(name: str) -> bool:
    # macOS Finder adds __MACOSX/._name resource forks that end in .shp too.
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._")


def _choose_shp(infos: list[zipfile.ZipInfo], layer: str | None) -> zipfile.ZipInfo:
    shps = [i for i in infos if i.filename.lower().endswith(".shp") and not _is_junk(i.filename)]
    found = ", ".join(repr(i.filename) for i in shps)
    if not shps:
        others = _listing([i.filename for i in infos if not i.is_dir()], limit=10)
        raise TableFormatError(
            f"the zip contains no .shp file (members: {others or 'none'}); a zipped Shapefile "
            "needs the .shp with its .dbf, .shx and .prj"
        )
    if layer is not None:
        wanted = layer.casefold()
        hits = [
            i
            for i in shps
            if wanted in (i.filename.casefold(), PurePosixPath(i.filename).stem.casefold())
        ]
        if len(hits) != 1:
            raise TableFormatError(
                f"layer {layer!r} {'is ambiguous' if hits else 'is not'} among the .shp files "
                f"in the zip: {found}"
            )
        return hits[0]
    if len(shps) > 1:
        raise TableFormatError(
            f"the zip contains {len(shps)} .shp files: {found}; pass layer to choose one"
        )
    return shps[0]


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    # Bounded copy: never write more than the size the (already checked) header declared.
    remaining = info.file_size
    with zf.open(info) as src, target.open("wb") as dst:
        while chunk := src.read(min(1 << 20, remaining + 1)):
            remaining -= len(chunk)
            if remaining < 0:
                raise TableFormatError(f"the zip member {info.filename!r} is larger than declared")
            dst.write(chunk)


def _sniff_dbf_encoding(dbf: Path) -> str | None:
    """Return the encoding of a .dbf that declares none (no .cpg, language driver 0).

    GDAL then assumes ISO-8859-1, which garbles Chinese: test UTF-8, then GB18030, on the
    field names and the first records. None when the text is plain ASCII or neither fits.
    """
    with dbf.open("rb") as fh:
        head = fh.read(32)
        if len(head) < 32 or head[29] != 0:
            return None  # GDAL maps a language driver id itself
        header_len = int.from_bytes(head[8:10], "little")
        descriptors = fh.read(max(header_len - 32, 0))
        records = fh.read(4 << 20)
    names = b"".join(
        descriptors[i : i + 11].split(b"\0", 1)[0] for i in range(0, len(descriptors) - 31, 32)
    )
    sample = names + b" " + records
    if sample.isascii():
        return None
    for candidate in ("utf-8", "gb18030"):
        try:
            # Not final: the 4 MiB sample may end inside a character.
            codecs.getincrementaldecoder(candidate)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        return candidate.upper()
    return None


def _read_zipped_shapefile(
    source: bytes | Path,
    *,
    layer: str | None,
    max_rows: int | None,
    max_unzipped_bytes: int,
    max_compression_ratio: float,
    max_zip_members: int,
) -> PointTable:
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TableFormatError(f"not a readable zip file: {exc}") from None
    with zf, tempfile.TemporaryDirectory(prefix="wangge-table-") as tmp:
        infos = zf.infolist()
        _check_zip_members(
            infos,
            max_unzipped_bytes=max_unzipped_bytes,
            max_compression_ratio=max_compression_ratio,
            max_zip_members=max_zip_members,
        )
        shp = _choose_shp(infos, layer)
        stem = shp.filename[: -len(".shp")]
        siblings = {
            i.filename[len(stem) :].lower(): i
            for i in infos
            if i.filename[: len(stem)].casefold() == stem.casefold() and not i.is_dir()
        }
        missing = [ext for ext in (".shx", ".dbf") if ext not in siblings]
        if missing:
            raise TableFormatError(
                f"{shp.filename!r} is incomplete: the zip has no {' or '.join(missing)} beside "
                "it; zip the .shp with its .dbf, .shx and .prj"
            )
        # Fixed local names: nothing from the archive's paths reaches the file system.
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            if ext in siblings:
                _copy_member(zf, siblings[ext], Path(tmp, "upload" + ext))
        path = Path(tmp, "upload.shp")
        sniffed = None if ".cpg" in siblings else _sniff_dbf_encoding(Path(tmp, "upload.dbf"))
        read = _read_ogr(path, fmt="shp", layer=None, encoding=sniffed, max_rows=max_rows)
    encoding = sniffed or read.encoding
    return read.table(
        declared_crs=_normalize_crs(read.crs) if ".prj" in siblings else None,
        format="shp",
        encoding=encoding.lower() if encoding else None,
        layer=shp.filename,
    )


# --------------------------------------------------------------------------- writing


def _truncate_utf8(name: str, max_bytes: int) -> str:
    encoded = name.encode("utf-8")[:max_bytes]
    return encoded.decode("utf-8", errors="ignore")  # drops a character cut in half


def shapefile_field_names(columns: Iterable[str]) -> dict[str, str]:
    """Return ``{column: .dbf field name}``: at most 10 UTF-8 bytes, unique ignoring case.

    A .dbf field name holds 10 bytes, i.e. three Chinese characters in UTF-8. Names that fit
    are kept; longer ones are cut at a character boundary, and clashes get ``_1``, ``_2``…

    Examples
    --------
    >>> names = shapefile_field_names(["name", "联系人电话号码", "household_id", "household_no"])
    >>> list(names.values())
    ['name', '联系人', 'household_', 'househol_1']
    """
    columns = list(columns)
    used: set[str] = set()
    out: dict[str, str] = {}
    # Names that already fit are kept first, so a renamed column never takes their place.
    for col in columns:
        if len(col.encode("utf-8")) <= 10 and col.casefold() not in used:
            out[col] = col
            used.add(col.casefold())
    for col in columns:
        if col in out:
            continue
        name, k = _truncate_utf8(col, 10), 0
        while not name or name.casefold() in used:
            k += 1
            suffix = f"_{k}"
            name = _truncate_utf8(col, 10 - len(suffix)) + suffix
        out[col] = name
        used.add(name.casefold())
    return {col: out[col] for col in columns}


def _check_write_inputs(
    lon, lat, attributes, fmt: str, crs: str, layer: str
) -> tuple[np.ndarray, np.ndarray]:
    if fmt not in EXPORT_FORMATS:
        raise TableFormatError(
            f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}"
        )
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.ndim != 1 or lat.shape != lon.shape:
        raise ValueError(
            f"lon and lat must be 1-D of equal length, got {lon.shape} and {lat.shape}"
        )
    if not isinstance(attributes, pd.DataFrame):
        raise TypeError(f"attributes must be a pandas DataFrame, got {type(attributes).__name__}")
    if len(attributes) != len(lon):
        raise ValueError(f"attributes has {len(attributes)} rows but there are {len(lon)} points")
    names = list(attributes.columns)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"attribute column names must be non-empty strings, got {bad!r}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"attribute column names must be unique; repeated: {dup!r}")
    if (
        not isinstance(layer, str)
        or not re.fullmatch(r"[^/\\:*?\"<>|\x00-\x1f]+", layer)
        or (layer.strip(".") == "")
    ):
        raise ValueError(f"layer must be a plain name usable as a file name, got {layer!r}")
    try:
        pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        raise ValueError(f"unknown crs {crs!r}") from None
    return lon, lat


def write_point_table(
    lon,
    lat,
    attributes: pd.DataFrame,
    *,
    format: str,
    crs: str = "EPSG:4326",
    layer: str = "features",
) -> bytes:
    """Return the file contents of a point table in ``format`` (see :data:`EXPORT_FORMATS`).

    Points with a NaN coordinate are written with a null geometry (empty cells in CSV), so
    reading the file back reports them as problems instead of losing the row.

    - ``csv``: columns ``lon``, ``lat`` first, then the attributes; UTF-8 with a BOM so that
      Excel opens Chinese text correctly; CRLF line ends; coordinates written exactly
      (shortest round-trip repr). A CSV carries no CRS: ``crs`` is not recorded. Attribute
      columns named like coordinate columns (lon, 经度, lat, …) are refused, because
      reading the file back could not tell them apart.
    - ``geojson``: a FeatureCollection named ``layer`` with a ``crs`` member naming ``crs``.
    - ``gpkg``: one layer ``layer``.
    - ``shp``: a zip of ``layer``.shp/.shx/.dbf/.prj/.cpg, text in UTF-8. Field names longer
      than 10 bytes are shortened by :func:`shapefile_field_names` (names of more than three
      Chinese characters are cut); text values over 254 bytes are refused rather than
      silently truncated. A .dbf cannot tell "" from null: empty strings read back as None.

    Raises
    ------
    TableFormatError
        Unknown format, or a table the format cannot hold.
    ValueError, TypeError
        Mismatched lengths, bad column names, unknown ``crs`` or unusable ``layer``.

    Examples
    --------
    >>> data = write_point_table([106.7], [26.6], pd.DataFrame({"名称": ["甲"]}), format="csv")
    >>> data.decode("utf-8-sig")
    'lon,lat,名称\\r\\n106.7,26.6,甲\\r\\n'
    """
    lon, lat = _check_write_inputs(lon, lat, attributes, format, crs, layer)
    attributes = attributes.reset_index(drop=True)
    if format == "csv":
        return _write_csv(lon, lat, attributes)
    if format == "shp":
        attributes = _shapefile_attributes(attributes)
    geometry = np.full(len(lon), None, dtype=object)
    ok = np.isfinite(lon) & np.isfinite(lat)
    geometry[ok] = shapely.points(lon[ok], lat[ok])
    import geopandas  # imported here: only writing needs it

    # A column of its own name, so that an attribute called "geometry" survives.
    geometry_column = _unused_name("__geometry__", attributes.columns)
    frame = attributes.copy()
    frame[geometry_column] = geopandas.GeoSeries(geometry, crs=crs)
    frame = geopandas.GeoDataFrame(frame, geometry=geometry_column, crs=crs)
    layer_options = None
    if format == "gpkg":
        # GDAL names the GeoPackage geometry and key columns "geom" and "fid", and would
        # refuse attributes of those names: pick free names instead.
        layer_options = {
            "GEOMETRY_NAME": _unused_name("geom", attributes.columns),
            "FID": _unused_name("fid", attributes.columns),
        }
    driver, suffix = {
        "geojson": ("GeoJSON", ".geojson"),
        "gpkg": ("GPKG", ".gpkg"),
        "shp": ("ESRI Shapefile", ".shp"),
    }[format]
    with tempfile.TemporaryDirectory(prefix="wangge-table-") as tmp:
        path = Path(tmp, layer + suffix)
        try:
            pyogrio.write_dataframe(
                frame,
                path,
                layer=layer,
                driver=driver,
                geometry_type="Point",
                encoding="UTF-8" if format == "shp" else None,
                layer_options=layer_options,
            )
        except _PYOGRIO_ERRORS as exc:
            raise TableFormatError(f"cannot write {_FORMAT_LABELS[format]}: {exc}") from None
        if format != "shp":
            return path.read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                member = Path(tmp, layer + ext)
                if member.exists():
                    zf.write(member, arcname=layer + ext)
        return buffer.getvalue()


def _unused_name(preferred: str, columns: Iterable[str]) -> str:
    taken = {_fold(c) for c in columns}
    name, k = preferred, 0
    while name.casefold() in taken:
        k += 1
        name = f"{preferred}_{k}"
    return name


def _write_csv(lon: np.ndarray, lat: np.ndarray, attributes: pd.DataFrame) -> bytes:
    clashes = [c for c in attributes.columns if _fold(c) in _LON_TIERS[0] | _LAT_TIERS[0]]
    if clashes:
        raise TableFormatError(
            f"attribute columns {clashes!r} would be mistaken for the lon/lat columns when the "
            "CSV is read back; rename them"
        )
    table = pd.concat([pd.DataFrame({"lon": lon, "lat": lat}), attributes], axis=1)
    text = table.to_csv(index=False, lineterminator="\r\n", na_rep="")
    return codecs.BOM_UTF8 + text.encode("utf-8")


def _shapefile_attributes(attributes: pd.DataFrame) -> pd.DataFrame:
    renamed = attributes.rename(columns=shapefile_field_names(attributes.columns))
    for original, name in zip(attributes.columns, renamed.columns, strict=True):
        column = renamed[name]
        if column.dtype.kind in "biufcmM":
            continue
        sizes = column.map(lambda v: len(v.encode("utf-8")) if isinstance(v, str) else 0)
        too_long = np.flatnonzero(sizes.to_numpy() > 254)
        if too_long.size:
            raise TableFormatError(
                f"column {original!r} row {too_long[0] + 1} holds {sizes.iloc[too_long[0]]} "
                "bytes of text; a Shapefile field holds at most 254 (export as gpkg instead)"
            )
    return renamed

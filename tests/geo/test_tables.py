"""Tests of geo.tables: reading and writing point tables (CSV, GeoJSON, GeoPackage, Shapefile)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import geopandas
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from geo.tables import (
    ACCEPTED_FORMATS,
    EXPORT_FORMATS,
    PointTable,
    RowProblem,
    TableFormatError,
    read_point_table,
    shapefile_field_names,
    write_point_table,
)

NAMES = ["观山湖区网格服务站", "云岩区 第3网格（党员）", "花溪区·青岩古镇"]
LON = np.array([106.62345678912345, 106.71, 106.6871234])
LAT = np.array([26.64612345678901, 26.58, 26.4109876])


def problems(table: PointTable) -> list[tuple[int, str, str]]:
    return [(p.row, p.field, p.reason) for p in table.problems]


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


def shapefile_members(tmp_path: Path, stem: str = "pts", **write_kwargs) -> dict[str, bytes]:
    """Return {file name: bytes} of a 3-point shapefile written by pyogrio."""
    frame = geopandas.GeoDataFrame(
        {"名称": NAMES}, geometry=shapely.points(LON, LAT), crs="EPSG:4490"
    )
    folder = tmp_path / f"shp_{stem}"
    folder.mkdir()
    pyogrio.write_dataframe(frame, folder / f"{stem}.shp", **write_kwargs)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------ CSV


def test_csv_autodetects_english_columns_case_insensitively_and_keeps_strings():
    data = (
        "Name,Longitude,LAT,code\n"
        f"{NAMES[0]},{LON[0]},{LAT[0]},007\n"
        f"{NAMES[1]},{LON[1]},{LAT[1]},NA\n"
    ).encode()
    table = read_point_table(data, filename="units.CSV")
    assert table.format == "csv" and table.encoding == "utf-8"
    assert table.columns == {"lon": "Longitude", "lat": "LAT"}
    np.testing.assert_array_equal(table.lon, LON[:2])
    np.testing.assert_array_equal(table.lat, LAT[:2])
    assert list(table.attributes.columns) == ["Name", "code"]
    # No silent type coercion: leading zeros and "NA" stay the strings that were written.
    assert table.attributes["code"].tolist() == ["007", "NA"]
    assert table.attributes["Name"].tolist() == NAMES[:2]
    assert table.row_numbers.tolist() == [1, 2]
    assert table.problems == [] and table.declared_crs is None


def test_csv_autodetects_chinese_columns():
    data = f"名称,经度,纬度\n{NAMES[0]},106.7,26.6\n".encode()
    table = read_point_table(data, filename="网格员.csv")
    assert table.columns == {"lon": "经度", "lat": "纬度"}
    assert (table.lon[0], table.lat[0]) == (106.7, 26.6)
    assert table.attributes.to_dict("records") == [{"名称": NAMES[0]}]


def test_csv_prefers_named_columns_over_x_y_and_explicit_columns_override():
    data = b"x,y,lng,lat,gcj_lon,gcj_lat\n1,2,106.1,26.1,106.2,26.2\n"
    auto = read_point_table(data, filename="a.csv")
    assert auto.columns == {"lon": "lng", "lat": "lat"}
    explicit = read_point_table(data, filename="a.csv", lon_column="gcj_lon", lat_column="GCJ_LAT")
    assert explicit.columns == {"lon": "gcj_lon", "lat": "gcj_lat"}
    assert (explicit.lon[0], explicit.lat[0]) == (106.2, 26.2)
    assert list(explicit.attributes.columns) == ["x", "y", "lng", "lat"]


def test_csv_coordinate_column_errors_name_the_columns():
    with pytest.raises(TableFormatError, match=r"several longitude columns \('lng', '经度'\)"):
        read_point_table(b"lng,\xe7\xbb\x8f\xe5\xba\xa6,lat\n1,2,3\n", filename="a.csv")
    with pytest.raises(TableFormatError, match=r"no latitude column.*'名称', 'lon'.*lat_column"):
        read_point_table("名称,lon\n甲,1\n".encode(), filename="a.csv")
    with pytest.raises(TableFormatError, match=r"lon_column='东经' is not a column"):
        read_point_table(b"lon,lat\n1,2\n", filename="a.csv", lon_column="东经")
    with pytest.raises(TableFormatError, match=r"'lon' appears twice \(columns 1 and 3\)"):
        read_point_table(b"lon,lat,lon\n1,2,3\n", filename="a.csv")


def test_gbk_csv_is_decoded_as_gb18030():
    data = f"名称,经度,纬度\n{NAMES[0]},106.7,26.6\n{NAMES[2]},106.5,26.4\n".encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the test input really is not UTF-8
    table = read_point_table(data, filename="a.csv")
    assert table.encoding == "gb18030"
    assert table.columns == {"lon": "经度", "lat": "纬度"}
    assert table.attributes["名称"].tolist() == [NAMES[0], NAMES[2]]


def test_utf8_bom_is_stripped_from_the_first_column_name():
    data = "\ufeff名称,lon,lat\n甲,1.5,2.5\n".encode()
    table = read_point_table(data, filename="a.csv")
    assert table.encoding == "utf-8-sig"
    assert list(table.attributes.columns) == ["名称"]
    assert table.attributes["名称"].tolist() == ["甲"]


def test_utf16_tab_separated_excel_unicode_text():
    data = "名称\t经度\t纬度\r\n甲\t106.7\t26.6\r\n".encode("utf-16")
    table = read_point_table(data, filename="a.csv")
    assert table.encoding == "utf-16"
    assert (table.lon[0], table.lat[0], table.attributes["名称"][0]) == (106.7, 26.6, "甲")


def test_bad_coordinates_keep_the_row_and_report_row_and_column():
    data = (
        "名称,经度,纬度\n"
        "甲,106.7,26.6\n"  # row 1 fine
        "乙,,26.5\n"  # row 2: empty longitude
        "丙,106.5,abc\n"  # row 3: non-numeric latitude
        '丁,"106,5",26°30\'\n'  # row 4: both bad
        "戊, 106.25 ,inf\n"  # row 5: padded number is fine, infinity is not
        "己,１０６.５,26.5\n"  # row 6: full-width digits
    ).encode()
    table = read_point_table(data, filename="a.csv")
    assert table.attributes["名称"].tolist() == ["甲", "乙", "丙", "丁", "戊", "己"]
    assert table.row_numbers.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(table.lon, [106.7, np.nan, 106.5, np.nan, 106.25, np.nan])
    np.testing.assert_array_equal(table.lat, [26.6, 26.5, np.nan, np.nan, np.nan, 26.5])
    assert problems(table) == [
        (2, "经度", "empty"),
        (3, "纬度", "not a number: 'abc'"),
        (4, "经度", "not a number: '106,5' (use '.' as the decimal separator)"),
        (4, "纬度", 'not a decimal number: "26°30\'" (degrees-minutes-seconds are not accepted)'),
        (5, "纬度", "not a finite number: inf"),
        (6, "经度", "not a number: '１０６.５' (write it with plain ASCII digits)"),
    ]
    assert table.problems[0].as_dict() == {"row": 2, "field": "经度", "reason": "empty"}


def test_row_numbers_count_data_rows_not_lines():
    # A quoted cell spanning two lines is still one row; a blank line is a row of its own.
    data = b'name,lon,lat\n"two\nlines",1,2\n\nc,x,3\n'
    table = read_point_table(data, filename="a.csv")
    assert table.attributes["name"].tolist() == ["two\nlines", "", "c"]
    assert problems(table) == [
        (2, "lon", "empty"),
        (2, "lat", "empty"),
        (3, "lon", "not a number: 'x'"),
    ]


def test_malformed_and_empty_csv_are_refused():
    with pytest.raises(TableFormatError, match="malformed CSV: .*Expected 3 fields in line 3"):
        read_point_table(b"n,lon,lat\na,1,2\nb,1,2,3\n", filename="a.csv")
    with pytest.raises(TableFormatError, match="empty"):
        read_point_table(b"", filename="a.csv")
    with pytest.raises(TableFormatError, match="xlsx"):
        read_point_table(zip_bytes({"xl/workbook.xml": b"<x/>"}), filename="a.csv")
    header_only = read_point_table(b"lon,lat,name\n", filename="a.csv")
    assert len(header_only) == 0 and list(header_only.attributes.columns) == ["name"]


def test_path_input(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"lon,lat\n1,2\n")
    assert read_point_table(path, filename=path.name).lon.tolist() == [1.0]
    with pytest.raises(TypeError, match="bytes or a pathlib.Path"):
        read_point_table(str(path), filename="a.csv")


def test_max_rows():
    data = b"lon,lat\n" + b"1,2\n" * 5
    assert len(read_point_table(data, filename="a.csv", max_rows=5)) == 5
    with pytest.raises(TableFormatError, match="more than 4 rows; at most 4 are accepted"):
        read_point_table(data, filename="a.csv", max_rows=4)


# ---------------------------------------------------------------------------- GeoJSON


def feature(geometry, **properties):
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def test_geojson_reports_non_point_and_null_geometries_and_reads_the_rest():
    doc = {
        "type": "FeatureCollection",
        "features": [
            feature({"type": "Point", "coordinates": [106.7, 26.6]}, 名称="甲", crs="x"),
            feature({"type": "LineString", "coordinates": [[1, 2], [3, 4]]}, 名称="乙"),
            feature(None, 名称="丙"),
            feature({"type": "MultiPoint", "coordinates": [[106.5, 26.5]]}, 名称="丁"),
            feature({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}, 名称="戊"),
            feature({"type": "Point", "coordinates": [106.1, 26.1, 1200.0]}, 名称="己"),
            feature({"type": "MultiPoint", "coordinates": []}, 名称="庚"),
        ],
    }
    table = read_point_table(json.dumps(doc, ensure_ascii=False).encode(), filename="a.geojson")
    assert table.format == "geojson" and len(table) == 7
    assert table.attributes["名称"].tolist() == ["甲", "乙", "丙", "丁", "戊", "己", "庚"]
    np.testing.assert_array_equal(table.lon, [106.7, np.nan, np.nan, 106.5, np.nan, 106.1, np.nan])
    np.testing.assert_array_equal(table.lat, [26.6, np.nan, np.nan, 26.5, np.nan, 26.1, np.nan])
    assert problems(table) == [
        (2, "geometry", "geometry is a LineString; expected a Point"),
        (3, "geometry", "no geometry (null)"),
        (5, "geometry", "MultiPoint with 2 points; expected a single point"),
        (7, "geometry", "empty geometry (MultiPoint)"),
    ]
    # No crs member (a property called "crs" does not count): the caller decides.
    assert table.declared_crs is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [("urn:ogc:def:crs:EPSG::4490", "EPSG:4490"), ("urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326")],
)
def test_geojson_crs_member_is_reported(name, expected):
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": name}},
        "features": [feature({"type": "Point", "coordinates": [106.7, 26.6]})],
    }
    table = read_point_table(json.dumps(doc).encode(), filename="a.json")
    assert table.declared_crs == expected


def test_geojson_in_gbk_is_transcoded():
    doc = {"type": "FeatureCollection", "features": [feature(None, 名称=NAMES[1])]}
    table = read_point_table(json.dumps(doc, ensure_ascii=False).encode("gbk"), filename="a.json")
    assert table.encoding == "gb18030" and table.attributes["名称"].tolist() == [NAMES[1]]


def test_csv_options_are_refused_for_other_formats():
    with pytest.raises(TableFormatError, match="lon_column/lat_column apply to CSV only"):
        read_point_table(b"{}", filename="a.geojson", lon_column="x")
    with pytest.raises(TableFormatError, match="layer applies to .gpkg and .zip only"):
        read_point_table(b"lon,lat\n", filename="a.csv", layer="x")


# ------------------------------------------------------------------------- GeoPackage


def write_gpkg(path: Path, layer: str, crs: str | None, n: int = 3) -> None:
    frame = geopandas.GeoDataFrame(
        {"名称": NAMES[:n], "人数": pd.array([3, None, 5][:n], dtype="Int64")},
        geometry=shapely.points(LON[:n], LAT[:n]),
        crs=crs,
    )
    pyogrio.write_dataframe(frame, path, layer=layer, driver="GPKG", append=path.exists())


def test_gpkg_declared_cgcs2000_is_reported(tmp_path):
    path = tmp_path / "stations.gpkg"
    write_gpkg(path, "stations", "EPSG:4490")
    table = read_point_table(path.read_bytes(), filename="stations.gpkg")
    assert table.format == "gpkg" and table.layer == "stations"
    assert table.declared_crs == "EPSG:4490"
    np.testing.assert_allclose(table.lon, LON, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.lat, LAT, rtol=0, atol=1e-12)
    assert table.attributes["名称"].tolist() == NAMES
    # An integer field with a null stays integer (pyogrio alone would make it float).
    assert table.attributes["人数"].tolist() == [3, pd.NA, 5]


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_gpkg_without_crs_reports_none(tmp_path):
    path = tmp_path / "a.gpkg"
    write_gpkg(path, "a", None)
    assert read_point_table(path, filename="a.gpkg").declared_crs is None


def test_gpkg_with_several_layers_needs_layer(tmp_path):
    path = tmp_path / "two.gpkg"
    write_gpkg(path, "units", "EPSG:4490")
    write_gpkg(path, "incidents", "EPSG:4326", n=2)
    with pytest.raises(TableFormatError, match=r"2 spatial layers: 'units' \(Point\), 'incidents'"):
        read_point_table(path, filename="two.gpkg")
    table = read_point_table(path, filename="two.gpkg", layer="incidents")
    assert len(table) == 2 and table.declared_crs == "EPSG:4326"
    with pytest.raises(TableFormatError, match="no layer 'nope'"):
        read_point_table(path, filename="two.gpkg", layer="nope")


def test_gpkg_empty_point_is_a_problem(tmp_path):
    path = tmp_path / "a.gpkg"
    frame = geopandas.GeoDataFrame(
        {"名称": NAMES[:2]}, geometry=[shapely.Point(1, 2), shapely.Point()], crs="EPSG:4490"
    )
    pyogrio.write_dataframe(frame, path)
    table = read_point_table(path, filename="a.gpkg")
    assert table.lon[0] == 1.0 and np.isnan(table.lon[1])
    assert problems(table) == [(2, "geometry", "empty geometry (Point)")]


def test_gpkg_max_rows_is_checked_from_the_feature_count(tmp_path):
    path = tmp_path / "a.gpkg"
    write_gpkg(path, "a", "EPSG:4490")
    with pytest.raises(TableFormatError, match="has 3 rows; at most 2 are accepted"):
        read_point_table(path, filename="a.gpkg", max_rows=2)


# -------------------------------------------------------------------- zipped Shapefile


def test_zipped_shapefile_in_a_folder_with_macos_junk(tmp_path):
    members = {f"导出/{name}": data for name, data in shapefile_members(tmp_path).items()}
    members["__MACOSX/导出/._pts.shp"] = b"\x00\x05\x16\x07"
    table = read_point_table(zip_bytes(members), filename="pts.zip")
    assert table.format == "shp" and table.layer == "导出/pts.shp"
    assert table.declared_crs == "EPSG:4490" and table.encoding == "utf-8"
    np.testing.assert_allclose(table.lon, LON, rtol=0, atol=1e-12)
    assert table.attributes["名称"].tolist() == NAMES


def test_gbk_shapefile_without_cpg_is_sniffed(tmp_path):
    members = shapefile_members(tmp_path, encoding="GBK")
    del members["pts.cpg"]  # as from older ArcGIS: no code page declared anywhere
    table = read_point_table(zip_bytes(members), filename="pts.zip")
    assert table.encoding == "gb18030"
    assert list(table.attributes.columns) == ["名称"]
    assert table.attributes["名称"].tolist() == NAMES


def test_shapefile_without_prj_reports_no_crs(tmp_path):
    members = shapefile_members(tmp_path)
    del members["pts.prj"]
    assert read_point_table(zip_bytes(members), filename="a.zip").declared_crs is None


def test_zip_with_two_shapefiles_names_them_and_layer_chooses(tmp_path):
    members = {f"a/{k}": v for k, v in shapefile_members(tmp_path, "units").items()}
    members.update({f"b/{k}": v for k, v in shapefile_members(tmp_path, "incidents").items()})
    data = zip_bytes(members)
    with pytest.raises(TableFormatError, match=r"2 \.shp files: 'a/units.shp', 'b/incidents.shp'"):
        read_point_table(data, filename="a.zip")
    assert read_point_table(data, filename="a.zip", layer="incidents").layer == "b/incidents.shp"
    assert read_point_table(data, filename="a.zip", layer="a/units.shp").layer == "a/units.shp"


def test_incomplete_or_empty_zip_is_refused(tmp_path):
    members = shapefile_members(tmp_path)
    del members["pts.shx"]
    with pytest.raises(TableFormatError, match=r"'pts.shp' is incomplete: the zip has no \.shx"):
        read_point_table(zip_bytes(members), filename="a.zip")
    with pytest.raises(TableFormatError, match=r"no \.shp file \(members: 'readme.txt'\)"):
        read_point_table(zip_bytes({"readme.txt": b"hi"}), filename="a.zip")
    with pytest.raises(TableFormatError, match="not a readable zip"):
        read_point_table(b"not a zip", filename="a.zip")


def test_zip_bomb_is_refused_before_anything_is_decompressed(monkeypatch):
    bomb = zip_bytes({"pts.shp": b"\0" * (20 * 1024 * 1024), "pts.dbf": b"", "pts.shx": b""})
    assert len(bomb) < 100_000  # 20 MB of zeros deflate to ~20 KB

    def no_extraction(*args, **kwargs):
        raise AssertionError("a member was opened before the safety checks refused the zip")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extraction)
    with pytest.raises(TableFormatError, match=r"'pts.shp' would expand 1,0\d\d-fold.*zip bomb"):
        read_point_table(bomb, filename="a.zip")
    with pytest.raises(TableFormatError, match="expand to 20,971,520 bytes, above .* 10,000,000"):
        read_point_table(
            bomb, filename="a.zip", max_compression_ratio=10_000, max_unzipped_bytes=10_000_000
        )


def test_zip_slip_and_member_count_are_refused(tmp_path):
    members = shapefile_members(tmp_path)
    for evil in ("../../etc/cron.d/x.shp", "/tmp/x.shp", "C:\\x.shp"):
        data = zip_bytes({**members, evil: b"x"})
        with pytest.raises(TableFormatError, match="outside the archive|absolute path"):
            read_point_table(data, filename="a.zip")
    assert len(members) == 5
    with pytest.raises(TableFormatError, match="the zip has 5 members; at most 4"):
        read_point_table(zip_bytes(members), filename="a.zip", max_zip_members=4)


# ------------------------------------------------------------------------ extensions


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("points.shp", r"'\.shp' files are not accepted; a Shapefile is several files: zip"),
        ("points.txt", r"'\.txt' files are not accepted\. Accepted formats: \.csv, \.geojson"),
        ("points", "no extension"),
        ("团队.xlsx", "save the sheet as CSV"),
    ],
)
def test_unaccepted_extensions(filename, message):
    with pytest.raises(TableFormatError, match=message):
        read_point_table(b"whatever", filename=filename)


def test_accepted_formats_constant():
    assert set(ACCEPTED_FORMATS.values()) == set(EXPORT_FORMATS)
    assert ACCEPTED_FORMATS[".zip"] == "shp" and ".shp" not in ACCEPTED_FORMATS


# ---------------------------------------------------------------------------- writing


@pytest.fixture
def attributes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "名称": NAMES + ["无坐标户"],
            "备注": ["独居老人，需每周走访", "", '含"引号",逗号\n换行', "缺经纬度"],
            "code": ["007", "A-1", "0", "x"],
        }
    )


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpkg", "shp"])
def test_round_trip(fmt, attributes):
    lon = np.append(LON, np.nan)
    lat = np.append(LAT, 26.0)
    data = write_point_table(lon, lat, attributes, format=fmt, crs="EPSG:4490")
    table = read_point_table(data, filename="export" + EXPORT_FORMATS[fmt][0])
    assert table.format == fmt
    np.testing.assert_allclose(table.lon[:3], LON, rtol=0, atol=1e-9)
    np.testing.assert_allclose(table.lat[:3], LAT, rtol=0, atol=1e-9)
    # The point without a longitude comes back as a reported problem, not a lost row (a CSV
    # keeps the latitude it was given; the geometry formats write a null geometry).
    assert np.isnan(table.lon[3])
    assert table.lat[3] == 26.0 if fmt == "csv" else np.isnan(table.lat[3])
    assert [p.row for p in table.problems] == [4]
    assert table.attributes.columns.tolist() == attributes.columns.tolist()
    for column in attributes.columns:
        expected = attributes[column].tolist()
        if fmt == "shp":  # a .dbf cannot tell an empty string from a null
            expected = [None if value == "" else value for value in expected]
        assert table.attributes[column].tolist() == expected, column
    assert table.declared_crs == (None if fmt == "csv" else "EPSG:4490")


def test_csv_export_layout(attributes):
    data = write_point_table(LON[:1], LAT[:1], attributes[:1], format="csv")
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "lon,lat,名称,备注,code"
    assert lines[1] == f"{LON[0]},{LAT[0]},{NAMES[0]},独居老人，需每周走访,007"
    with pytest.raises(TableFormatError, match=r"\['经度'\] would be mistaken"):
        write_point_table([1], [2], pd.DataFrame({"经度": ["x"]}), format="csv")


def test_shapefile_export_shortens_field_names_uniquely(tmp_path):
    columns = ["name", "联系人电话号码", "household_id", "household_no", "househol_1"]
    mapping = shapefile_field_names(columns)
    assert mapping == {
        "name": "name",
        "联系人电话号码": "联系人",
        "household_id": "household_",
        "household_no": "househol_2",  # "househol_1" is an existing column: it keeps its name
        "househol_1": "househol_1",
    }
    assert all(len(v.encode()) <= 10 for v in mapping.values())
    frame = pd.DataFrame({c: [f"v{i}"] for i, c in enumerate(columns)})
    data = write_point_table([106.7], [26.6], frame, format="shp", layer="网格")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted(
            f"网格{e}" for e in (".cpg", ".dbf", ".prj", ".shp", ".shx")
        )
    table = read_point_table(data, filename="网格.zip")
    assert table.attributes.columns.tolist() == list(mapping.values())
    assert table.attributes.iloc[0].tolist() == ["v0", "v1", "v2", "v3", "v4"]


def test_shapefile_export_refuses_text_it_would_truncate():
    frame = pd.DataFrame({"备注": ["短", "长" * 100]})  # 300 bytes of UTF-8
    with pytest.raises(TableFormatError, match="column '备注' row 2 holds 300 bytes"):
        write_point_table([1, 2], [3, 4], frame, format="shp")


def test_write_validates_its_inputs():
    frame = pd.DataFrame({"a": ["x"]})
    with pytest.raises(TableFormatError, match="unknown export format 'xlsx'"):
        write_point_table([1], [2], frame, format="xlsx")
    with pytest.raises(ValueError, match="attributes has 1 rows but there are 2 points"):
        write_point_table([1, 2], [3, 4], frame, format="csv")
    with pytest.raises(ValueError, match="unknown crs 'EPSG:999999'"):
        write_point_table([1], [2], frame, format="gpkg", crs="EPSG:999999")
    with pytest.raises(ValueError, match="layer must be a plain name"):
        write_point_table([1], [2], frame, format="shp", layer="../x")


def test_row_problem_is_a_value_object():
    assert RowProblem(1, "geometry", "x") == RowProblem(1, "geometry", "x")


def test_wkb_fast_path_agrees_with_shapely():
    from geo.tables import _points_from_wkb

    geoms = [
        shapely.Point(106.7, 26.6),
        shapely.Point(106.5, 26.5, 1200.0),
        shapely.MultiPoint([(106.4, 26.4)]),
        shapely.LineString([(1, 2), (3, 4)]),
        None,
    ]
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geoms], dtype=object)
    # Big-endian points are 21 bytes too but must not be read as little-endian ones.
    wkb = np.append(wkb, shapely.to_wkb(shapely.Point(106.3, 26.3), byte_order=0))
    x, y, found = _points_from_wkb(wkb)
    np.testing.assert_array_equal(x, [106.7, 106.5, 106.4, np.nan, np.nan, 106.3])
    np.testing.assert_array_equal(y, [26.6, 26.5, 26.4, np.nan, np.nan, 26.3])
    assert [(p.row, p.reason) for p in found] == [
        (4, "geometry is a LineString; expected a Point"),
        (5, "no geometry (null)"),
    ]

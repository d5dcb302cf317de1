"""Return the street basemaps of the map pages: providers, the switcher, the datum shift.

A page is drawn on one or more **basemap choices** (:class:`BasemapChoice`), listed as radio
buttons in the page's layer control (the first is shown). A choice is one or more raster
tile sources drawn together (Tianditu's streets and its separate label tiles), its
attribution and the **datum** of its tiles:

* ``WGS84``: OpenStreetMap, Tianditu (CGCS2000, which differs from WGS84 by centimetres), any
  XYZ/WMTS URL in Web Mercator on WGS84, and the offline basemap — overlays as stored;
* ``GCJ-02``: Amap (Gaode) and Tencent, and any XYZ URL on GCJ-02 — every overlay is shifted
  to GCJ-02 before it is embedded (:func:`shift_geojson`, with the vectorised kernels of
  :mod:`geo.coords`: the same as the input conversions, exact, not a client approximation);
* ``BD-09``: an XYZ URL whose tiles are Web Mercator tiles on the BD-09 datum (a re-tiling
  proxy). Baidu's own tiles are **not** supported on the pages: they use Baidu's projection
  (BD-09MC, a piecewise polynomial) and a tile numbering centred on (0°, 0°), which Leaflet
  cannot draw without a Baidu-specific CRS. Front-ends on Baidu's own SDK ask the API for
  ``crs=BD-09`` output instead.

All the choices of one page share a datum (the overlays are shifted once); the offline
basemap renders in any of the three, so it is always offered as a fallback.

Provider keys (Tianditu's ``tk``, a custom URL's ``{key}``) are put in the tile URLs of
served pages only (the browser fetches the tiles itself): :meth:`Basemaps.for_static_file`
leaves keyed choices out of static exports and reports, which may travel anywhere.

This module is pure: configuration and GeoJSON in, folium layers out. The offline basemap's
tiles are rendered by :mod:`maps.offline` and served by :mod:`service.basemap`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from folium.elements import JSCSSMixin
from folium.map import FitBounds, Layer, LayerControl
from folium.template import Template

from geo.coords import BD09, GCJ02, wgs84_to_bd09, wgs84_to_gcj02
from maps.elements import js
from maps.i18n import N_

__all__ = [
    "WGS84",
    "DATUMS",
    "PROVIDERS",
    "OFFLINE",
    "BasemapError",
    "TileSource",
    "BasemapChoice",
    "Basemaps",
    "BasemapLayer",
    "FAILURE_TEXT",
    "provider_choice",
    "custom_choice",
    "offline_choice",
    "configure_basemaps",
    "add_basemaps",
    "page_bounds",
    "shift_geojson",
    "shift_lonlat",
    "geojson_bounds",
]

WGS84 = "WGS84"
#: Datums a basemap's tiles may be on; overlays are shifted to the page's.
DATUMS = (WGS84, GCJ02, BD09)
OFFLINE = "offline"
_KEY = "{key}"


class BasemapError(ValueError):
    """A basemap configuration that cannot work (unknown provider, missing key, mixed datums)."""


@dataclass(frozen=True)
class TileSource:
    """One raster tile URL (Leaflet template: ``{s}``, ``{z}``, ``{x}``, ``{y}``, ``{-y}``)."""

    url: str
    subdomains: str = ""
    max_native_zoom: int = 18


@dataclass(frozen=True)
class BasemapChoice:
    """A basemap in the page's switcher: its tile sources drawn bottom to top, one datum."""

    key: str
    name: str
    datum: str
    sources: tuple[TileSource, ...]
    attribution: str = ""
    #: Its URLs carry a provider key: served pages only, never a static file.
    keyed: bool = False
    #: Pre-rendered tiles ``"z/x/y"`` → ``data:`` URI, for a static file (the offline basemap
    #: opened from disk); None: fetched from ``sources``.
    tiles: Mapping[str, str] | None = None

    def options(self) -> dict[str, Any]:
        """Return what ``wg.basemap`` (``maps/static/wangge/basemap.js``) reads."""
        out: dict[str, Any] = {
            "key": self.key,
            "datum": self.datum,
            "attribution": self.attribution,
            "sources": [
                {"url": s.url, "subdomains": s.subdomains, "maxNativeZoom": s.max_native_zoom}
                for s in self.sources
            ],
        }
        if self.tiles is not None:
            zooms = sorted({int(k.split("/", 1)[0]) for k in self.tiles})
            out["tiles"] = dict(self.tiles)
            out["zooms"] = [zooms[0], zooms[-1]] if zooms else [0, 0]
        return out


@dataclass(frozen=True)
class _Provider:
    name: str
    datum: str
    sources: tuple[TileSource, ...]
    attribution: str
    key_setting: str | None = None  #: the setting that holds its key, if it needs one


def _tianditu(layer: str, labels: str) -> tuple[TileSource, ...]:
    # Tianditu's WMTS in Web Mercator ("_w" matrix set), as KVP GetTile requests; streets or
    # imagery first, then the matching label layer ("cva" / "cia") on top.
    def wmts(name: str) -> TileSource:
        return TileSource(
            f"https://t{{s}}.tianditu.gov.cn/{name}_w/wmts?SERVICE=WMTS&REQUEST=GetTile"
            f"&VERSION=1.0.0&LAYER={name}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles"
            f"&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}&tk={_KEY}",
            subdomains="01234567",
            max_native_zoom=18,
        )

    return (wmts(layer), wmts(labels))


_TIANDITU = "© 天地图 Tianditu (National Platform for Common GeoSpatial Information Services)"
#: The providers ``WANGGE_BASEMAP`` may name (besides ``offline`` and ``custom``).
PROVIDERS: dict[str, _Provider] = {
    "tianditu-vec": _Provider(
        N_("Tianditu streets"), WGS84, _tianditu("vec", "cva"), _TIANDITU, "tianditu_key"
    ),
    "tianditu-img": _Provider(
        N_("Tianditu imagery"), WGS84, _tianditu("img", "cia"), _TIANDITU, "tianditu_key"
    ),
    "amap": _Provider(
        N_("Amap streets"),
        GCJ02,
        (
            TileSource(
                "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1"
                "&style=8&x={x}&y={y}&z={z}",
                subdomains="1234",
            ),
        ),
        "© 高德地图 AutoNavi",
    ),
    "amap-img": _Provider(
        N_("Amap imagery"),
        GCJ02,
        (
            TileSource(
                "https://webst0{s}.is.autonavi.com/appmaptile?style=6&x={x}&y={y}&z={z}",
                subdomains="1234",
            ),
            TileSource(
                "https://webst0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}",
                subdomains="1234",
            ),
        ),
        "© 高德地图 AutoNavi",
    ),
    "tencent": _Provider(
        N_("Tencent streets"),
        GCJ02,
        (
            # Tencent numbers rows from the south (TMS): Leaflet's {-y}.
            TileSource(
                "https://rt{s}.map.gtimg.com/tile?z={z}&x={x}&y={-y}&type=vector&styleid=0",
                subdomains="0123",
            ),
        ),
        "© 腾讯地图 Tencent",
    ),
    "osm": _Provider(
        "OpenStreetMap",
        WGS84,
        (TileSource("https://tile.openstreetmap.org/{z}/{x}/{y}.png", max_native_zoom=19),),
        "© OpenStreetMap contributors",
    ),
}
#: Names ``WANGGE_BASEMAP`` accepts.
CHOICE_NAMES = (*PROVIDERS, "custom", OFFLINE)


def provider_choice(name: str, *, key: str | None = None) -> BasemapChoice:
    """Return the basemap of a known provider (``key`` for those that need one).

    Raises
    ------
    BasemapError
        For an unknown provider, or a keyed one without its key.
    """
    provider = PROVIDERS.get(name)
    if provider is None:
        raise BasemapError(f"unknown basemap {name!r}; one of {', '.join(CHOICE_NAMES)}")
    if provider.key_setting and not key:
        env = "WANGGE_BASEMAP_" + provider.key_setting.upper()
        raise BasemapError(f"the {name} basemap needs a key: set {env}")
    sources = tuple(
        replace(s, url=s.url.replace(_KEY, _url_quote(key or ""))) for s in provider.sources
    )
    return BasemapChoice(
        key=name,
        name=provider.name,
        datum=provider.datum,
        sources=sources,
        attribution=provider.attribution,
        keyed=bool(provider.key_setting),
    )


def _url_quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def custom_choice(
    url: str,
    *,
    datum: str = WGS84,
    name: str = N_("Custom basemap"),
    attribution: str = "",
    subdomains: str = "",
    key: str | None = None,
    max_native_zoom: int = 18,
) -> BasemapChoice:
    """Return a basemap from any XYZ or WMTS (KVP, Web Mercator) URL template.

    ``{z}``, ``{x}`` and ``{y}`` (or ``{-y}``) are required; ``{s}`` takes one of
    ``subdomains``; ``{key}`` is replaced by ``key`` (which then never goes into a static file).

    Raises
    ------
    BasemapError
        For a URL that is not http(s), lacks a tile coordinate, or names ``{key}`` with no key.
    """
    if not re.match(r"https?://|/", url):
        raise BasemapError(f"a basemap URL must be http(s):// or start with /, not {url!r}")
    missing = [p for p in ("{z}", "{x}") if p not in url]
    if "{y}" not in url and "{-y}" not in url:
        missing.append("{y}")
    if missing:
        raise BasemapError(f"a basemap URL needs {', '.join(missing)} (Leaflet's template)")
    if "{s}" in url and not subdomains:
        raise BasemapError("the basemap URL has {s}: set its subdomains (e.g. abc)")
    if datum not in DATUMS:
        raise BasemapError(f"a basemap's datum is one of {', '.join(DATUMS)}, not {datum!r}")
    keyed = _KEY in url
    if keyed and not key:
        raise BasemapError("the basemap URL has {key}: set WANGGE_BASEMAP_URL_KEY")
    return BasemapChoice(
        key="custom",
        name=name,
        datum=datum,
        sources=(
            TileSource(
                url.replace(_KEY, _url_quote(key or "")),
                subdomains=subdomains,
                max_native_zoom=max_native_zoom,
            ),
        ),
        attribution=attribution,
        keyed=keyed,
    )


def offline_choice(
    url: str, *, datum: str = WGS84, tiles: Mapping[str, str] | None = None
) -> BasemapChoice:
    """Return the offline basemap: tiles the service renders from its own data.

    Parameters
    ----------
    url : str
        The tile route's template with ``{z}``, ``{x}``, ``{y}`` (its datum appended here).
    datum : str
        The page's datum: the tiles are rendered in it.
    tiles : mapping, optional
        Pre-rendered tiles for a static file (``"z/x/y"`` → ``data:`` URI).
    """
    if datum != WGS84:
        url += ("&" if "?" in url else "?") + f"datum={datum}"
    return BasemapChoice(
        key=OFFLINE,
        name=N_("Offline map (own data)"),
        datum=datum,
        sources=(TileSource(url, max_native_zoom=18),),
        attribution=N_("wangge: road network, districts, communities, grids"),
        tiles=tiles,
    )


@dataclass(frozen=True)
class Basemaps:
    """The basemap choices of a page (the first shown), all on one datum."""

    choices: tuple[BasemapChoice, ...]
    datum: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.choices:
            raise BasemapError("a page needs at least one basemap")
        datums = {c.datum for c in self.choices}
        if len(datums) > 1:
            raise BasemapError(
                "the basemaps of a page must share a datum (overlays are shifted once): "
                + ", ".join(f"{c.key} is {c.datum}" for c in self.choices)
            )
        object.__setattr__(self, "datum", datums.pop())

    @property
    def offline(self) -> BasemapChoice | None:
        """Return the offline choice, if offered."""
        return next((c for c in self.choices if c.key == OFFLINE), None)

    def for_static_file(self, offline_tiles: Mapping[str, str] | None = None) -> Basemaps:
        """Return the choices a static file may carry: no keyed provider, and the offline
        basemap as ``offline_tiles`` (pre-rendered; left out without them)."""
        kept = []
        for c in self.choices:
            if c.keyed:
                continue
            if c.key == OFFLINE:
                if offline_tiles is None:
                    continue
                c = replace(c, tiles=dict(offline_tiles))
            kept.append(c)
        if not kept:
            # Nothing left to show: an empty offline choice keeps the page's datum.
            kept = [replace(self.offline or offline_choice("", datum=self.datum), tiles={})]
        return Basemaps(tuple(kept))


def configure_basemaps(
    names: Sequence[str],
    *,
    offline_url: str,
    tianditu_key: str | None = None,
    url: str | None = None,
    url_datum: str = WGS84,
    url_name: str = N_("Custom basemap"),
    url_attribution: str = "",
    url_subdomains: str = "",
    url_key: str | None = None,
) -> Basemaps:
    """Return the basemaps ``WANGGE_BASEMAP`` names, the offline one always among them.

    Parameters
    ----------
    names : sequence of str
        In switcher order (the first is shown): provider names (:data:`PROVIDERS`),
        ``custom`` (``url``) and ``offline``. ``offline`` is appended when missing: a closed
        network still gets a map.
    offline_url : str
        The offline tile route's template.

    Raises
    ------
    BasemapError
        For an unknown name, a missing key or URL, or providers on different datums.
    """
    choices: list[BasemapChoice] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in seen:
            raise BasemapError(f"basemap {name!r} is named twice")
        seen.add(name)
        if name == OFFLINE:
            continue  # placed below, in the datum of the others
        if name == "custom":
            if not url:
                raise BasemapError("the custom basemap needs WANGGE_BASEMAP_URL")
            choices.append(
                custom_choice(
                    url,
                    datum=url_datum,
                    name=url_name,
                    attribution=url_attribution,
                    subdomains=url_subdomains,
                    key=url_key,
                )
            )
        else:
            key = tianditu_key if name.startswith("tianditu") else None
            choices.append(provider_choice(name, key=key))
    datums = {c.datum for c in choices}
    if len(datums) > 1:
        Basemaps(tuple(choices))  # raises, naming each choice's datum
    offline = offline_choice(offline_url, datum=datums.pop() if datums else WGS84)
    # Where it was named (first: the default), else last: a closed network still has a map.
    at = [n.strip().lower() for n in names if n.strip()].index(OFFLINE) if OFFLINE in seen else None
    choices.insert(len(choices) if at is None else at, offline)
    return Basemaps(tuple(choices))


# -- the switcher ------------------------------------------------------------------------------
#: What the map says when a provider's tiles do not load (``wg.basemap`` switches to the
#: offline basemap then): ``{name}`` is the provider's name in the page's language.
FAILURE_TEXT = {
    "failed": N_(
        "The basemap “{name}” did not load (no internet connection, an invalid or expired "
        "key, or the provider refused)."
    ),
    "switched": N_(
        "The basemap “{name}” did not load (no internet connection, an invalid or expired "
        "key, or the provider refused): showing the offline map (own data) instead."
    ),
    "close": N_("Close"),
}


class BasemapLayer(JSCSSMixin, Layer):
    """One basemap choice as a base layer of the page's layer control (``wg.basemap``).

    A provider's layer carries the notice its page shows if its tiles do not load
    (:data:`FAILURE_TEXT`, in the page's language).
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = wg.basemap({{ this.options_js }});
        {% endmacro %}
        """
    )
    default_js = [("wangge_basemap_js", "")]

    def __init__(self, choice: BasemapChoice, *, show: bool, t: Callable[[str], str] = str):
        super().__init__(name=t(choice.name), overlay=False, control=True, show=show)
        self._name = "BasemapLayer"
        self.choice = choice
        options = choice.options()
        if choice.key == OFFLINE:
            options["attribution"] = t(choice.attribution)
        else:
            name = t(choice.name)
            options["texts"] = {
                "failed": t(FAILURE_TEXT["failed"]).format(name=name),
                "switched": t(FAILURE_TEXT["switched"]).format(name=name),
                "close": t(FAILURE_TEXT["close"]),
            }
        self.options_js = js(options)


def add_basemaps(m, basemaps: Basemaps, t: Callable[[str], str] = str) -> list[BasemapLayer]:
    """Return the basemap layers added to the folium map ``m`` (the first one shown), their
    names in the page's language (``t``: the page's translator).

    The map's ``LayerControl`` (added already or later) lists them as radio buttons: it is
    moved after them, since its script names them.
    """
    layers = [
        BasemapLayer(choice, show=i == 0, t=t).add_to(m)
        for i, choice in enumerate(basemaps.choices)
    ]
    for name, child in list(m._children.items()):
        if isinstance(child, LayerControl):
            m._children.move_to_end(name)
    return layers


def page_bounds(m) -> list[float] | None:
    """Return [min_lon, min_lat, max_lon, max_lat] the folium map ``m`` is fitted to, or None."""
    for child in m._children.values():
        if isinstance(child, FitBounds):
            (s, w), (n, e) = child.bounds
            return [float(w), float(s), float(e), float(n)]
    return None


# -- the datum shift ---------------------------------------------------------------------------
_KERNELS: dict[str, Callable] = {GCJ02: wgs84_to_gcj02, BD09: wgs84_to_bd09}
_GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)


def shift_lonlat(lon: Any, lat: Any, datum: str) -> tuple[np.ndarray, np.ndarray]:
    """Return WGS84 ``lon``, ``lat`` in ``datum`` (unchanged for WGS84)."""
    if datum == WGS84:
        return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    kernel = _KERNELS.get(datum)
    if kernel is None:
        raise BasemapError(f"unknown datum {datum!r}; one of {', '.join(DATUMS)}")
    return kernel(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))


def _geometries(obj: Any, found: list[dict]) -> None:
    if isinstance(obj, dict):
        if obj.get("type") in _GEOMETRY_TYPES and "coordinates" in obj:
            found.append(obj)
            return
        for value in obj.values():
            _geometries(value, found)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _geometries(value, found)


def _flatten(coords: Any, out: list) -> None:
    if coords and isinstance(coords[0], int | float):
        out.append(coords)
        return
    for c in coords:
        _flatten(c, out)


def _rebuild(coords: Any, moved) -> Any:
    if coords and isinstance(coords[0], int | float):
        x, y = next(moved)
        return [x, y, *coords[2:]]
    return [_rebuild(c, moved) for c in coords]


def shift_geojson(obj: Any, datum: str) -> Any:
    """Return a copy of ``obj`` with every GeoJSON geometry in it moved from WGS84 to ``datum``.

    ``obj`` may be a geometry, a Feature, a FeatureCollection or any dict/list holding them
    (a page's keyword arguments, an analysis's result). One vectorised conversion of every
    coordinate (:mod:`geo.coords`); WGS84 returns ``obj`` itself.

    Examples
    --------
    >>> fc = {"type": "Point", "coordinates": [106.7, 26.6]}
    >>> [round(v, 4) for v in shift_geojson(fc, "GCJ-02")["coordinates"]]
    [106.7037, 26.5965]
    """
    if datum == WGS84:
        return obj
    out = copy.deepcopy(obj)
    found: list[dict] = []
    _geometries(out, found)
    positions: list = []
    for g in found:
        _flatten(g["coordinates"], positions)
    if not positions:
        return out
    xy = np.array([p[:2] for p in positions], dtype=float)
    lon, lat = shift_lonlat(xy[:, 0], xy[:, 1], datum)
    moved = iter(zip(lon.tolist(), lat.tolist(), strict=True))
    for g in found:
        g["coordinates"] = _rebuild(g["coordinates"], moved)
    return out


def geojson_bounds(obj: Any) -> list[float] | None:
    """Return [min_lon, min_lat, max_lon, max_lat] of every geometry in ``obj``, or None."""
    found: list[dict] = []
    _geometries(obj, found)
    positions: list = []
    for g in found:
        _flatten(g["coordinates"], positions)
    if not positions:
        return None
    xy = np.array([p[:2] for p in positions], dtype=float)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return [float(x0), float(y0), float(x1), float(y1)]


def names_of(values: Iterable[str]) -> list[str]:
    """Return the basemap names of a comma-separated setting, trimmed, lower case."""
    return [v.strip().lower() for v in values if v.strip()]

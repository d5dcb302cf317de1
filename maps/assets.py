"""Return the JavaScript and CSS of the map pages from files shipped in ``maps/static``.

folium links Leaflet, jQuery, Bootstrap and Font Awesome from public CDNs. The dispatch wall,
the tablets and the CI machine may have no internet, so the pages use vendored copies
instead: Leaflet 1.9.4 (BSD-2-Clause) and Leaflet.markercluster 1.5.3 (MIT), taken verbatim
from their npm packages (see ``maps/static/README.md``), plus the project's own small runtime
(``wangge/wangge.js``, ``wangge/wangge.css``). jQuery, Bootstrap and the awesome-markers are
not needed: the pages use neither folium's ``Popup`` nor its ``Icon``.

Two ways to put them in a page:

* ``"link"``: ``<script src>`` / ``<link>`` to ``{static_url}/<file>?v=<hash>`` (the served
  pages; the service answers those URLs with a year of caching, the hash changes with the file);
* ``"inline"``: the files' text in the page, images as ``data:`` URIs (static exports: one
  self-contained file that opens offline, from disk, anywhere).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Asset",
    "ASSETS",
    "UNUSED_FOLIUM_ASSETS",
    "STATIC_DIR",
    "STATIC_URL",
    "asset_tags",
    "asset_url",
    "static_file",
    "StaticFile",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where the service serves ``STATIC_DIR``.
STATIC_URL = "/static/maps"


@dataclass(frozen=True)
class Asset:
    """One script or stylesheet: folium's name for it, its file under ``STATIC_DIR``."""

    name: str
    path: str
    kind: str  #: "js" or "css"


#: Every asset a page may use, in load order (Leaflet before its plugins, styles first).
ASSETS: tuple[Asset, ...] = (
    Asset("leaflet_css", "leaflet@1.9.4/leaflet.css", "css"),
    Asset("markerclustercss", "leaflet.markercluster@1.5.3/MarkerCluster.css", "css"),
    Asset(
        "markerclusterdefaultcss", "leaflet.markercluster@1.5.3/MarkerCluster.Default.css", "css"
    ),
    Asset("wangge_css", "wangge/wangge.css", "css"),
    Asset("wangge_live_css", "wangge/live.css", "css"),
    Asset("leaflet", "leaflet@1.9.4/leaflet.js", "js"),
    Asset("markerclusterjs", "leaflet.markercluster@1.5.3/leaflet.markercluster.js", "js"),
    Asset("wangge_js", "wangge/wangge.js", "js"),
    # Street basemaps in the layer control (maps/basemap.py).
    Asset("wangge_basemap_js", "wangge/basemap.js", "js"),
    # The served pages' live parts (maps/live.py): the dispatch queue, the tablet's cases.
    Asset("wangge_cases_js", "wangge/cases.js", "js"),
    Asset("wangge_dispatch_js", "wangge/dispatch.js", "js"),
    Asset("wangge_tablet_js", "wangge/tablet.js", "js"),
)
#: Assets every page gets whatever its elements ask for.
ALWAYS = ("leaflet_css", "leaflet", "wangge_css", "wangge_js")
#: Assets folium's ``Map`` always asks for that the pages never use (jQuery is for folium's
#: ``Popup`` and ``keep_in_front``, the rest for ``Icon``).
UNUSED_FOLIUM_ASSETS = frozenset(
    {
        "jquery",
        "bootstrap",
        "bootstrap_css",
        "glyphicons_css",
        "awesome_markers",
        "awesome_markers_css",
        "awesome_markers_font_css",
        "awesome_rotate_css",
    }
)
_BY_NAME = {a.name: a for a in ASSETS}
_MEDIA = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".md": "text/markdown; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE files
}


@dataclass(frozen=True)
class StaticFile:
    """A shipped file as the service sends it."""

    data: bytes
    media_type: str
    digest: str  #: first 12 hex digits of its SHA-256 (ETag and cache-busting ``?v=``)


@functools.cache
def _files() -> dict[str, Path]:
    # The only files ever served: what is shipped, listed once. A request path is looked up
    # in this dict, never joined onto the directory, so ``..`` cannot escape it.
    return {
        p.relative_to(STATIC_DIR).as_posix(): p
        for p in sorted(STATIC_DIR.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@functools.cache
def static_file(path: str) -> StaticFile | None:
    """Return the shipped file at ``path`` (relative to ``STATIC_DIR``), or None if none is.

    Parameters
    ----------
    path : str
        e.g. ``"leaflet@1.9.4/leaflet.js"``.
    """
    file = _files().get(path)
    if file is None:
        return None
    data = file.read_bytes()
    media = _MEDIA.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "text/plain"
    return StaticFile(data, media, hashlib.sha256(data).hexdigest()[:12])


def asset_url(name: str, static_url: str = STATIC_URL) -> str:
    """Return the versioned URL of the asset called ``name``."""
    asset = _BY_NAME[name]
    file = static_file(asset.path)
    return f"{static_url.rstrip('/')}/{asset.path}?v={file.digest}"


_CSS_URL = re.compile(r"url\((['\"]?)(images/[\w.-]+\.png)\1\)")


def _inline_css(asset: Asset) -> str:
    text = static_file(asset.path).data.decode("utf-8")
    folder = asset.path.rsplit("/", 1)[0]

    def data_uri(match: re.Match) -> str:
        image = static_file(f"{folder}/{match.group(2)}")
        if image is None:  # pragma: no cover - the vendored CSS names only shipped images
            return match.group(0)
        return f"url(data:image/png;base64,{base64.b64encode(image.data).decode()})"

    return _CSS_URL.sub(data_uri, text).replace("</style", "<\\/style")


def _inline_js(asset: Asset) -> str:
    # "</script" would end the element early; "<\/script" means the same inside JavaScript.
    return static_file(asset.path).data.decode("utf-8").replace("</script", "<\\/script")


def asset_tags(names: set[str] | frozenset[str], mode: str, static_url: str = STATIC_URL) -> str:
    """Return the ``<head>`` HTML that loads the named assets (plus those every page needs).

    Parameters
    ----------
    names : set of str
        Asset names (folium's, e.g. ``"markerclusterjs"``); unknown names are refused.
    mode : {"link", "inline"}
        Link to ``static_url`` or embed the files.
    static_url : str
        Base URL of ``STATIC_DIR`` for ``"link"``.

    Raises
    ------
    ValueError
        For an asset that is not vendored or an unknown mode.
    """
    unknown = set(names) - set(_BY_NAME)
    if unknown:
        raise ValueError(
            f"the page needs {', '.join(sorted(unknown))}, which is not vendored in maps/static"
        )
    if mode not in ("link", "inline"):
        raise ValueError(f"mode is 'link' or 'inline', not {mode!r}")
    wanted = set(names) | set(ALWAYS)
    out = ['<link rel="icon" href="data:,">']  # no favicon request (a 404 in the console)
    for asset in ASSETS:
        if asset.name not in wanted:
            continue
        if mode == "link":
            url = asset_url(asset.name, static_url)
            if asset.kind == "css":
                out.append(f'<link rel="stylesheet" href="{url}">')
            else:
                out.append(f'<script src="{url}"></script>')
        elif asset.kind == "css":
            out.append(f"<style>/* {asset.path} */\n{_inline_css(asset)}</style>")
        else:
            out.append(f"<script>/* {asset.path} */\n{_inline_js(asset)}</script>")
    return "\n".join(out)

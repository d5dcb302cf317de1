"""The vendored scripts: what is shipped, how it is linked or inlined, what is never served."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from maps.assets import ASSETS, STATIC_DIR, asset_tags, asset_url, static_file

# The files as published on npm (leaflet@1.9.4, leaflet.markercluster@1.5.3), unmodified.
VENDORED_SHA256 = {
    "leaflet@1.9.4/leaflet.js": "db49d009c841f5ca34a888c96511ae936fd9f5533e90d8b2c4d57596f4e5641a",
    "leaflet@1.9.4/leaflet.css": "a7837102824184820dfa198d1ebcd109ff6d0ff9a2672a074b9a1b4d147d04c6",
    "leaflet.markercluster@1.5.3/leaflet.markercluster.js": (
        "1e4e1d22972a3926f48598e0caf14e3fe7049835d428a344fed4f9e3665b3508"
    ),
}


def test_vendored_files_are_the_published_ones_with_their_licences():
    for path, digest in VENDORED_SHA256.items():
        assert hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest() == digest
    for folder in ("leaflet@1.9.4", "leaflet.markercluster@1.5.3"):
        assert (STATIC_DIR / folder / "LICENSE").read_text().strip()
    for asset in ASSETS:
        assert static_file(asset.path) is not None, asset.path


def test_static_files_are_looked_up_never_joined():
    assert static_file("leaflet@1.9.4/leaflet.js").media_type.startswith("text/javascript")
    assert static_file("leaflet@1.9.4/images/layers.png").media_type == "image/png"
    for bad in ("../assets.py", "leaflet@1.9.4/../../pages.py", "/etc/passwd", "", "nope.js"):
        assert static_file(bad) is None


def test_asset_tags_link_or_inline_and_refuse_unknown_assets():
    linked = asset_tags({"markerclusterjs"}, "link")
    assert linked.index("leaflet.js") < linked.index("leaflet.markercluster.js")
    assert asset_url("leaflet") in linked
    inline = asset_tags(set(), "inline")
    assert "MarkerClusterGroup" not in inline and "<script src" not in inline
    assert "url(images/" not in inline and "data:image/png;base64," in inline
    with pytest.raises(ValueError, match="jquery, which is not vendored"):
        asset_tags({"jquery"}, "link")
    with pytest.raises(ValueError, match="'link' or 'inline'"):
        asset_tags(set(), "cdn")


def test_maps_does_not_touch_the_database_or_the_web_framework():
    code = (
        "import sys, maps.pages, maps.assets, maps.style, maps.geojson; "
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'psycopg', 'asyncpg', 'service') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

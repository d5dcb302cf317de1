"""What the browser tests of the map pages share: headless Chromium, opening a served page with
a token, watching what it should not do, and reading its map.

The ``browser`` fixture (tests/conftest.py) launches one Chromium per test module
(:func:`launch_chromium`; playwright's sync API keeps an event loop running while it is open,
which other modules' ``asyncio.run`` must not meet).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

__all__ = [
    "ARTIFACTS",
    "CHROMIUM_ARGS",
    "MAP_JS",
    "Watch",
    "launch_chromium",
    "open_page",
    "shot",
    "tiles_loaded",
    "screenshot_without_overlays",
    "container_point",
    "near",
]

#: Screenshots of the browser tests (kept by CI as artifacts).
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "pages"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: A script expression for the page's Leaflet map.
MAP_JS = "Object.values(window).find((v) => v instanceof L.Map)"


@contextlib.contextmanager
def launch_chromium():
    """Yield headless Chromium (Debian's); the ``browser`` fixture of tests/conftest.py."""
    # Fail, never skip: playwright is in the test extras and `make test` installs chromium.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"the browser checks need playwright ({exc}): pip install -e '.[test]'")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("the browser checks need Debian's chromium: apt-get install -y chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watch:
    """What a page does that it should not: console errors, exceptions, foreign requests
    (``problems``: all of them; ``exceptions``: the script exceptions alone)."""

    def __init__(self, page, origin: str, *, foreign_ok: bool = False):
        self.problems: list[str] = []
        self.exceptions: list[str] = []
        page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )

        def exception(e):
            self.exceptions.append(f"exception: {e}")
            self.problems.append(f"exception: {e}")

        page.on("pageerror", exception)

        def request(r):
            if foreign_ok:
                return
            if not (r.url.startswith(origin) or r.url.startswith(("data:", "file:"))):
                self.problems.append(f"request to {r.url}")

        page.on("request", request)


def open_page(
    browser,
    server,
    path: str,
    token: str,
    viewport: tuple[int, int] = (1280, 800),
    *,
    lang: str | None = "en",
    foreign_ok: bool = False,
    init_script: str | None = None,
    **context,
):
    """Return (context, page, watch) of the served page ``path`` opened with ``token``.

    ``lang``: the page's language (``?lang=``; None: the service's default, Chinese). Most
    tests read the pages' English words; ``tests/service/test_pages_i18n.py`` the Chinese.
    The token is exchanged for the page session cookie: the address bar and the page keep
    none of it. ``foreign_ok``: requests to other origins (a stub tile provider) are no
    problem. ``init_script``: run before the page's own scripts. ``context``: playwright's
    new_context options (geolocation, locale, ...).
    """
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, **context)
    if init_script:
        ctx.add_init_script(init_script)
    page = ctx.new_page()
    watch = Watch(page, server.base_url, foreign_ok=foreign_ok)
    sep = "&" if "?" in path else "?"
    query = f"access_token={token}" + (f"&lang={lang}" if lang else "")
    page.goto(f"{server.base_url}{path}{sep}{query}")
    page.wait_for_selector(".leaflet-control-layers")
    assert "access_token" not in page.url and token not in page.content()
    return ctx, page, watch


def shot(page, name: str, **options) -> None:
    """Save a screenshot of ``page`` as ``artifacts/pages/{name}.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **options)


def tiles_loaded(page, key: str, *, every: bool = True, timeout: float = 30_000) -> int:
    """Return how many basemap tiles of ``key`` loaded (256 px images), once every one of
    them has (``every``; a static file holds its view's tiles only: the rest are blank)."""
    selector = f".wg-basemap-{key} img.leaflet-tile"
    real = "(t) => t.complete && t.naturalWidth === 256"
    page.wait_for_function(
        f"""() => {{
            const tiles = [...document.querySelectorAll('{selector}')];
            const loaded = document.querySelectorAll('{selector}.leaflet-tile-loaded').length;
            return tiles.length > 0 && loaded === tiles.length && ({str(every).lower()}
                ? tiles.every({real}) : tiles.filter({real}).length >= 2);
        }}""",
        timeout=timeout,
    )
    return page.locator(f"{selector}.leaflet-tile-loaded").count()


def screenshot_without_overlays(page) -> np.ndarray:
    """Return a screenshot (RGB array) of the basemap alone: overlays and controls hidden."""
    from PIL import Image

    page.add_style_tag(
        content=".leaflet-overlay-pane,.leaflet-marker-pane,.leaflet-shadow-pane,"
        ".leaflet-control-container,.leaflet-tooltip-pane,.leaflet-popup-pane,.wg-notice"
        "{visibility:hidden !important}"
    )
    png = page.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def container_point(page, lon: float, lat: float) -> tuple[float, float]:
    """Return the page pixel (x, y) where the map draws ``lon``, ``lat`` (the page's datum)."""
    p = page.evaluate(
        f"() => {{ const m = {MAP_JS}; const p = m.latLngToContainerPoint([{lat}, {lon}]);"
        " const r = m.getContainer().getBoundingClientRect();"
        " return [p.x + r.left, p.y + r.top]; }"
    )
    return p[0], p[1]


def near(image: np.ndarray, x: float, y: float, colour, *, radius=3, tol=45) -> bool:
    """Return whether a pixel within ``radius`` of (x, y) is within ``tol`` of ``colour``."""
    xi, yi = round(x), round(y)
    patch = image[max(0, yi - radius) : yi + radius + 1, max(0, xi - radius) : xi + radius + 1]
    return bool(np.any(np.all(np.abs(patch.astype(int) - np.array(colour)) <= tol, axis=-1)))

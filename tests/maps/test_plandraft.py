"""The planning page's draft view: the draft's grids beside today's, with the plan's metrics."""

from __future__ import annotations

import pytest

from maps.geojson import PageDataError, collection
from maps.pages import planning_page, render_page
from maps.plandraft import DRAFT, add_plan_draft
from tests.maps.data import GRID_CODES, controls, embedded, feature, square
from tests.maps.words import english_left, visible_strings


def _grids():
    return collection(
        [
            feature(
                square(106.0 + i * 0.01, 26.0),
                code=code,
                name=f"网格{i}",
                open_incidents=0,
                incidents_90d=i,
                units=i,
                team_roles=3,
            )
            for i, code in enumerate(GRID_CODES)
        ]
    )


def _draft():
    # Today's first grid split in two halves; the others kept.
    halves = [
        feature(
            square(106.0, 26.0, 0.005), key="n1", code="", name="网格0（1/2）", population=80.0
        ),
        feature(
            {
                "type": "Polygon",
                "coordinates": [
                    [[106.0, 26.005], [106.01, 26.005], [106.01, 26.01], [106.0, 26.01]]
                    + [[106.0, 26.005]]
                ],
            },
            key="n2",
            code="",
            name="网格0（2/2）",
            population=120.0,
        ),
    ]
    kept = [
        feature(
            square(106.0 + i * 0.01, 26.0),
            key=code,
            code=code,
            name=f"网格{i}",
            population=100.0 * i,
        )
        for i, code in enumerate(GRID_CODES)
        if i > 0
    ]
    features = halves + kept
    mean = sum(f["properties"]["population"] for f in features) / len(features)
    for f in features:
        p = f["properties"]
        p.update(
            population_dev=p["population"] / mean - 1,
            incidents_per_year=12.0,
            incidents_per_member=4.0,
            polsby_popper=0.7853981,
            reock=0.6366,
            convex_hull_ratio=1.0,
            parts=1,
            straddles=0,
        )
    return collection(features)


TODAY = {"grids": 4, "population_max_abs_dev": 0.5, "polsby_popper_mean": 0.785, "straddling": 0}
DRAFT_SUMMARY = {
    "grids": 5,
    "population_max_abs_dev": 0.4286,
    "polsby_popper_mean": 0.74,
    "straddling": 0,
    "noncontiguous": 0,
}


def test_the_draft_is_drawn_beside_the_current_grids_with_its_metrics():
    page = planning_page(grids=_grids(), lang="en")
    add_plan_draft(page, name="North redraw", grids=_draft(), today=TODAY, draft=DRAFT_SUMMARY)
    html = render_page(page)
    assert DRAFT in page.layers and "Grids" in page.layers
    layers = embedded(html, "wg.areas")
    assert len(layers) == 2  # today's grids and the draft's
    draft_fc = layers[1]
    assert [f["properties"]["key"] for f in draft_fc["features"]][:2] == ["n1", "n2"]
    props = draft_fc["features"][0]["properties"]
    assert props["population_dev_pct"] == "-50.0%"  # 80 against a mean of 160
    assert props["polsby_popper"] == 0.785
    panel = controls(html)
    assert "Draft: North redraw" in panel
    # Today beside the draft: 4 grids → 5, largest population deviation 50.0% → 42.9%.
    assert "<td>Grids</td><td>4</td><td>5</td>" in panel
    assert "<td>Largest population deviation</td><td>50.0%</td><td>42.9%</td>" in panel
    assert "<td>Grids straddling communities</td><td>0</td><td>0</td>" in panel
    assert "Draft grids: population vs the plan&#x27;s mean" in panel or "plan's mean" in panel
    assert '"property":"population_dev"' in html
    # The layer control names the draft: it is defined before the control is made.
    layer = page.layers[DRAFT]
    assert html.index(f"var {layer.get_name()} =") < html.index("L.control.layers(")


def test_the_draft_speaks_chinese_by_default():
    page = planning_page(grids=_grids())
    add_plan_draft(page, name="北部调整", grids=_draft(), today=TODAY, draft=DRAFT_SUMMARY)
    html = render_page(page)
    assert english_left(html) == []
    assert any("草案：北部调整" in s for s in visible_strings(html))


def test_malformed_draft_refused():
    page = planning_page(grids=_grids(), lang="en")
    bad = collection([feature(square(106.0, 26.0), key="n1", population_dev="high")])
    with pytest.raises(PageDataError, match="population_dev"):
        add_plan_draft(page, name="x", grids=bad, today={}, draft={})


def test_the_draft_page_works_in_a_browser(tmp_path):
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from tests.maps.words import latin_words

    page = planning_page(grids=_grids())
    add_plan_draft(page, name="北部调整", grids=_draft(), today=TODAY, draft=DRAFT_SUMMARY)
    path = tmp_path / "draft.html"
    path.write_text(render_page(page, assets="inline"), "utf-8")
    assert Path("/usr/bin/chromium").exists(), "apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless"]
        )
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(path.as_uri())
            tab.wait_for_selector(".leaflet-control-layers")
            panel = tab.locator(".wg-plan-panel")
            assert panel.is_visible()
            text = panel.inner_text()
            assert "草案：北部调整" in text and "现状" in text and "网格数" in text
            assert latin_words(text) == []
            overlays = tab.locator(".leaflet-control-layers-overlays").inner_text()
            assert "草案：北部调整" in overlays
            # The draft's five grids are drawn (dashed) over today's four.
            assert tab.locator('path[stroke-dasharray="6 4"]').count() == 5
            assert errors == []
        finally:
            browser.close()

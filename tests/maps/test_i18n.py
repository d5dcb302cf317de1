"""The pages' languages: the catalog is complete, each page speaks Simplified Chinese by
default and English on request, and no English is left in a Chinese page — in its HTML
(statically) and in what its scripts put in the DOM (headless Chromium, static exports; the
served live pages are checked in tests/service/test_pages_i18n.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from maps.geojson import collection
from maps.i18n import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    NAMES,
    TIME_ZONE,
    catalog_path,
    extract_messages,
    negotiate_language,
    translator,
)
from maps.pages import (
    add_coverage_gap_layer,
    dispatch_page,
    planning_page,
    render_page,
    tablet_page,
)
from tests.maps.data import GRID_CODES, controls, embedded, feature, point, square
from tests.maps.words import catalog_messages, english_left, latin_words, visible_strings

CJK = re.compile(r"[\u4e00-\u9fff]")


# -- the catalog and the table of names ----------------------------------------------------------
def test_every_marked_message_has_a_checked_chinese_translation():
    from babel.messages.pofile import read_po

    with catalog_path().open("rb") as f:
        catalog = read_po(f)
    marked = {m.id if isinstance(m.id, str) else m.id[0] for m in extract_messages() if m.id}
    known = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog if m.id}
    missing = sorted(marked - set(known))
    assert not missing, f"run python -m maps.i18n and translate: {missing}"
    unchecked = sorted(
        i
        for i, m in known.items()
        if m.fuzzy or not all(m.string if isinstance(m.string, tuple) else [m.string])
    )
    assert not unchecked, f"no checked Chinese for {unchecked}"
    assert not sorted(set(known) - marked), "messages nothing marks: run python -m maps.i18n"
    for message, chinese in catalog_messages():
        assert CJK.search(chinese), f"{message!r} → {chinese!r} is not Chinese"
        # Placeholders survive translation.
        assert set(re.findall(r"\{\w+\}", message)) == set(re.findall(r"\{\w+\}", chinese)), message


def test_no_message_hides_inside_an_f_string():
    # Babel reads an f-string as one string: a t("…") inside it never reaches the catalog,
    # and the page shows its English.
    import tokenize

    from maps.i18n import SOURCES

    root = Path(__file__).resolve().parents[2]
    hidden = []
    for source in SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            with file.open("rb") as f:
                for tok in tokenize.tokenize(f.readline):
                    if (
                        tok.type == tokenize.STRING
                        and re.match(r"(?i)[rb]*f", tok.string)
                        and re.search(r"\b(t|N_|ngettext)\(\s*['\"]", tok.string)
                    ):
                        hidden.append(f"{file.relative_to(root)}:{tok.start[0]}")
    assert hidden == [], "translate outside the f-string: " + ", ".join(hidden)


def test_names_come_from_one_table_in_both_languages():
    from typing import get_args

    from service.auth import ROLES
    from service.schemas.entities import IncidentCategory, PartyOrg, TeamRole, UnitKind

    assert list(NAMES["category"]) == list(get_args(IncidentCategory))
    assert set(NAMES["team_role"]) == set(get_args(TeamRole))
    assert set(NAMES["role"]) == {*ROLES, "system"}
    assert set(NAMES["unit_kind"]) == set(get_args(UnitKind))
    assert set(NAMES["party_org"]) == set(get_args(PartyOrg))
    for kind, names in NAMES.items():
        for key, (zh, en) in names.items():
            assert CJK.search(zh) and en and not CJK.search(en), (kind, key)
    zh, en = translator("zh-CN"), translator("en")
    assert zh.name("category", "street_light") == "路灯" and en.name("level", "grid") == "Grid"
    assert zh.name("category", "unknown") == "unknown"


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        (None, None, "zh-CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr-FR, en;q=0.5, zh;q=0.8", "zh-CN"),
        (None, "zh-TW", "zh-CN"),
        (None, "de, *;q=0.1", "zh-CN"),
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        (None, "en;q=0, zh;q=0.1", "zh-CN"),
    ],
)
def test_the_language_is_the_query_then_accept_language_then_chinese(query, header, expected):
    assert negotiate_language(query=query, accept_language=header) == expected


def test_an_unknown_language_is_refused_by_name():
    with pytest.raises(ValueError, match="lang is one of zh-CN, en"):
        negotiate_language(query="fr")
    with pytest.raises(ValueError, match="lang is one of"):
        translator("de")


def test_dates_are_the_citys_time_in_the_readers_language():
    moment = "2026-12-03T07:38:00+00:00"
    assert TIME_ZONE == "Asia/Shanghai"
    assert translator("zh-CN").datetime(moment) == "2026年12月3日 15:38:00"
    assert translator("en").datetime(moment) == "3 Dec 2026, 15:38:00"
    assert translator("en").datetime("not a date") == "not a date"


# -- the pages -------------------------------------------------------------------------------
# Data in Chinese (as the city's own): what is left in Latin letters is the page's.
def _grids():
    return collection(
        [
            feature(
                square(106.0 + i * 0.01, 26.0),
                code=code,
                name=f"网格{i}",
                open_incidents=[0, 1, 3, 7][i],
                incidents_90d=[0, 2, 5, 9][i],
                units=i,
                team_roles=[3, 2, 1, 0][i],
            )
            for i, code in enumerate(GRID_CODES)
        ]
    )


def _incidents():
    return collection(
        [
            point(
                106.005 + i * 0.006,
                26.005,
                category=c,
                status="new",
                reported_at="2026-12-03T07:38:00+00:00",
                description="水管漏水",
                grid_code=GRID_CODES[0],
            )
            for i, c in enumerate(["water", "gas", "road", "other", "public_order"])
        ]
    )


def _city():
    return collection([feature(square(106.0, 26.0, 0.04), code="990100", name="小城市")])


def _dispatch(lang=None, **kw):
    args = {"lang": lang} if lang else {}
    return dispatch_page(
        areas={"city": _city(), "grid": _grids()},
        incidents=_incidents(),
        breadcrumb=[{"code": "990100", "name": "小城市", "level": "city"}],
        focus="990100",
        area_url="/pages/dispatch?area={code}",
        tablet_url="/pages/tablet?grid={code}",
        incidents_matched=9,
        **args,
        **kw,
    )


def _tablet(lang=None, **kw):
    args = {"lang": lang} if lang else {}
    return tablet_page(
        grid=_grids()["features"][0],
        team=[{"name": "李娜", "team_role": "grid_manager", "phone": "138-0000-0001"}],
        units=collection([point(106.002, 26.002, name="面馆", kind="shop", party_org="none")]),
        incidents=_incidents(),
        **{"report_endpoint": "/incidents", "csrf_token": "c5rf", **args, **kw},
    )


def _planning(lang=None, metric="team_roles", **kw):
    from maps.gaps import add_gap_layers

    args = {"lang": lang} if lang else {}
    page = planning_page(
        grids=_grids(), outlines={"city": _city()}, metric=metric, area_url="/p?a={code}", **args
    )
    add_gap_layers(page, _analyses())
    return page


def _analyses():
    """Findings of the four analyses the planning page draws, one or two each."""
    grid = square(106.0, 26.0)
    return {
        "reach": {
            "items": [
                {
                    "geometry": square(106.001, 26.001, 0.004),
                    "uncovered_area_m2": 9.0,
                    "name": "北社区",
                    "uncovered_share": 0.25,
                    "households": {"uncovered": 3, "total": 9},
                    "units": {"uncovered": 1, "total": 2},
                }
            ]
        },
        "staffing": {
            "items": [
                {
                    "geometry": grid,
                    "kind": "missing_role",
                    "grid_code": GRID_CODES[3],
                    "roles": ["grid_manager", "grid_police"],
                    "count": 2,
                }
            ]
        },
        "workload": {
            "items": [
                {
                    "geometry": grid,
                    "outlier": "high",
                    "grid_code": GRID_CODES[2],
                    "open": 7,
                    "overdue": 2,
                    "incidents": 30,
                },
                {
                    "geometry": grid,
                    "outlier": None,
                    "grid_code": GRID_CODES[1],
                    "open": 1,
                    "overdue": 0,
                    "incidents": 3,
                },
            ]
        },
        "topology": {
            "items": [
                {
                    "geometry": square(106.02, 26.0, 0.001),
                    "kind": "gap",
                    "parent_code": "990100",
                    "codes": [GRID_CODES[1], GRID_CODES[2]],
                    "area_m2": 12.5,
                }
            ]
        },
    }


PAGES = {"dispatch": _dispatch, "tablet": _tablet, "planning": _planning}


@pytest.mark.parametrize("kind", PAGES)
def test_each_page_is_chinese_by_default_with_no_english_left(kind):
    html = render_page(PAGES[kind]())
    assert '<html lang="zh-CN">' in html
    assert english_left(html) == []
    assert english_left(render_page(PAGES[kind](), assets="inline")) == []
    # Every word of the page's title, legend and layer names is Chinese (data aside).
    shown = (
        " ".join(controls(html).split("<"))
        + " "
        + re.search(r"<title>(.*?)</title>", html).group(1)
    )
    assert CJK.search(shown)


@pytest.mark.parametrize("kind", PAGES)
def test_each_page_speaks_english_on_request(kind):
    html = render_page(PAGES[kind](lang="en"))
    assert '<html lang="en">' in html
    strings = visible_strings(html)
    words = {
        "dispatch": ["Legend", "Open incidents per grid", "Water", "Zoom in"],
        "tablet": ["Report a case here", "Grid manager", "Use my position (GPS)"],
        "planning": ["Coverage gaps", "Beyond a 15-minute walk", "No gap layer"],
    }[kind]
    for word in words:
        assert any(word in s for s in strings), word
    # Only the data is Chinese.
    data = ["小城市", "水管漏水", "李娜", "面馆", "北社区", "网格"]
    for s in strings:
        for name in data:
            s = s.replace(name, "")
        assert not CJK.search(s), s


def test_pins_and_dates_read_in_the_pages_language():
    zh = render_page(_dispatch())
    (pins,) = embedded(zh, "wg.points")  # the clustered incidents' options follow the data
    options = re.search(r"wg\.points\(\{.*?\]\}, (\{.*?\})\)\.getLayers", zh, re.S).group(1)
    assert '"labels":{"category":{"water":"供水"' in options
    assert pins["features"][0]["properties"]["reported_at"] == "2026年12月3日 15:38:00"
    en = render_page(_dispatch(lang="en"))
    assert embedded(en, "wg.points")[0]["features"][0]["properties"]["reported_at"] == (
        "3 Dec 2026, 15:38:00"
    )


def test_the_tablet_form_and_its_script_get_their_words_from_the_server():
    html = render_page(_tablet())
    form = json.loads(re.search(r"wg\.reportForm\(map_\w+, (\{.*?\})\);", html).group(1))
    assert form["text"]["no_gps"] == "本设备无GPS：请在地图上点选案件位置"
    assert form["pin"]["labels"]["category"]["road"] == "道路"
    assert '<option value="street_light">路灯</option>' in html
    assert "未配备党建指导员" in html and "网格管理员" in html
    runtime = (Path(__file__).resolve().parents[2] / "maps/static/wangge/wangge.js").read_text()
    for english in ("tap the map", "Sending…", "Filed case", "locating…"):
        assert english not in runtime


def _area_options(html: str) -> list[dict]:
    """Return the options (second argument) of every ``wg.areas(`` call."""
    decoder = json.JSONDecoder()
    out = []
    for m in re.finditer(r"wg\.areas\(", html):
        _data, end = decoder.raw_decode(html, m.end())
        out.append(decoder.raw_decode(html, end + 2)[0])
    return out


# -- the planning page at a glance -------------------------------------------------------------
def _legend_rows(html: str) -> list[str]:
    legend = [c for c in controls(html).split("\n") if "wg-note" in c][-1]
    return re.findall(r'<div class="wg-note">([^<]+)</div>', legend)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_planning_legend_names_each_section_once_and_each_gap_theme(lang):
    html = render_page(_planning(lang=lang))
    legend = controls(html)
    headings = re.findall(r'<div class="wg-note">([^<]+)</div><div class="wg-row', legend)
    assert len(headings) == len(set(headings)), headings
    t = translator(lang)
    assert legend.count(t("Coverage gaps")) == 1
    themes = re.findall(r'<div class="wg-row wg-theme" data-theme="(\d)">', legend)
    assert themes == ["0", "1", "2", "3"]
    for title in (
        "Beyond a 15-minute walk",
        "Grids missing a team role",
        "Workload outliers",
        "Partition defects",
    ):
        assert legend.count(t(title)) == 1


def test_planning_gap_themes_are_distinct_and_one_is_shown():
    html = render_page(_planning(lang="en"))
    styles = [o["style"] for o in _area_options(html)[-4:]]
    looks = {(s["color"], s.get("dashArray"), s["weight"], s["fillOpacity"]) for s in styles}
    assert len(looks) == 4
    # The 15-minute layer washes its large areas lightly instead of flooding the view.
    assert styles[0]["fillOpacity"] <= 0.25
    chooser = re.findall(r"wg\.themes\(map_\w+, \[(.*?)\], ", html)
    assert len(chooser) == 1 and chooser[0].count("[") == 4
    # Made but not added: the chooser adds the first, the others wait for a click.
    names = re.findall(r"var (area_layer_\w+) = wg\.areas", html)
    added = re.findall(r"(area_layer_\w+)\.addTo\(", html)
    assert not set(names[-4:]) & set(added)


# -- in a browser: what the scripts put in the DOM ---------------------------------------------
# The browser: tests/conftest.py's fixture (tests/service/browser.py launches it).
#: Text of the DOM a reader sees: text, and the attributes browsers show.
DOM_TEXT = """() => {
  const out = [document.title, document.body.innerText];
  document.querySelectorAll('[title],[aria-label],[placeholder],[alt]').forEach((el) => {
    for (const a of ['title', 'aria-label', 'placeholder', 'alt']) {
      if (el.getAttribute(a)) out.push(el.getAttribute(a));
    }
  });
  return out.join('\\n');
}"""


def _open(browser, html: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.html"
    path.write_text(html, "utf-8")
    page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".leaflet-control-layers")
    page.wait_for_timeout(300)
    return page, errors


@pytest.mark.parametrize("kind", PAGES)
def test_the_dom_of_each_static_page_holds_no_english(browser, tmp_path, kind):
    # An English browser: the page's language, not the browser's, decides.
    static = {"report_endpoint": None, "csrf_token": None} if kind == "tablet" else {}
    html = render_page(PAGES[kind](**static), assets="inline")
    page, errors = _open(browser, html, tmp_path, kind)
    try:
        # Open every popup the page has: areas and pins.
        page.evaluate(
            "() => { const m = Object.values(window).find((v) => v instanceof L.Map);"
            " m.eachLayer((l) => { if (l.getPopup && l.getPopup()) l.openPopup(); }); }"
        )
        text = page.evaluate(DOM_TEXT)
        assert latin_words(text) == [], text
        assert CJK.search(text)
        if kind == "tablet":
            assert "这是静态副本" in text  # the form's own script, in Chinese
        assert errors == []
    finally:
        page.close()


def test_the_planning_page_opens_with_one_gap_theme_and_switches(browser, tmp_path):
    page, errors = _open(browser, render_page(_planning(), assets="inline"), tmp_path, "plan")
    try:
        radios = page.locator(".wg-themes input[type=radio]")
        assert radios.count() == 5  # four themes and "none"
        assert page.locator(".wg-themes input[type=radio]:checked").count() == 1
        labels = page.locator(".wg-themes label").all_inner_texts()
        assert labels[0].strip() == "15分钟步行圈以外" and labels[-1].strip() == "不显示缺口"
        assert page.locator(".wg-theme.wg-active").count() == 1
        assert "15分钟步行圈以外" in page.locator(".wg-theme.wg-active").inner_text()
        # One theme's shapes on the map: the reach area's one polygon (purple).
        purple = "#6a3d9a"
        assert page.locator(f'path[stroke="{purple}"]').count() == 1
        page.locator(".wg-themes label").nth(3).click()  # partition defects
        assert page.locator(f'path[stroke="{purple}"]').count() == 0
        assert page.locator('path[stroke="#000000"]').count() == 1
        assert "网格划分缺陷" in page.locator(".wg-theme.wg-active").inner_text()
        page.locator(".wg-themes label").nth(4).click()  # none
        assert page.locator(".wg-theme.wg-active").count() == 0
        assert errors == []
        page.screenshot(path=str(tmp_path / "planning.png"))
    finally:
        page.close()


def test_default_language_is_chinese():
    assert DEFAULT_LANGUAGE == "zh-CN" and LANGUAGES == ("zh-CN", "en")
    html = render_page(planning_page(grids=_grids()))
    assert '<html lang="zh-CN">' in html and "规划：网格工作量" in html
    page = planning_page(grids=_grids())
    gaps = collection([feature(square(106.001, 26.001, 0.003))])
    add_coverage_gap_layer(page, gaps, name="测试", description="说明")
    assert "服务缺口" in controls(render_page(page))

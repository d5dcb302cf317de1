"""The served pages' language: Simplified Chinese by default, English with ``?lang=en`` or
``Accept-Language``; and in a real browser, the live pages' scripts (the dispatch queue with
a case open, the tablet's cases and outbox) put no English in the DOM.

The tiny city's areas, units and team get Chinese names, as a Guiyang installation's have:
what is left in Latin letters is the pages' own.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import auth, make_tokens
from tests.maps.words import english_left, latin_words
from tests.service.browser import open_page

CITY, D1 = "990100", "990101"
COMMUNITY = "990101001001"
NW = "990101001001001"
IN_NW = (106.005, 26.015)
TOKEN_SPECS = {
    "admin": ("admin", None),
    "city": ("city_dispatcher", CITY),
    "community": ("community_dispatcher", COMMUNITY),
    "planner": ("planner", CITY),
    "officer": ("grid_officer", NW),
}
CJK = re.compile(r"[\u4e00-\u9fff]")
PAGES = {
    "dispatch": ("/pages/dispatch", "community"),
    "tablet": ("/pages/tablet", "officer"),
    "planning": ("/pages/planning", "planner"),
}


def _sql(url: str, sql: str, **params) -> None:
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def _seed(url: str, post) -> list[int]:
    """Give the city Chinese names, a unit, a team and three cases in the officer's grid
    (one reported, one dispatched to the grid, one signed for); return the cases' ids."""
    _sql(url, "UPDATE area SET name = '区域' || right(code, 3)")
    post("/units", {"lon": 106.002, "lat": 26.012, "name": "面馆", "kind": "shop"})
    post(
        "/members",
        {
            "name": "李娜",
            "kind": "grid_staff",
            "home_community_code": COMMUNITY,
            "team_role": "grid_manager",
            "serving_grid_code": NW,
            "phone": "138 0000 0001",
        },
    )
    ids = []
    for category, description in (("road", "路面塌陷"), ("water", "水管漏水"), ("gas", "燃气味")):
        body = {"lon": IN_NW[0], "lat": IN_NW[1], "category": category, "source": "patrol"}
        ids.append(post("/incidents", {**body, "description": description})["id"])
    for case in ids[1:]:
        post(f"/cases/{case}/actions/accept", {})
        post(f"/cases/{case}/actions/dispatch", {"assignee": {"kind": "grid", "code": NW}})
    return ids


@pytest.fixture
def tokens(tiny_db_url):
    return make_tokens(tiny_db_url, TOKEN_SPECS)


@pytest.fixture
def client(tiny_client, tiny_db_url, tokens):
    def post(path, body):
        r = tiny_client.post(path, json=body, headers=auth(tokens["admin"]))
        assert r.status_code in (200, 201), r.text
        return r.json()

    _seed(tiny_db_url, post)
    return tiny_client


# -- HTTP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PAGES)
def test_each_served_page_is_chinese_by_default(client, tokens, kind):
    path, who = PAGES[kind]
    r = client.get(path, headers=auth(tokens[who]))
    assert r.status_code == 200, r.text
    assert '<html lang="zh-CN">' in r.text
    assert "Accept-Language" in r.headers["vary"]
    assert english_left(r.text) == []


@pytest.mark.parametrize("kind", PAGES)
def test_each_served_page_is_english_on_request(client, tokens, kind):
    path, who = PAGES[kind]
    english = {
        "dispatch": "Open incidents per grid",
        "tablet": "Report a case here",
        "planning": "Planning: grid workload",
    }[kind]
    header = {**auth(tokens[who]), "Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"}
    by_header = client.get(path, headers=header)
    assert '<html lang="en">' in by_header.text and english in by_header.text
    by_query = client.get(path, params={"lang": "en"}, headers=auth(tokens[who]))
    assert '<html lang="en">' in by_query.text and english in by_query.text
    # The address wins over the browser's languages.
    header["Accept-Language"] = "en"
    chinese = client.get(path, params={"lang": "zh-CN"}, headers=header)
    assert '<html lang="zh-CN">' in chinese.text and english not in chinese.text


def test_an_unknown_language_is_refused_naming_lang(client, tokens):
    r = client.get("/pages/planning", params={"lang": "fr"}, headers=auth(tokens["planner"]))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "lang" in r.text


def test_the_token_exchange_keeps_the_language(client, tokens):
    r = client.get(
        "/pages/tablet",
        params={"lang": "en", "access_token": tokens["officer"]},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/pages/tablet?lang=en"


def test_the_static_export_speaks_the_asked_language(client, tiny_db_url):
    from service.auth import Principal
    from service.pages import export_page

    admin = Principal(token_id="cli", name="cli", role="admin", area_code=None, scope_path=None)
    zh = export_page(tiny_db_url, admin, "tablet", grid=NW)
    assert '<html lang="zh-CN">' in zh and english_left(zh) == []
    en = export_page(tiny_db_url, admin, "tablet", grid=NW, lang="en")
    assert '<html lang="en">' in en and "Report a case here" in en


# -- in a browser: what the live scripts write ------------------------------------------------
@pytest.fixture
def live(tiny_server, tiny_db_url):
    tokens = make_tokens(tiny_db_url, TOKEN_SPECS)
    http = httpx.Client(base_url=tiny_server.base_url, timeout=20)

    def post(path, body):
        r = http.post(path, json=body, headers=auth(tokens["admin"]))
        assert r.status_code in (200, 201), r.text
        return r.json()

    cases = _seed(tiny_db_url, post)
    yield tiny_server, tokens, cases
    http.close()


#: What a reader sees of the DOM: its text and the attributes browsers show.
DOM_TEXT = """() => {
  const out = [document.title, document.body.innerText];
  document.querySelectorAll('[title],[aria-label],[placeholder],[alt]').forEach((el) => {
    for (const a of ['title', 'aria-label', 'placeholder', 'alt']) {
      if (el.getAttribute(a)) out.push(el.getAttribute(a));
    }
  });
  document.querySelectorAll('option').forEach((el) => out.push(el.textContent));
  return out.join('\\n');
}"""


def _open(browser, server, path, token):
    # An English browser: the page's language is the service's choice (Chinese by default).
    return open_page(browser, server, path, token, (1400, 900), lang="zh-CN", locale="en-US")


def _no_english(page) -> str:
    text = page.evaluate(DOM_TEXT)
    assert latin_words(text) == [], (latin_words(text), text)
    return text


def test_the_live_dispatch_page_writes_chinese(browser, live):
    server, tokens, cases = live
    ctx, page, watch = _open(browser, server, "/pages/dispatch", tokens["community"])
    try:
        page.wait_for_selector(".wg-status.wg-on")
        page.wait_for_function("() => document.querySelectorAll('.wg-qitem').length === 3")
        text = _no_english(page)
        assert "案件队列" in text and "● 实时" in text and "未结案件3件" in text
        # A case opened: its fields, history with dates, team and actions; then an action's form.
        page.locator(f".wg-qitem[data-id='{cases[1]}']").click()
        page.wait_for_selector(".wg-history li")
        page.wait_for_selector(".wg-teambox .wg-team")
        text = _no_english(page)
        assert "办理记录" in text and "李娜" in text and "网格管理员" in text
        assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日", text), text  # dates in Chinese
        # Areas by name, not by a 12- or 15-digit code: the owner, the grid team dispatched to.
        queue = page.locator("#wg-queue").inner_text()
        assert "社区 区域001" in queue and "网格团队 区域001" in queue, queue
        assert COMMUNITY not in queue and NW not in queue, queue
        page.locator(".wg-act").first.click()
        page.wait_for_selector(".wg-actform:not([hidden])")
        _no_english(page)
        # A reported case offers acceptance: its buttons and their hints are Chinese too.
        page.locator(".wg-back").click()
        page.locator(f".wg-qitem[data-id='{cases[0]}']").click()
        page.wait_for_selector(".wg-act")
        text = _no_english(page)
        assert "立案" in text and "不予立案" in text
        assert watch.problems == []
    finally:
        ctx.close()


def test_the_live_tablet_writes_chinese(browser, live):
    server, tokens, _cases = live
    ctx, page, watch = _open(browser, server, "/pages/tablet", tokens["officer"])
    try:
        page.wait_for_selector(".wg-mycase")
        page.wait_for_function("() => document.querySelectorAll('.wg-mycase').length === 2")
        text = _no_english(page)
        assert "我的案件" in text and "签收" in text and "无待发送事项" in text
        page.locator(".wg-mycase button[data-action='escalate']").first.click()
        page.wait_for_selector(".wg-mcform")
        _no_english(page)
        # A report without a position: the form's script says so in Chinese.
        page.locator("#wg-report button[type=submit]").click()
        page.wait_for_function("() => document.querySelector('.wg-answer').textContent !== ''")
        text = _no_english(page)
        assert "尚无位置" in text or "已登记" in text or "正在发送" in text, text
        # A report outside the officer's grid is refused by the service (in English): the
        # page says why in its own words.
        x, y = page.evaluate(
            """() => {
                const map = window[document.querySelector('.folium-map').id];
                map.setZoom(map.getZoom() - 1, {animate: false});
                const p = map.latLngToContainerPoint([26.0155, 106.0125]);
                return [p.x, p.y];
            }"""
        )
        page.locator(".folium-map").click(position={"x": x, "y": y})
        assert "地图点选" in page.locator(".wg-where").inner_text()
        page.click("#wg-report button[type=submit]")
        page.locator(".wg-answer.wg-error").wait_for(timeout=10_000)
        text = _no_english(page)
        assert "您无权执行此操作。（错误码 HTTP 403）" in text, text
        assert all("Failed to load resource" in p for p in watch.problems), watch.problems
    finally:
        ctx.close()

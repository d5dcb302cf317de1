"""The live dispatch page, the grid officer's tablet with its offline queue, and case photos.

HTTP first (photo upload and reading, the pages' extra routes), then headless Chromium: a
case filed by another client appears on an open dispatch page without reload, and a tablet
with its network switched off files a report and signs for a case, shows them waiting, and
sends each exactly once when the network returns.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib

import httpx
import pytest

from tests.conftest import auth, make_tokens
from tests.service.browser import open_page, shot

CITY, D1 = "990100", "990101"
COMMUNITY = "990101001001"
NW = "990101001001001"  # the officer's grid
SE = "990102001002002"
IN_NW = (106.005, 26.015)
TOKEN_SPECS = {
    "admin": ("admin", None),
    "city": ("city_dispatcher", CITY),
    "community": ("community_dispatcher", COMMUNITY),
    "planner": ("planner", CITY),
    "officer": ("grid_officer", NW),
    "other_officer": ("grid_officer", SE),
}


def png(seed: int = 0) -> bytes:
    """Return a tiny valid PNG (one pixel whose colour is ``seed``)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixel = bytes([0, seed % 256, (seed // 256) % 256, 200])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(pixel))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def tokens(tiny_db_url):
    return make_tokens(tiny_db_url, TOKEN_SPECS)


def _report(client, token, where=IN_NW, category="road", description="") -> int:
    body = {"category": category, "source": "patrol", "lon": where[0], "lat": where[1]}
    r = client.post("/incidents", json={**body, "description": description}, headers=auth(token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _act(client, token, case_id, action, body=None) -> dict:
    r = client.post(f"/cases/{case_id}/actions/{action}", json=body, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def _dispatched(client, tokens, description="") -> int:
    """Return a case in the officer's grid, accepted and dispatched to the grid team."""
    case = _report(client, tokens["officer"], description=description)
    _act(client, tokens["community"], case, "accept")
    _act(client, tokens["community"], case, "dispatch", {"assignee": {"kind": "grid", "code": NW}})
    return case


# -- photos ----------------------------------------------------------------------------------
def test_a_photo_is_stored_once_and_cited_by_the_feedback(tiny_client, tokens):
    client, officer = tiny_client, tokens["officer"]
    case = _dispatched(client, tokens)
    photo = png(1)
    url = f"/cases/{case}/attachments"
    first = client.post(url, content=photo, headers={**auth(officer), "Content-Type": "image/png"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["sha256"] == hashlib.sha256(photo).hexdigest()
    assert body["media_type"] == "image/png" and body["bytes"] == len(photo)
    assert body["url"] == f"http://testserver/cases/{case}/attachments/{body['sha256']}"
    assert first.headers["location"] == body["url"]
    # A retry (a lost answer, an offline queue sending again) stores nothing new.
    again = client.post(url, content=photo, headers={**auth(officer), "Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json() == body
    # As a form too (curl -F file=@photo.png).
    other = png(2)
    form = client.post(url, files={"file": ("p.png", other, "image/png")}, headers=auth(officer))
    assert form.status_code == 201, form.text
    assert form.json()["sha256"] == hashlib.sha256(other).hexdigest()

    got = client.get(body["url"], headers=auth(officer))
    assert got.status_code == 200 and got.content == photo
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    etag = got.headers["etag"]
    assert (
        client.get(body["url"], headers={**auth(officer), "If-None-Match": etag}).status_code == 304
    )

    _act(client, officer, case, "sign")
    handled = _act(
        client, officer, case, "feedback", {"note": "filled", "attachments": [body["url"]]}
    )
    assert handled["state"] == "handled"
    events = client.get(f"/cases/{case}/events", headers=auth(officer)).json()
    assert events[-1]["action"] == "feedback" and events[-1]["attachments"] == [body["url"]]


def test_photos_are_refused_when_they_are_not_images_or_not_the_callers(tiny_client, tokens):
    client = tiny_client
    case = _dispatched(client, tokens)
    url = f"/cases/{case}/attachments"
    h = {**auth(tokens["officer"]), "Content-Type": "image/jpeg"}
    r = client.post(url, content=b"<svg onload=alert(1)>", headers=h)
    assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem")
    assert client.post(url, content=b"", headers=h).status_code == 422
    # A sibling grid's officer does not see the case; a planner does not act on cases.
    other = {**auth(tokens["other_officer"]), "Content-Type": "image/png"}
    assert client.post(url, content=png(), headers=other).status_code == 404
    planner = {**auth(tokens["planner"]), "Content-Type": "image/png"}
    assert client.post(url, content=png(), headers=planner).status_code == 403
    assert client.post("/cases/999999/attachments", content=png(), headers=h).status_code == 404
    stored = client.post(url, content=png(), headers=h).json()
    assert client.get(stored["url"], headers=auth(tokens["other_officer"])).status_code == 404
    missing = f"/cases/{case}/attachments/{'0' * 64}"
    assert client.get(missing, headers=auth(tokens["officer"])).status_code == 404
    assert client.get(stored["url"]).status_code == 401


def test_a_photo_over_the_limit_is_refused_before_it_is_read(tiny_client, tokens):
    case = _dispatched(tiny_client, tokens)
    big = b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024)
    r = tiny_client.post(
        f"/cases/{case}/attachments",
        content=big,
        headers={**auth(tokens["officer"]), "Content-Type": "image/jpeg"},
    )
    assert r.status_code == 413


# -- pages over HTTP -------------------------------------------------------------------------
def embedded(html: str, call: str) -> list[dict]:
    """Return the options (the first object argument) of every ``call(`` in the page."""
    decoder = json.JSONDecoder()
    return [
        decoder.raw_decode(html, m.end())[0]
        for m in re.finditer(re.escape(call) + r"\([^{]*", html)
    ]


def test_the_service_worker_is_public_and_scoped_to_the_pages(tiny_client):
    r = tiny_client.get("/pages/sw.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    assert b"wangge-pages-v1" in r.content


def test_a_grids_team_for_the_dispatch_page(tiny_client, tokens):
    client = tiny_client
    r = client.post(
        "/members",
        json={
            "name": "Li Na",
            "kind": "grid_staff",
            "home_community_code": COMMUNITY,
            "team_role": "grid_manager",
            "serving_grid_code": NW,
            "phone": "138 0000 0001",
        },
        headers=auth(tokens["admin"]),
    )
    assert r.status_code == 201, r.text
    team = client.get("/pages/grid-team", params={"grid": NW}, headers=auth(tokens["community"]))
    assert team.status_code == 200, team.text
    assert team.json() == [{"name": "Li Na", "team_role": "grid_manager", "phone": "138 0000 0001"}]
    assert team.headers["cache-control"] == "private, no-store"
    # A sibling grid's officer sees no such grid; a bad code is named.
    other = client.get(
        "/pages/grid-team", params={"grid": NW}, headers=auth(tokens["other_officer"])
    )
    assert other.status_code == 404
    bad = client.get("/pages/grid-team", params={"grid": "x"}, headers=auth(tokens["admin"]))
    assert bad.status_code == 422
    assert client.get("/pages/grid-team", params={"grid": NW}).status_code == 401


def test_the_served_pages_carry_their_live_parts_and_exports_do_not(
    tiny_client, tokens, tiny_db_url
):
    from service.auth import Principal
    from service.pages import export_page

    client = tiny_client
    _report(client, tokens["officer"])
    html = client.get("/pages/dispatch", headers=auth(tokens["community"])).text
    (queue,) = embedded(html, "wg.dispatchLive")
    assert queue["cases"] == "/cases" and queue["stream"] == "/cases/stream"
    assert queue["lastEventId"] >= 1 and queue["area"] is None
    assert queue["limits"]["road|normal|accept"] > 0
    assert queue["actions"]["reject"]["requires"] == ["reason"]
    assert "queue" in queue["text"] and "wangge/dispatch.js" in html
    focused = client.get("/pages/dispatch", params={"area": D1}, headers=auth(tokens["city"])).text
    (queue,) = embedded(focused, "wg.dispatchLive")
    assert queue["area"] == D1 and queue["areaPath"].endswith(D1)

    tablet = client.get("/pages/tablet", headers=auth(tokens["officer"])).text
    (desk,) = embedded(tablet, "wg.tablet")
    assert desk["grid"] == NW and desk["handler"] is True and desk["sw"] == "/pages/sw.js"
    assert len(tablet.encode()) < 15_000
    dispatcher = client.get("/pages/tablet", params={"grid": NW}, headers=auth(tokens["community"]))
    assert embedded(dispatcher.text, "wg.tablet")[0]["handler"] is False

    admin = Principal(token_id="cli", name="cli", role="admin", area_code=None, scope_path=None)
    for kind, params in (("dispatch", {}), ("tablet", {"grid": NW})):
        static = export_page(tiny_db_url, admin, kind, **params)
        assert "wg.dispatchLive" not in static and "wg.tablet(" not in static


# -- in a browser ----------------------------------------------------------------------------
@pytest.fixture
def live(tiny_server, tiny_db_url):
    """A live server on the tiny city with a team in the officer's grid, its tokens, and an
    HTTP client for it."""
    tokens = make_tokens(tiny_db_url, TOKEN_SPECS)
    http = httpx.Client(base_url=tiny_server.base_url, timeout=20)
    member = {
        "name": "Li Na",
        "kind": "grid_staff",
        "home_community_code": COMMUNITY,
        "team_role": "grid_manager",
        "serving_grid_code": NW,
        "phone": "138 0000 0001",
    }
    assert http.post("/members", json=member, headers=auth(tokens["admin"])).status_code == 201
    yield tiny_server, tokens, http
    http.close()


def _sql(url: str, sql: str, **params) -> list:
    from sqlalchemy import text

    from service.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        rows = result.all() if result.returns_rows else []
    engine.dispose()
    return rows


def _events(http, token, case_id) -> list[str]:
    r = http.get(f"/cases/{case_id}/events", headers=auth(token))
    assert r.status_code == 200, r.text
    return [e["action"] for e in r.json()]


def test_the_dispatch_page_shows_a_case_filed_elsewhere_live(browser, live, tiny_db_url):
    server, tokens, http = live
    first = _report(http, tokens["officer"], description="pothole at the school")
    amber = _report(http, tokens["officer"], category="water", description="leak")
    red = _report(http, tokens["officer"], category="gas", description="smell of gas")
    # Clocks: one case at 5 of its 60 minutes left (amber), one past its deadline (red).
    _sql(
        tiny_db_url,
        "UPDATE incident SET step_due_at = now() + interval '5 minutes' WHERE id = :i",
        i=amber,
    )
    _sql(
        tiny_db_url,
        "UPDATE incident SET step_due_at = now() - interval '1 minute' WHERE id = :i",
        i=red,
    )

    ctx, page, watch = open_page(
        browser, server, "/pages/dispatch", tokens["community"], (1400, 900)
    )
    page.wait_for_selector(".wg-status.wg-on")  # following the stream
    # The queue loads beside the stream (both start at once): wait for its three cases.
    page.wait_for_function(
        "() => document.querySelectorAll('.wg-qitem').length === 3", timeout=10_000
    )
    items = page.locator(".wg-qitem")
    # Most urgent first: the red one, then the amber one.
    assert items.nth(0).get_attribute("data-id") == str(red)
    assert "wg-clock-red" in items.nth(0).get_attribute("class")
    assert "wg-clock-amber" in items.nth(1).get_attribute("class")
    icon = "(id) => wg.live.markers[id].options.icon.options.className"
    assert "wg-clock-red" in page.evaluate(icon, red)
    assert "wg-clock-amber" in page.evaluate(icon, amber)
    assert "wg-state-reported" in page.evaluate(icon, first)
    # The browser's clock is the service's: amber once 80 % of the limit has passed.
    clocks = page.evaluate(
        """() => {
            const now = Date.now();
            const c = (minutes, extra) => wg.cases.clock(Object.assign({
                state: 'reported', category: 'road', priority: 'normal', step: 'accept',
                step_due_at: new Date(now + minutes * 60000).toISOString(),
                step_overdue: false}, extra), {'road|normal|accept': 60}, now);
            return [c(13), c(11), c(-1), c(30, {step_overdue: true}), c(30, {state: 'closed'})];
        }"""
    )
    assert clocks == ["green", "amber", "red", "red", None]
    page.evaluate("window.__sameDocument = true")

    # Another client files a case: it appears in the queue and on the map, no reload.
    filed = _report(http, tokens["officer"], category="sanitation", description="rubbish pile")
    page.wait_for_selector(f".wg-qitem[data-id='{filed}']", timeout=10_000)
    on_map = "(id) => !!wg.live.markers[id] && wg.live.cluster.hasLayer(wg.live.markers[id])"
    page.wait_for_function(on_map, arg=filed)
    assert page.evaluate("window.__sameDocument") is True
    assert "rubbish pile" in page.locator(f".wg-qitem[data-id='{filed}']").inner_text()
    assert page.locator(".wg-qcount").inner_text() == "4 open cases"

    # Filters: by category, then overdue only.
    page.select_option("select[data-filter=category]", "sanitation")
    assert page.locator(".wg-qitem").count() == 1
    assert not page.evaluate(on_map, first)  # filtered off the map too
    page.select_option("select[data-filter=category]", "")
    page.check("input[data-filter=overdue]")
    assert [i.get_attribute("data-id") for i in page.locator(".wg-qitem").all()] == [str(red)]
    page.uncheck("input[data-filter=overdue]")

    # One click: the case's history, its grid's team, the caller's actions.
    page.locator(f".wg-qitem[data-id='{filed}']").click()
    case = page.locator(".wg-case")
    case.locator(".wg-act[data-action=accept]").wait_for()
    assert "Filed" in case.locator(".wg-history").inner_text()
    case.locator(".wg-team").wait_for()
    assert "Li Na" in case.locator(".wg-team").inner_text()
    actions = case.locator(".wg-act").evaluate_all("bs => bs.map(b => b.dataset.action)")
    assert {"accept", "reject", "escalate", "comment"} <= set(actions)

    # Someone else acts first while the form is open: If-Match refuses the stale action (412)
    # and the page says so plainly, reloaded.
    case.locator(".wg-act[data-action=accept]").click()
    _act(http, tokens["community"], filed, "comment", {"note": "calling the reporter"})
    page.wait_for_selector(".wg-msg.wg-warn")
    case.locator(".wg-send").click()
    page.wait_for_selector(".wg-msg.wg-error")
    assert "Someone else changed this case first" in case.locator(".wg-msg").inner_text()
    assert "calling the reporter" in case.locator(".wg-history").inner_text()

    case.locator(".wg-act[data-action=accept]").click()
    case.locator(".wg-send").click()
    page.wait_for_selector(".wg-msg.wg-ok")
    assert case.locator(".wg-msg").inner_text() == "Done: Accept."
    case.locator(".wg-act[data-action=dispatch]").click()
    assert case.locator("[name=assignee_code]").input_value() == NW  # the case's grid
    case.locator(".wg-send").click()
    page.wait_for_function(
        "() => (document.querySelector('.wg-case .wg-msg') || {}).textContent === 'Done: Dispatch.'"
    )
    assert "wg-state-dispatched" in page.evaluate(icon, filed)
    assert _events(http, tokens["community"], filed) == ["report", "comment", "accept", "dispatch"]

    # Back to the queue; the case the officer signs for elsewhere changes state live.
    case.locator(".wg-back").click()
    _act(http, tokens["officer"], filed, "sign")
    page.wait_for_function(
        "(id) => wg.live.cases[id].state === 'signed'", arg=filed, timeout=10_000
    )
    assert "Signed for" in page.locator(f".wg-qitem[data-id='{filed}']").inner_text()
    # A rejected case leaves the queue and the map.
    _act(http, tokens["community"], first, "reject", {"reason": "not_a_case"})
    page.wait_for_function("(id) => !wg.live.markers[id]", arg=first, timeout=10_000)
    assert page.locator(f".wg-qitem[data-id='{first}']").count() == 0
    shot(page, "dispatch-live")
    assert page.evaluate("window.__sameDocument") is True
    # The one 412 is the only thing Chromium reports.
    assert all("412" in p for p in watch.problems), watch.problems
    ctx.close()


def test_the_tablet_works_offline_and_sends_each_thing_once(browser, live, tiny_db_url):
    server, tokens, http = live
    case = _dispatched(http, tokens, description="blocked drain")
    ctx, page, watch = open_page(
        browser,
        server,
        "/pages/tablet",
        tokens["officer"],
        (1024, 768),
        geolocation={"latitude": 26.0155, "longitude": 106.0045},
        permissions=["geolocation"],
        has_touch=True,
    )
    mine = page.locator(f".wg-mycase[data-id='{case}']")
    mine.wait_for()
    assert "blocked drain" in mine.inner_text()
    page.wait_for_selector("#wg-desk[data-offline-ready='1']", state="attached")  # kept
    box = page.locator(".wg-outbox h2")
    assert box.inner_text() == "Nothing waiting to send"
    page.wait_for_function("document.querySelector('.wg-where').textContent.includes('GPS')")
    # A case dispatched to the grid meanwhile shows up (the tablet follows the stream).
    later = _dispatched(http, tokens, description="fallen sign")
    page.locator(f".wg-mycase[data-id='{later}']").wait_for(timeout=10_000)

    ctx.set_offline(True)
    page.wait_for_selector(".wg-outbox.wg-offline")
    # A new report, a sign-for and a feedback with a photo, all without a network.
    page.select_option("#wg-category", "water")
    page.fill("#wg-description", "hydrant leaking, filed offline")
    page.click("button[type=submit]")
    page.wait_for_function(
        "document.querySelector('.wg-outbox h2').textContent === '1 waiting to send'"
    )
    # The outbox counts the report before the form's answer is rewritten: wait for both.
    page.wait_for_function(
        "document.querySelector('.wg-answer').textContent.includes('Saved on this tablet')"
    )
    assert page.locator("#wg-description").input_value() == ""  # ready for the next one
    mine.locator("button[data-action=sign]").click()
    page.wait_for_function(
        "document.querySelector('.wg-outbox h2').textContent === '2 waiting to send'"
    )
    assert mine.get_attribute("data-state") == "signed"
    assert "Waiting to send: Sign for" in mine.inner_text()
    mine.locator("button[data-action=feedback]").click()
    mine.locator("textarea[name=note]").fill("drain cleared")
    mine.locator("input[name=photos]").set_input_files(
        [{"name": "drain.png", "mimeType": "image/png", "buffer": png(7)}]
    )
    mine.locator(".wg-send").click()
    page.wait_for_function(
        "document.querySelector('.wg-outbox h2').textContent === '3 waiting to send'"
    )
    assert page.locator(".wg-oblist .wg-oblabel").all_text_contents() == [
        "New case: Water",
        f"Sign for: case #{case}",
        f"Feed back: case #{case}",
    ]

    # Opened again without a network: the page comes from the tablet, with what waits.
    page.reload()
    page.wait_for_selector(".leaflet-control-layers")
    page.wait_for_function(
        "document.querySelector('.wg-outbox h2').textContent === '3 waiting to send'"
    )
    assert "Waiting to send: Sign for, Feed back" in mine.inner_text()
    assert mine.get_attribute("data-state") == "handled"
    # Nothing has reached the service.
    assert _events(http, tokens["officer"], case) == ["report", "accept", "dispatch"]

    # Back online: the first answer to the sign-for is lost on the way back; the retry
    # carries the same Idempotency-Key and the service signs once.
    keys: list[str | None] = []

    def lossy(route):
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/actions/sign", lossy)
    ctx.set_offline(False)
    page.wait_for_function(
        "document.querySelector('.wg-outbox h2').textContent === 'Nothing waiting to send'",
        timeout=30_000,
    )
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    assert _events(http, tokens["officer"], case) == [
        "report",
        "accept",
        "dispatch",
        "sign",
        "feedback",
    ]
    filed = http.get(
        "/incidents", params={"grid": NW, "limit": 100}, headers=auth(tokens["officer"])
    )
    assert [i["description"] for i in filed.json()["items"]].count(
        "hydrant leaking, filed offline"
    ) == 1
    events = http.get(f"/cases/{case}/events", headers=auth(tokens["officer"])).json()
    (photo,) = events[-1]["attachments"]
    assert events[-1]["note"] == "drain cleared"
    got = http.get(photo, headers=auth(tokens["officer"]))
    assert got.status_code == 200 and got.content == png(7)
    assert _sql(tiny_db_url, "SELECT count(*) FROM case_attachment")[0][0] == 1
    mine.wait_for()
    page.wait_for_function(
        f"document.querySelector(\".wg-mycase[data-id='{case}']\").dataset.state === 'handled'"
    )
    assert "Waiting to send" not in mine.inner_text()
    shot(page, "tablet-offline")
    # Chromium's only complaints: requests tried without a network, and the lost answer.
    expected = ("net::ERR_INTERNET_DISCONNECTED", "net::ERR_CONNECTION_RESET")
    assert all(p.endswith(expected) for p in watch.problems), watch.problems
    ctx.close()


def test_live_markers_sit_on_their_points(browser, live):
    """Each live incident pin is centred on its point (live.css made the pins
    ``position: relative``, so they stacked in the marker pane's flow: the n-th pin drew
    13 n px below its point, 3 km at the city's zoom)."""
    server, tokens, http = live
    for category in ("road", "water", "gas", "sanitation"):
        _report(http, tokens["officer"], category=category)
    ctx, page, _ = open_page(browser, server, "/pages/dispatch", tokens["community"], (1400, 900))
    page.wait_for_function("() => Object.keys(wg.live.markers).length >= 4", timeout=10_000)
    # One point: past the clustering zoom the four pins are drawn one by one.
    page.evaluate(
        "([lon, lat]) => Object.values(window).find(v => v instanceof L.Map)"
        ".setView([lat, lon], 18, {animate: false})",
        list(IN_NW),
    )
    page.wait_for_function(
        "() => Object.values(wg.live.markers).filter(m => m._icon).length >= 4", timeout=10_000
    )
    off = page.evaluate(
        """() => Object.values(wg.live.markers).filter(m => m._icon).map(m => {
            const map = m._map, c = map.getContainer().getBoundingClientRect();
            const p = map.latLngToContainerPoint(m.getLatLng());
            const r = m._icon.getBoundingClientRect();
            return [r.left + r.width / 2 - (p.x + c.left), r.top + r.height / 2 - (p.y + c.top)];
        })"""
    )
    ctx.close()
    assert len(off) >= 4
    assert all(abs(dx) <= 1 and abs(dy) <= 1 for dx, dy in off), off

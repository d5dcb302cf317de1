"""The live dispatch page, the grid officer's tablet with its offline queue, and case photos.

HTTP first (photo upload and reading, the pages' extra routes), then headless Chromium: a
case filed by another client appears on an open dispatch page without reload, and a tablet
with its network switched off files a report and signs for a case, shows them waiting, and
sends each exactly once when the network returns.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import httpx
import pytest

from tests.conftest import auth, make_tokens

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


def _unused():  # keep imports used until the browser tests land
    return httpx

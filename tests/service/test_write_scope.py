"""Writes keep to the writer's area: every reference a write sets (issue 10 item 5).

The matrix is built from the kinds' ``Reference`` declarations: every reference column ×
every scoped writer allowed to write its kind (a community dispatcher, a grid officer) ×
(inside, outside, nonexistent) × (POST, PATCH, file import). A reference added to a kind
without a row in :data:`VALUES` fails :func:`test_the_matrix_covers_every_reference`.
"""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import text

from service.auth import OPERATOR
from service.db import make_engine
from service.specs.entity_kinds import ENTITIES, EntitySpec
from tests.conftest import _client, _drop_database, auth, make_tokens, tiny_database

OWN_COMMUNITY = "990101001001"
OWN_GRID = "990101001001001"
OTHER_COMMUNITY = "990101001002"  # same district
OTHER_GRID = "990101001002001"  # in the other community
IN_OWN_GRID = (106.005, 26.015)
#: The scoped writers of the matrix: token name → (role, area).
WRITERS = {
    "community": ("community_dispatcher", OWN_COMMUNITY),
    "grid": ("grid_officer", OWN_GRID),
}
CASES = ("inside", "outside", "nonexistent")
#: (kind, column) → case → value; "member:inside" etc. name members made in setup.
VALUES = {
    ("members", "home_community_code"): {
        "inside": OWN_COMMUNITY,
        "outside": OTHER_COMMUNITY,
        "nonexistent": "990101001009",
    },
    ("members", "serving_grid_code"): {
        "inside": OWN_GRID,
        "outside": OTHER_GRID,
        "nonexistent": "990101001001009",
    },
    ("care-households", "cadre_member_id"): {
        "inside": "member:inside",
        "outside": "member:outside",
        "nonexistent": 987654,
    },
}
#: The status a write answers per case: areas outside are forbidden; a member outside the
#: scope is answered as one that does not exist (its read answers 404).
EXPECTED = {
    "area": {"inside": None, "outside": 403, "nonexistent": 422},
    "entity": {"inside": None, "outside": 422, "nonexistent": 422},
}


def _matrix() -> list[tuple[str, str, str]]:
    """Return (writer, kind, column) for every reference a scoped writer may write."""
    out = []
    for spec in ENTITIES.values():
        for column in spec.references:
            for writer, (role, _) in WRITERS.items():
                if role in spec.write_roles:
                    out.append((writer, spec.name, column))
    return out


MATRIX = _matrix()


@pytest.fixture(scope="module")
def db_url():
    """One tiny database for the module: every refused write is checked to write nothing."""
    url = tiny_database("wangge_test_write_scope")
    yield url
    _drop_database(url)


@pytest.fixture(scope="module")
def client(db_url):
    with _client(db_url) as c:
        yield c


@pytest.fixture(scope="module")
def h(db_url):
    specs = {**WRITERS, "admin": ("admin", None), "district": ("district_dispatcher", "990101")}
    return {name: auth(tok) for name, tok in make_tokens(db_url, specs).items()}


def _member(client, admin, home, grid=None, name="周"):
    body = {"name": name, "kind": "grid_staff", "home_community_code": home}
    if grid:
        body |= {"team_role": "grid_manager", "serving_grid_code": grid}
    r = client.post("/members", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def members(client, h):
    """Members every writer of the matrix may see (inside), and one none of them may."""
    return {
        "member:inside": _member(client, h["admin"], OWN_COMMUNITY, OWN_GRID),
        "member:outside": _member(client, h["admin"], OTHER_COMMUNITY, OTHER_GRID),
    }


def _value(members, kind, column, case):
    value = VALUES[(kind, column)][case]
    return members.get(value, value) if isinstance(value, str) else value


def _body(kind: str, column: str, value) -> dict:
    """Return a create body of ``kind`` inside the own grid, ``column`` set to ``value``."""
    if kind == "members":
        body = {"name": "李", "kind": "grid_staff", "home_community_code": OWN_COMMUNITY}
        if column == "serving_grid_code":
            body["team_role"] = "grid_manager"
        return {**body, column: value}
    if kind == "care-households":
        lon, lat = IN_OWN_GRID
        return {"kind": "hardship", "head_name": "x", "lon": lon, "lat": lat, column: value}
    raise AssertionError(f"add a body for {kind} to this test")


def _count(url, spec: EntitySpec) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(f"SELECT count(*) FROM {spec.table}")).scalar()
    engine.dispose()
    return n


def _expected(kind, column, case):
    target = ENTITIES[kind].references[column].target
    return EXPECTED["area" if target == "area" else "entity"][case]


def _check_refusal(r, status, column):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] == column and body["detail"].startswith(f"{column}: ")
    if status == 403:
        assert "is outside your area" in body["detail"]


def test_the_matrix_covers_every_reference():
    declared = {(s.name, c) for s in ENTITIES.values() for c in s.references}
    assert declared == set(VALUES), "give every declared reference its inside/outside/none"
    assert {(kind, column) for _, kind, column in MATRIX} == declared
    # Both scoped writers appear: the grid officer through care households.
    assert {w for w, _, _ in MATRIX} == set(WRITERS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("writer", "kind", "column"), MATRIX)
def test_post(client, h, db_url, members, writer, kind, column, case):
    spec = ENTITIES[kind]
    before = _count(db_url, spec)
    value = _value(members, kind, column, case)
    r = client.post(f"/{kind}", json=_body(kind, column, value), headers=h[writer])
    status = _expected(kind, column, case)
    if status is None:
        assert r.status_code == 201, r.text
        assert r.json()[column] == value
        assert _count(db_url, spec) == before + 1
        return
    _check_refusal(r, status, column)
    assert _count(db_url, spec) == before


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("writer", "kind", "column"), MATRIX)
def test_patch(client, h, db_url, members, writer, kind, column, case):
    # The entity changed lies wholly inside the writer's area (made by the admin).
    name = "name" if kind == "members" else "head_name"
    made = client.post(f"/{kind}", json=_body(kind, name, "甲"), headers=h["admin"])
    assert made.status_code == 201, made.text
    before = made.json()
    value = _value(members, kind, column, case)
    patch = {column: value}
    if column == "serving_grid_code":
        patch["team_role"] = "grid_manager"
    r = client.patch(f"/{kind}/{before['id']}", json=patch, headers=h[writer])
    status = _expected(kind, column, case)
    after = client.get(f"/{kind}/{before['id']}", headers=h["admin"]).json()
    if status is None:
        assert r.status_code == 200, r.text
        assert after[column] == value
        return
    _check_refusal(r, status, column)
    assert after == before


@pytest.mark.parametrize(("writer", "kind", "column"), MATRIX)
def test_patch_replacing_a_value_outside_the_area_is_refused(
    client, h, members, writer, kind, column
):
    """Taking a member off another community's grid writes to that community too."""
    outside = _value(members, kind, column, "outside")
    inside = _value(members, kind, column, "inside")
    if kind == "members":
        body = {"name": "乙", "kind": "grid_staff", "home_community_code": OWN_COMMUNITY}
        if column == "serving_grid_code":
            body |= {"team_role": "grid_manager", "serving_grid_code": outside}
        else:  # seen through the grid it serves, registered in another community
            body |= {
                "team_role": "grid_manager",
                "serving_grid_code": OWN_GRID,
                "home_community_code": outside,
            }
    else:
        body = _body(kind, column, outside)
    made = client.post(f"/{kind}", json=body, headers=h["admin"])
    assert made.status_code == 201, made.text
    before = made.json()
    assert client.get(f"/{kind}/{before['id']}", headers=h[writer]).status_code == 200
    # Sending the value back unchanged is no change of the reference: allowed.
    same = client.patch(f"/{kind}/{before['id']}", json={column: outside}, headers=h[writer])
    assert same.status_code == 200, same.text
    r = client.patch(f"/{kind}/{before['id']}", json={column: inside}, headers=h[writer])
    _check_refusal(r, 403, column)
    assert "its current value" in r.json()["detail"]
    after = client.get(f"/{kind}/{before['id']}", headers=h["admin"]).json()
    # Emptying it is a change of it too; a column that is never empty is no null in a PATCH
    # either (422, as the schema says, whoever asks).
    r = client.patch(f"/{kind}/{before['id']}", json={column: None}, headers=h[writer])
    _check_refusal(r, 422 if column in ENTITIES[kind].required_columns else 403, column)
    after = client.get(f"/{kind}/{before['id']}", headers=h["admin"]).json()
    assert after[column] == outside


def _import_body(kind: str, column: str, value) -> tuple[str, bytes]:
    body = _body(kind, column, value)
    if kind == "members":
        row = {"team_role": "", "serving_grid_code": "", "phone": "", **body}
        return "m.csv", pd.DataFrame([row]).to_csv(index=False).encode()
    return f"{kind}.csv", pd.DataFrame([body]).to_csv(index=False).encode()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("writer", "kind", "column"), MATRIX)
def test_import(client, h, db_url, members, writer, kind, column, case):
    spec = ENTITIES[kind]
    before = _count(db_url, spec)
    value = _value(members, kind, column, case)
    name, data = _import_body(kind, column, value)
    r = client.post(f"/{kind}/import", files={"file": (name, data)}, headers=h[writer])
    role = WRITERS[writer][0]
    if role not in spec.import_roles:
        # Grid officers record households one by one; files are the dispatchers'.
        assert r.status_code == 403 and r.json()["field"] == "role", r.text
        assert _count(db_url, spec) == before
        return
    if _expected(kind, column, case) is None:
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        assert _count(db_url, spec) == before + 1
        return
    assert r.status_code == 422, r.text
    problems = r.json()["report"]["problems"]
    assert [(p["row"], p["field"]) for p in problems] == [(1, column)]
    if _expected(kind, column, case) == 403:
        assert "is outside your area" in problems[0]["reason"]
    assert _count(db_url, spec) == before


def test_a_district_dispatcher_may_put_a_member_on_any_grid_of_its_district(client, h):
    r = client.post(
        "/members",
        json={**_body("members", "serving_grid_code", OTHER_GRID), "name": "丙"},
        headers=h["district"],
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/members",
        json={**_body("members", "serving_grid_code", "990102001001001"), "name": "丁"},
        headers=h["district"],
    )
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == (
        "serving_grid_code: grid 990102001001001 is outside your area 990101"
    )


def test_a_refused_member_never_reaches_the_other_grids_tablet_or_staffing(client, h, members):
    # The reported leak: a community's dispatcher staffing another community's grid.
    r = client.post(
        "/members",
        json={**_body("members", "serving_grid_code", OTHER_GRID), "name": "泄"},
        headers=h["community"],
    )
    assert r.status_code == 403, r.text
    listing = client.get("/members", params={"grid": OTHER_GRID}, headers=h["admin"]).json()
    assert "泄" not in {m["name"] for m in listing["items"]}


def test_the_command_line_operator_checks_existence_only(db_url, members):
    from service.transfer import import_file

    engine = make_engine(db_url)
    row = {"name": "戊", "kind": "grid_staff", "team_role": "grid_manager", "phone": ""}
    ok = {**row, "home_community_code": OTHER_COMMUNITY, "serving_grid_code": "990102001001001"}
    bad = {**row, "home_community_code": OWN_COMMUNITY, "serving_grid_code": "990101001001009"}
    spec = ENTITIES["members"]
    try:
        with engine.connect() as conn, conn.begin() as tx:
            data = pd.DataFrame([ok, bad]).to_csv(index=False).encode()
            report = import_file(conn, spec, principal=OPERATOR, data=data, filename="m.csv")
            tx.rollback()
    finally:
        engine.dispose()
    assert [(p.row, p.field) for p in report.problems] == [(2, "serving_grid_code")]
    assert report.problems[0].reason == "990101001001009 is not a grid"

"""Schemathesis against the app on a real PostGIS (issue 10 item 9): no 5xx, no spec violation.

Every operation of ``/openapi.json`` is called with what schemathesis generates from its
schema (its examples, coverage and fuzzing phases, then stateful sequences that feed one
answer's ids into the next call), and every answer passes **all** of schemathesis' checks:
no server error; status, content type, headers and body as documented; schema-violating
requests refused; schema-valid requests accepted; 405 with ``Allow`` for undeclared methods;
missing auth refused; a deleted resource gone. Once as an admin, once as a district
dispatcher (scoped: 403/404 outside its district must be documented answers too).

Bounded for ``make test`` (about 2 minutes on two cores): derandomised from a fixed seed,
no deadline, ``WANGGE_FUZZ_EXAMPLES`` examples per operation (10), the slow operations
(:data:`SLOW`) with fewer; ``make fuzz`` sets more examples and runs the slow ones fully.
``schemathesis.toml`` (repository root, read by ``st run`` too) holds the seed and the
operations whose valid-looking requests may be refused for reasons a schema cannot state;
:data:`SEMANTIC` names, per operation, the fields such a refusal may name, and
:func:`semantic_refusals_name_a_known_field` checks it. :data:`KNOWN` lists what still fails
on routes others are building, as expected failures naming their owner.

The app runs in-process (ASGI) on its own demo database: the fuzzer writes (creates, changes
and deletes entities, tokens, generations), so it must not share the session's demo database.
Failed authentications are not rate limited here (the ``ignored_auth`` check sends wrong
tokens on purpose; the limit has its own tests).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig

from tests.conftest import _create_database, _drop_database, make_tokens

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "schemathesis.toml"
#: Examples per operation. ``make fuzz`` sets WANGGE_FUZZ_EXAMPLES (and so runs long).
EXAMPLES = int(os.environ.get("WANGGE_FUZZ_EXAMPLES", "10"))
LONG = "WANGGE_FUZZ_EXAMPLES" in os.environ
DISTRICT = "520102"  # 南明区

#: Operations that take a second or more a call on the demo city, and why. ``make test``
#: calls them with EXAMPLES // 5 examples (at least 2) and without the coverage phase (its
#: boundary values would call each dozens of times, minutes in all); ``make fuzz`` runs them
#: as every other operation. They are bounded, never left out.
SLOW = {
    "GET /analysis/report": "every analysis of the city in one answer",
    "GET /analysis/report.gpkg": "the report, written as a GeoPackage",
    "GET /analysis/report.zip": "the report, written as Shapefiles",
    "GET /analysis/reach": "walks every community's facilities",
    "GET /analysis/siting": "solves a covering problem over a lattice",
    "POST /analysis/siting": "solves a covering problem over a lattice",
    "GET /pages/planning": "renders the city's planning map",
    "POST /plans/proposals": "cuts a county into up to 200 grids (spanning trees, ReCom)",
    "GET /plans/{plan_id}/coverage": "runs four analyses twice, on today's grids and the draft's",
    "GET /pages/dispatch": "renders the city's dispatch map",
    **{
        f"GET /{kind}/export": "writes every visible row to a file"
        for kind in ("units", "facilities", "members", "care-households", "incidents")
    },
}

#: operation → the fields (regular expressions, matched whole) a refusal of a schema-valid
#: request may name, and why no schema says it. The operations are those listed in
#: schemathesis.toml with 422 (Open311: 400) among positive_data_acceptance's statuses.
_POINT = ["lon,lat", "lon", "lat"]  # outside China; lon without lat
# no such record in scope; a member's team role and served grid go together
_REFS = ["home_community_code", "serving_grid_code", "cadre_member_id", "team_role"]
_FILE = ["file", "crs", "lon_column", "lat_column", "layer"]  # the upload's contents
SEMANTIC: dict[str, list[str]] = {
    "GET /analysis/care": ["max_contacts"],  # ≥ min_contacts
    "GET /analysis/reach": ["network"],  # a network must have been imported
    # k or lscp, not both; a lattice of at most 2,000 sites over the area; candidates inside it
    "GET /analysis/siting": ["lscp", "spacing_m"],
    "POST /analysis/siting": ["lscp", "spacing_m", r"candidates\[\d+\]"],
    "GET /analysis/workload": ["since"],  # before until
    "GET /areas": ["srid", "limit"],  # an SRID PostGIS knows; the page size setting
    "GET /areas/{code}": ["srid"],
    "GET /areas/{code}/children": ["srid"],
    "GET /lookup": _POINT,  # GCJ-02 and BD-09 exist inside China only
    "POST /lookup/batch": [r"points\.\d+"],
    "GET /pages/tablet": ["grid"],  # required unless the token is a grid officer's
    # x and y below 2^z; each layer named once
    "GET /tiles/{layers}/{z}/{x}/{y}.mvt": ["x", "y", "layers"],
    "GET /tiles/basemap/{z}/{x}/{y}.png": ["x", "y"],  # below 2^z
    "POST /tokens": ["area_code", "source"],  # the role's level of area; an intake's source
    # Free-form GeoJSON, checked feature by feature (code lengths per level, parents, valid
    # polygons) and refused whole on a NUL anywhere, keys and foreign members included.
    "POST /generations/{generation_id}/areas": [r".*"],
    "POST /generations/{generation_id}/activate": ["generation"],  # it has areas, is pending
    "POST /network/import": ["file", "crs", "layer"],
    "GET /cases": ["limit"],  # the page size setting (WANGGE_API_MAX_PAGE_SIZE)
    **{f"GET /{kind}": ["bbox", "limit"] for kind in ("units", "facilities", "members")},
    **{f"GET /{kind}": ["bbox", "limit"] for kind in ("care-households", "incidents")},
    **{
        f"{method} /{kind}{suffix}": [*_POINT, *_REFS, "source"]
        for kind in ("units", "facilities", "members", "care-households", "incidents")
        for method, suffix in (("POST", ""), ("PATCH", "/{entity_id}"))
    },
    **{
        f"POST /{kind}/import": _FILE
        for kind in ("units", "facilities", "members", "care-households", "incidents")
    },
    # the rows must fit the format: a Shapefile field holds 254 bytes of text
    **{
        f"GET /{kind}/export": ["format"]
        for kind in ("units", "facilities", "care-households", "incidents")
    },
    # since before until (from before to)
    "GET /evaluation": ["since", "from"],
    "GET /analysis/evaluation": ["since"],
    # which fields an action needs: the case lifecycle's table (service.dispatch)
    "POST /cases/{case_id}/actions/{action}": [
        "note",
        "reason",
        "assignee",
        "duplicate_of",
        "area",
        "due_at",
        "satisfaction",
        "priority",
        "attachments",
    ],
    "POST /cases/{case_id}/attachments": ["file", "body"],  # the upload's contents
    # Open311 names the field before a colon in its error description.
    # ids up to 2^63-1 (19 digits say more)
    "GET /open311/v2/requests.{fmt}": ["service_request_id"],
    "GET /open311/v2/requests/{service_request_id}.{fmt}": ["service_request_id"],
    "GET /open311/v2/servicerequestupdates.{fmt}": ["service_request_id"],
    "POST /open311/v2/requests.{fmt}": ["service_code", "lat, long", "lat", "long", "media_url"],
    # Boundary plans: the area's level; free-form GeoJSON edits, checked against the draft's
    # grids (each refusal names its part: keys, line, region, features[i].geometry, ...);
    # a draft that no longer tiles its area.
    "POST /plans": ["area_code"],
    "POST /plans/{plan_id}/edits": [r".*"],
    "POST /plans/{plan_id}/edits/file": [r".*"],
    "POST /plans/{plan_id}/publish": ["plan_id"],
    # A proposal: the area's level, k against its communities and blocks, a balance with
    # something to balance; what-if coverage: the base generation still current, no
    # generation pending.
    "POST /plans/proposals": ["area_code", "k", "balance"],
    "GET /plans/{plan_id}/coverage": ["base_generation", "generation"],
}


#: Failures found on routes still being built by others, each naming its owner and what is
#: wrong: expected to fail (xfail, not strict), so that `make test` stays green while they
#: are fixed and each entry is dropped once it passes. Empty when all is well.
KNOWN: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _known_failures(request):
    label = request.node.name.partition("[")[2].removesuffix("]")
    if label in KNOWN:
        request.applymarker(pytest.mark.xfail(reason=KNOWN[label], strict=False))


def _refused_field(response) -> str | None:
    """Return the field a refusal names: problem+json's ``field``; Open311's description
    starts with it (``"lat, long: ..."``), in JSON or XML."""
    xml = re.search(rb"<description>([^<:]*):", response.content)
    if xml:
        return xml.group(1).decode()
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):  # Open311
        return str(body[0].get("description", "")).split(":", 1)[0]
    return body.get("field") if isinstance(body, dict) else None


@schemathesis.check
def semantic_refusals_name_a_known_field(ctx, response, case):
    """A schema-valid request refused with 422 (Open311: 400) names a field of SEMANTIC."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    label = case.operation.label
    allowed = SEMANTIC.get(label, [])
    field = _refused_field(response)
    sent = {name.lower() for name in (case.headers or {})}
    if field == "Idempotency-Key" and "idempotency-key" in sent:
        # the key was used before for another request: no schema can say which keys were
        return None
    if not any(re.fullmatch(pattern, field or "") for pattern in allowed):
        raise AssertionError(
            f"{label} refused a schema-valid request naming {field!r}, not one of {allowed}: "
            "make the schema say it, or list the field in SEMANTIC with the reason"
        )
    return None


def test_semantic_table_matches_the_config():
    config = tomllib.loads(CONFIG.read_text())
    listed = {
        name
        for operation in config["operations"]
        if "positive_data_acceptance" in operation.get("checks", {})
        for name in operation["include-name"]
    }
    assert listed == set(SEMANTIC)


@pytest.fixture(scope="module")
def fuzz_db_url():
    """Return the URL of a demo database of the fuzzer's own (it writes)."""
    from fixtures.guiyang import build_guiyang_demo
    from service.db import make_engine, migrate

    url = _create_database("wangge_test_fuzz")
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        build_guiyang_demo(conn, seed=2014)
    engine.dispose()
    yield url
    _drop_database(url)


def _fuzz_app():
    """Return the app under test and its settings; its database is named by ``fuzz_app``.

    Made at import, so that the operations collected from its document carry it (their
    calls, and the checks' own calls, go to it in-process); nothing connects until the
    first call starts its lifespan.
    """
    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    unused = DatabaseSettings(DATABASE_URL="postgresql://unused.invalid/wangge")
    api = APISettings(token_cache_seconds=30, auth_failure_limit=1_000_000)
    settings = Settings(db=unused, api=api)
    return create_app(settings), settings


APP, SETTINGS = _fuzz_app()


@pytest.fixture(scope="module")
def fuzz_app(fuzz_db_url):
    from service.settings import DatabaseSettings

    SETTINGS.db = DatabaseSettings(DATABASE_URL=fuzz_db_url)
    yield APP
    # The lifespan (pools, the tile listener) was started by schemathesis' ASGI client on
    # the first call: end it before the database is dropped.
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def tokens(fuzz_db_url) -> dict[str, str]:
    return make_tokens(
        fuzz_db_url,
        {"admin": ("admin", None), "district": ("district_dispatcher", DISTRICT)},
    )


def _config(*, phases: tuple[str, ...], examples: int) -> SchemathesisConfig:
    """Return schemathesis.toml's configuration, run with ``phases`` and ``examples``."""
    data = tomllib.loads(CONFIG.read_text())
    data.setdefault("generation", {})["max-examples"] = examples
    data["phases"] = {
        phase: {"enabled": phase in phases} for phase in ("examples", "coverage", "fuzzing")
    }
    if not LONG:
        data["operations"] = [
            *data.get("operations", []),
            {
                "include-name": sorted(SLOW),
                "generation": {"max-examples": max(2, examples // 5)},
                "phases": {"coverage": {"enabled": False}},
            },
        ]
    return SchemathesisConfig.from_dict(data, base_dir=str(ROOT))


def _schema(config: SchemathesisConfig):
    """Return the app's document as a schemathesis schema whose calls go to APP."""
    loaded = schemathesis.openapi.from_dict(APP.openapi(), config=config)
    loaded.app = APP  # before parametrize: the collected operations carry it
    return loaded


#: The admin runs every phase: examples, coverage (boundaries, missing and wrong values of
#: every parameter) and fuzzing; then stateful sequences (test_sequences_as_an_admin).
admin_schema = _schema(_config(phases=("examples", "coverage", "fuzzing"), examples=EXAMPLES))
#: The district dispatcher: the answers of a scoped caller (403/404 outside its district) are
#: fuzzed too; the coverage phase's boundaries do not depend on the caller and ran once.
district_schema = _schema(_config(phases=("examples", "fuzzing"), examples=max(3, EXAMPLES // 2)))


def _headers(token: str) -> dict[str, str]:
    # Both token headers, so that no generated value of either is left in the request.
    return {"Authorization": f"Bearer {token}", "X-API-Key": token}


def _call_and_validate(case, token: str) -> None:
    case.call_and_validate(
        headers=_headers(token), additional_checks=[semantic_refusals_name_a_known_field]
    )


FUZZ = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@admin_schema.parametrize()
@FUZZ
def test_as_an_admin(case, fuzz_app, tokens):
    _call_and_validate(case, tokens["admin"])


@district_schema.parametrize()
@FUZZ
def test_as_a_district_dispatcher(case, fuzz_app, tokens):
    _call_and_validate(case, tokens["district"])


def test_sequences_as_an_admin(fuzz_app, tokens):
    """Stateful: ids from one answer (a created unit, token, generation) feed the next call,
    e.g. POST then GET, PATCH and DELETE of what was created, then GET of what was deleted."""
    from hypothesis.stateful import run_state_machine_as_test

    headers = _headers(tokens["admin"])

    class Sequences(admin_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            checks = [*(additional_checks or []), semantic_refusals_name_a_known_field]
            super().validate_response(response, case, additional_checks=checks, **kwargs)

    run_state_machine_as_test(
        Sequences,
        settings=settings(
            FUZZ,
            max_examples=max(5, EXAMPLES),
            stateful_step_count=10,
            phases=[Phase.explicit, Phase.generate],
        ),
    )


# -- what `make fuzz` found, kept as plain regression tests ----------------------------------
def test_an_export_that_cannot_hold_the_rows_is_422_naming_the_format(tiny_client, tiny_db_url):
    admin = _headers(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])
    unit = {"name": "长地址", "kind": "shop", "lon": 106.02, "lat": 26.01, "address": "路" * 300}
    assert tiny_client.post("/units", json=unit, headers=admin).status_code == 201
    r = tiny_client.get("/units/export", params={"format": "shp"}, headers=admin)
    assert r.status_code == 422 and r.json()["field"] == "format", r.text
    assert "gpkg" in r.json()["detail"]
    assert tiny_client.get("/units/export", params={"format": "gpkg"}, headers=admin).is_success


def test_batch_ids_beyond_64_bits_and_unknown_crs_names_are_refused(tiny_client, tiny_db_url):
    admin = _headers(make_tokens(tiny_db_url, {"admin": ("admin", None)})["admin"])
    for too_big in (2**70, 2**63 + 191, 2**53):
        body = {"points": [{"lon": 106.02, "lat": 26.01, "id": too_big}]}
        r = tiny_client.post("/lookup/batch", json=body, headers=admin)
        # the field as the client wrote it, not pydantic's union members
        assert r.status_code == 422 and r.json()["field"] == "points.0.id", r.text
    largest = {"lon": 106.02, "lat": 26.01, "id": 2**53 - 1}
    r = tiny_client.post("/lookup/batch", json={"points": [largest]}, headers=admin)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == 2**53 - 1, r.text
    # A PATCH without a point still names a coordinate system the server can read.
    unit = {"name": "店", "kind": "shop", "lon": 106.02, "lat": 26.01}
    made = tiny_client.post("/units", json=unit, headers=admin).json()
    r = tiny_client.patch(f"/units/{made['id']}", json={"crs": "nowhere"}, headers=admin)
    assert r.status_code == 422 and r.json()["field"] == "crs", r.text

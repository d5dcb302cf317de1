"""Open311 GeoReport v2: services, POST requests, GET requests (filters), GET request by id.

Lets existing citizen-reporting clients and the 12319 hotline system file and read cases.
Formats by suffix: ``.json`` or ``.xml``. Authentication: ``api_key`` (form field or query
parameter, as the specification has it) or the usual headers. Discovery and reads need no key
(:mod:`service.open311_public`: public fields only; ``WANGGE_OPEN311_PUBLIC_READS=false``
turns that off); filing always does. Errors follow Open311's own
format (a list of ``{code, description}``, or ``<errors>`` in XML) because that is what its
clients parse; the description names the field at fault. Coordinates are WGS84 per the
specification; the non-standard ``crs`` parameter accepts GCJ-02 and BD-09 too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service.deps import ConnDep, get_principal, principal_from_token
from service.edge.limits import client_address
from service.errors import WanggeError
from service.idempotency import request_fingerprint, run_idempotent
from service.inputs import BIGINT_MAX, NUL_REASON, find_nul, moment_problem, parse_row_id
from service.open311_public import KEY_OPTIONAL, public_reader, shown
from service.repositories import entities as repo
from service.repositories.open311 import find_open311_requests, find_open311_updates
from service.responses import JSON
from service.schemas.entities import IncidentCreate
from service.schemas.jsonbody import FORM_VALUES
from service.specs.entity_kinds import INCIDENTS

router = APIRouter(prefix="/open311/v2", tags=["open311"])

#: service_code → (name, description, group); the categories residents complain about.
SERVICES = {
    "water": ("供水 Water", "Water not running, burst or leaking pipes", "utilities"),
    "gas": ("燃气 Gas", "Gas not flowing, smell of gas", "utilities"),
    "street_light": ("路灯 Street light", "Street light out or flickering", "streets"),
    "road": ("道路 Road", "Uneven road, potholes, broken pavement", "streets"),
    "sanitation": ("环境卫生 Sanitation", "Rubbish, dirty streets, blocked drains", "environment"),
    "public_order": ("治安 Public order", "Disorder, noise, unsafe places", "safety"),
    "other": ("其他 Other", "Anything else for the grid team", "other"),
}
MAX_RESULTS = 1000


class Open311Error(Exception):
    def __init__(self, status: int, description: str):
        self.status = status
        self.description = description


def _fmt(fmt: str) -> str:
    if fmt not in ("json", "xml"):
        raise Open311Error(404, f"unknown format .{fmt}; use .json or .xml")
    return fmt


# Characters XML 1.0 cannot carry at all, even escaped. PostgreSQL text holds them (a
# description with a vertical tab from a spreadsheet), and ElementTree writes them as they
# are, which no XML parser reads: they are shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _render(data: Any, fmt: str, root: str, item: str, status: int = 200) -> Response:
    if fmt == "json":
        return JSON(data, status_code=status)
    top = ET.Element(root)
    for entry in data:
        el = ET.SubElement(top, item)
        for key, value in entry.items():
            child = ET.SubElement(el, key)
            if isinstance(value, bool):
                child.text = "true" if value else "false"
            elif isinstance(value, list):
                child.text = _xml_text(",".join(str(v) for v in value))
            elif value is not None:
                child.text = _xml_text(value)
    # <service_requests></service_requests>, as the specification writes an empty element.
    body = ET.tostring(top, encoding="utf-8", xml_declaration=True, short_empty_elements=False)
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8")


def _error(exc: Open311Error, fmt: str) -> Response:
    return _render(
        [{"code": exc.status, "description": exc.description}],
        fmt if fmt in ("json", "xml") else "json",
        "errors",
        "error",
        exc.status,
    )


def error_response(status: int, description: str, path: str) -> Response:
    """Return an Open311 error for ``path``, in XML if the path ends in ``.xml``, else JSON.

    For refusals made before routing (``service.inputs.RejectNul``).
    """
    return _error(Open311Error(status, description), "xml" if path.endswith(".xml") else "json")


# Open311 handlers authenticate in their body rather than through PrincipalDep: the key may
# come in the form (read by the handler) and an auth failure must leave in Open311's error
# format for the path's suffix, which an exception raised in a dependency cannot do.
async def _principal(request: Request, form: dict[str, str] | None = None, *, public=False):
    """Return the caller; with ``public``, the public reader when it sends no key at all."""
    reader = public_reader(request, form) if public else None
    if reader is not None:
        return reader
    api_key = (form or {}).get("api_key") or request.query_params.get("api_key")
    try:
        if api_key:
            client = client_address(request.scope)
            return await principal_from_token(request.app, api_key, client=client)
        return await get_principal(request)
    except WanggeError as exc:
        raise Open311Error(exc.status, f"api_key: {exc.detail}") from None


def _service(code: str) -> dict[str, Any]:
    name, description, group = SERVICES[code]
    return {
        "service_code": code,
        "service_name": name,
        "description": description,
        "metadata": False,
        "type": "realtime",
        "keywords": [code.replace("_", " ")],
        "group": group,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _as_request(item: dict[str, Any]) -> dict[str, Any]:
    case = item["lifecycle"]
    return {
        "service_request_id": str(item["id"]),
        "status": "closed" if item["status"] == "closed" else "open",
        "status_notes": case["note"] or STATE_NOTES.get(case["state"]),
        "service_name": SERVICES[item["category"]][0],
        "service_code": item["category"],
        "description": item["description"],
        "agency_responsible": case["agency"] or "city dispatch centre",
        "service_notice": None,
        "requested_datetime": _iso(item["reported_at"]),
        "updated_datetime": _iso(case["updated_at"] or item["updated_at"]),
        "expected_datetime": _iso(case["due_at"]) if item["status"] != "closed" else None,
        "address": item["address"],
        "address_id": None,
        "zipcode": None,
        "lat": item["lat"],
        "long": item["lon"],
        "media_url": item["attachments"][0] if item["attachments"] else None,
    }


#: What a request's state tells a resident when no public note says more.
STATE_NOTES = {
    "reported": "received, awaiting dispatch",
    "registered": "accepted, awaiting dispatch",
    "dispatched": "dispatched to the team responsible",
    "signed": "the team responsible is working on it",
    "handled": "work reported done, awaiting verification",
    "closed": "verified and closed",
    "cancelled": "not accepted",
}

#: What each public case event tells a resident (Open311 service request updates).
UPDATE_TEXT = {
    "report": "received",
    "import": "recorded",
    "accept": "accepted",
    "reject": "not accepted",
    "dispatch": "dispatched to the team responsible",
    "sign": "the team responsible has taken it on",
    "feedback": "work reported done, awaiting verification",
    "verify": "verified and closed",
    "send_back": "sent back for further work",
    "callback": "resident callback recorded",
    "escalate": "passed to the level above",
    "auto_escalate": "passed to the level above",
    "take_over": "taken over by the level above",
    "send_down": "passed to the local dispatch centre",
}


def _as_update(event: dict[str, Any]) -> dict[str, Any]:
    text = UPDATE_TEXT[event["action"]]
    if event["action"] == "callback" and (event["data"] or {}).get("reopened"):
        text = "reopened after the resident's callback"
    if event["note"]:
        text = f"{text}: {event['note']}"
    return {
        "update_id": str(event["id"]),
        "service_request_id": str(event["incident_id"]),
        "status": "closed" if event["to_state"] in ("closed", "cancelled") else "open",
        "updated_datetime": _iso(event["at"]),
        "description": text,
        "media_url": None,
    }


@router.get(
    "/services.{fmt}",
    summary="Open311: the service list (incident categories)",
    openapi_extra=KEY_OPTIONAL,
)
async def services(request: Request, fmt: str) -> Response:
    try:
        fmt = _fmt(fmt)
        await _principal(request, public=True)
        return _render([_service(c) for c in SERVICES], fmt, "services", "service")
    except Open311Error as exc:
        return _error(exc, fmt)


@router.get(
    "/services/{service_code}.{fmt}",
    summary="Open311: one service definition",
    openapi_extra=KEY_OPTIONAL,
)
async def service_definition(request: Request, service_code: str, fmt: str) -> Response:
    try:
        fmt = _fmt(fmt)
        await _principal(request, public=True)
        if service_code not in SERVICES:
            raise Open311Error(404, f"service_code: unknown service {service_code!r}")
        if fmt == "json":
            return JSON({"service_code": service_code, "attributes": []})
        top = ET.Element("service_definition")
        ET.SubElement(top, "service_code").text = service_code
        ET.SubElement(top, "attributes")
        return Response(
            ET.tostring(top, encoding="utf-8", xml_declaration=True, short_empty_elements=False),
            media_type="text/xml; charset=utf-8",
        )
    except Open311Error as exc:
        return _error(exc, fmt)


def _incident_from_form(form: dict[str, str], principal) -> IncidentCreate:
    """Return the incident a GeoReport v2 form describes (400 naming the Open311 field)."""
    if not form.get("service_code"):
        raise Open311Error(400, "service_code: required")
    if form["service_code"] not in SERVICES:
        raise Open311Error(404, f"service_code: unknown service {form['service_code']!r}")
    if not form.get("lat") or not form.get("long"):
        raise Open311Error(
            400,
            "lat, long: a location is required (address-only requests cannot be placed in a grid)",
        )
    payload = {
        "category": form["service_code"],
        "description": form.get("description", ""),
        "address": form.get("address_string", ""),
        "lon": form["long"],
        "lat": form["lat"],
        "crs": form.get("crs", "EPSG:4326"),
        "attachments": [form["media_url"]] if form.get("media_url") else [],
        "source": None if principal.role == "intake" else "resident",
    }
    try:
        # A form's values are text: Pydantic reads them as numbers, no JSON types to check.
        return IncidentCreate.model_validate(payload, context=FORM_VALUES)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = {
            "lon": "long",
            "category": "service_code",
            "attachments": "media_url",
            "address": "address_string",
        }.get(str(first["loc"][0]), str(first["loc"][0]))
        raise Open311Error(400, f"{field}: {first['msg']}") from None


async def _create_incident(
    request: Request, principal, form: dict[str, str], data: IncidentCreate
) -> tuple[int, Any]:
    """Return the status and body of filing ``data`` once per ``Idempotency-Key``."""
    defaults = {"source": principal.source} if principal.role == "intake" else {}
    fingerprint = request_fingerprint("POST", request.url.path, sorted(form.items()))
    key = request.headers.get("idempotency-key")
    # The transaction is opened here, not taken as WriteConnDep: failures leave as Open311
    # error bodies rather than exceptions, and must still roll the transaction back.
    async with request.app.state.engine.begin() as conn:

        async def work():
            item = await repo.create_entity(
                conn, INCIDENTS, principal=principal, data=data, forced=defaults
            )
            return 201, [
                {
                    "service_request_id": str(item["id"]),
                    "service_notice": None,
                    "account_id": None,
                }
            ]

        try:
            status, body, _ = await run_idempotent(
                conn, principal=principal, key=key, fingerprint=fingerprint, work=work
            )
        except WanggeError as exc:
            field = {"lon": "long", "lon,lat": "lat, long"}.get(exc.field, exc.field)
            raise Open311Error(
                exc.status if exc.status != 422 else 400, f"{field}: {exc.detail}"
            ) from None
    return status, body


@router.post("/requests.{fmt}", summary="Open311: file a service request (an incident)")
async def post_request(request: Request, fmt: str) -> Response:
    """Form-encoded as in GeoReport v2: ``service_code``, ``lat``, ``long``, ``description``,
    ``address_string``, ``media_url``, ``api_key``. ``Idempotency-Key`` is honoured."""
    try:
        fmt = _fmt(fmt)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        field = find_nul(form)
        if field is not None:
            raise Open311Error(400, f"{field}: {NUL_REASON}")
        principal = await _principal(request, form)
        data = _incident_from_form(form, principal)
        status, body = await _create_incident(request, principal, form, data)
        return _render(body, fmt, "service_requests", "request", status)
    except Open311Error as exc:
        return _error(exc, fmt)


def _parse_time(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{field}: not a W3C/ISO 8601 date-time") from None
    wrong = moment_problem(parsed)
    if wrong is not None:
        raise Open311Error(400, f"{field}: {wrong}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_QUERY_PARAMETERS = {
    "service_request_id",
    "service_code",
    "start_date",
    "end_date",
    "status",
    "api_key",
    "jurisdiction_id",
}


def _request_ids(q, known: set[str]) -> list[int] | None:
    """Return the ids of ``service_request_id`` (comma-separated; None: not given), once the
    query string names only ``known`` parameters."""
    unknown = sorted(set(q) - known)
    if unknown:
        raise Open311Error(400, f"{unknown[0]}: unknown parameter")
    if not q.get("service_request_id"):
        return None
    ids = [parse_row_id(x.strip()) for x in q["service_request_id"].split(",") if x.strip()]
    if None in ids:
        raise Open311Error(400, f"service_request_id: comma-separated numbers, each ≤ {BIGINT_MAX}")
    return ids


def _request_filters(q) -> dict[str, Any]:
    """Return the ``find_open311_requests`` filters of a GET requests query string."""
    ids = _request_ids(q, _QUERY_PARAMETERS)
    # Every parameter is checked, even those that ids make moot: a wrong one is an error.
    end = _parse_time(q.get("end_date"), "end_date") or datetime.now(UTC)
    start = _parse_time(q.get("start_date"), "start_date") or end - timedelta(days=90)
    filters: dict[str, Any] = {"reported_from": start, "reported_to": end}
    if q.get("service_code"):
        codes = [c for c in q["service_code"].split(",") if c]
        bad = [c for c in codes if c not in SERVICES]
        if bad:
            raise Open311Error(400, f"service_code: unknown service {bad[0]!r}")
        filters["categories"] = codes
    if q.get("status"):
        states = q["status"].split(",")
        if not set(states) <= {"open", "closed"}:
            raise Open311Error(400, "status: open or closed")
        wanted = (
            {"closed"}
            if states == ["closed"]
            else ({"new", "open"} if "closed" not in states else {"new", "open", "closed"})
        )
        filters["statuses"] = sorted(wanted)
    return filters if ids is None else {"ids": ids}


@router.get(
    "/requests.{fmt}",
    summary="Open311: service requests, with its filters",
    openapi_extra=KEY_OPTIONAL,
)
async def get_requests(request: Request, fmt: str, conn: ConnDep) -> Response:
    """Filters: ``service_request_id`` (comma-separated; overrides the rest), ``service_code``,
    ``start_date``, ``end_date`` (default: the last 90 days), ``status`` (open, closed)."""
    try:
        fmt = _fmt(fmt)
        principal = await _principal(request, public=True)
        filters = _request_filters(request.query_params)
        items = await find_open311_requests(
            conn=conn, principal=principal, limit=MAX_RESULTS, **filters
        )
        found = [shown(principal, _as_request(i)) for i in items]
        return _render(found, fmt, "service_requests", "request")
    except Open311Error as exc:
        return _error(exc, fmt)


@router.get(
    "/requests/{service_request_id}.{fmt}",
    summary="Open311: one service request",
    openapi_extra=KEY_OPTIONAL,
)
async def get_request(
    request: Request, service_request_id: str, fmt: str, conn: ConnDep
) -> Response:
    try:
        fmt = _fmt(fmt)
        principal = await _principal(request, public=True)
        request_number = parse_row_id(service_request_id)
        if request_number is None:
            raise Open311Error(400, f"service_request_id: a number ≤ {BIGINT_MAX}")
        items = await find_open311_requests(
            conn=conn, principal=principal, ids=[request_number], limit=MAX_RESULTS
        )
        if not items:
            raise Open311Error(404, f"service_request_id: no request {service_request_id}")
        found = [shown(principal, _as_request(i)) for i in items]
        return _render(found, fmt, "service_requests", "request")
    except Open311Error as exc:
        return _error(exc, fmt)


_UPDATE_PARAMETERS = {"service_request_id", "start_date", "end_date", "api_key", "jurisdiction_id"}


@router.get(
    "/servicerequestupdates.{fmt}",
    summary="Open311: service request updates (what FixMyStreet-style clients poll)",
    openapi_extra=KEY_OPTIONAL,
)
async def get_updates(request: Request, fmt: str, conn: ConnDep) -> Response:
    """The public events of requests, oldest first: ``start_date``, ``end_date`` (default:
    the last 24 hours up to now), ``service_request_id`` (comma-separated). Each update:
    ``update_id``, ``service_request_id``, ``status``, ``updated_datetime``, ``description``,
    ``media_url``; internal comments, supervision and deadline events are never listed."""
    try:
        fmt = _fmt(fmt)
        principal = await _principal(request, public=True)
        q = request.query_params
        ids = _request_ids(q, _UPDATE_PARAMETERS)
        end = _parse_time(q.get("end_date"), "end_date")
        start = _parse_time(q.get("start_date"), "start_date")
        if ids is None and start is None:
            start = (end or datetime.now(UTC)) - timedelta(days=1)
        events = await find_open311_updates(
            conn=conn,
            principal=principal,
            ids=ids,
            updated_from=start,
            updated_to=end,
            limit=MAX_RESULTS,
        )
        return _render(
            [_as_update(e) for e in events], fmt, "service_request_updates", "request_update"
        )
    except Open311Error as exc:
        return _error(exc, fmt)

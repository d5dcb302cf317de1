"""Open311 reads without a key: who such a reader is, and what it may see.

GeoReport v2 clients (the ``georeport`` package, city apps, 311 aggregators) send no key to
discover services and to read requests: the specification keeps keys for filing. So, unless
``WANGGE_OPEN311_PUBLIC_READS=false``, a read that sends no key at all acts as
:data:`PUBLIC_READER` and is answered with :data:`PUBLIC_FIELDS` only. A read that sends a
key (even a bad one: it is refused, not downgraded) sees what its role and area allow.

What a public read may show, and why it is safe: requests are incidents only (never a
sensitive kind: no care household, no link to one); the fields are the specification's, as
filed (category, description and address as submitted, the location as stored, status,
dates, the team responsible); wangge keeps no reporter identity on an incident (a filing's
``email``, ``first_name``, ``last_name``, ``phone``, ``device_id`` and ``account_id`` are not
stored), and columns an import kept aside (``properties``) or the channel it came by
(``source``) are never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from service.auth import Principal

__all__ = ["PUBLIC_READER", "PUBLIC_FIELDS", "KEY_OPTIONAL", "public_reader", "shown"]

#: Whom a keyless read acts as: every incident, whatever its area (the city's public record).
PUBLIC_READER = Principal(
    token_id="public", name="public", role="public", area_code=None, scope_path=None
)

#: The fields of a GeoReport v2 service request a keyless read is answered with.
PUBLIC_FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)

#: The OpenAPI security of a keyless read: no key, or a token (the default settings' contract;
#: with keyless reads off, the no-key call answers 401, a declared status).
KEY_OPTIONAL = {"security": [{}, {"bearer": []}, {"apiKey": []}]}

#: Every way a request can carry a key (``service.deps.get_principal`` reads the same).
_KEY_HEADERS = ("authorization", "x-api-key")
_KEY_PARAMETERS = ("api_key", "access_token")


def public_reader(request: Request, form: Mapping[str, str] | None = None) -> Principal | None:
    """Return :data:`PUBLIC_READER` if the request sends no key and keyless reads are on."""
    if not request.app.state.settings.open311.public_reads:
        return None
    if any(h in request.headers for h in _KEY_HEADERS):
        return None
    if any(p in request.query_params or p in (form or {}) for p in _KEY_PARAMETERS):
        return None
    return PUBLIC_READER


def shown(principal: Principal, request: dict[str, Any]) -> dict[str, Any]:
    """Return the service request as ``principal`` may see it (public: its public fields)."""
    if principal is PUBLIC_READER:
        return {k: request.get(k) for k in PUBLIC_FIELDS}
    return request

"""Parameters of the planning analyses, the reach and siting analyses and the report.

Every model turns into the keyword arguments of its ``run_*`` function with
``arguments()``; the query models are validated by hand from the query string
(``service.querymodels.parse_query``) and documented with ``query_parameters_doc``.
"""

# No ``from __future__ import annotations``: Pydantic reads the models' annotations.

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geo.reach import DEFAULT_DETOUR, DEFAULT_FRONTAGE_M, DEFAULT_MINUTES, WALK_SPEED_M_PER_MIN
from geo.siting import MAX_CANDIDATES
from service.analysis import care, organisation, topology, workload
from service.analysis.reach import (
    FACILITY_KINDS,
    MAX_DETOUR,
    MAX_FRONTAGE_M,
    MAX_MINUTES,
    MAX_SPEED,
)
from service.analysis.siting import MAX_K
from service.inputs import GenerationNumber, Moment
from service.schemas.crs import InputCrs
from service.schemas.jsonbody import JsonTypes
from service.schemas.lookup import BodyLat, BodyLon

__all__ = [
    "AreaQuery",
    "AnalysisQuery",
    "StaffingQuery",
    "TopologyQuery",
    "OrganisationQuery",
    "CareQuery",
    "WorkloadQuery",
    "ReachQuery",
    "SitingQuery",
    "SitingBody",
    "ReportQuery",
    "ReportJsonQuery",
]


class AreaQuery(BaseModel):
    """The area and generation every analysis reads."""

    model_config = ConfigDict(extra="forbid")

    area: str | None = Field(
        None, pattern=r"^[0-9]{6,18}$", description="area code inside your scope (default: yours)"
    )
    generation: GenerationNumber | None = Field(None, description="default: the current generation")

    def arguments(self) -> dict[str, Any]:
        """Return the keyword arguments of the ``run_*`` function."""
        values = self.model_dump()
        values["area_code"] = values.pop("area")
        return values


# -- GET /analysis/<staffing|topology|organisation|care|workload> ----------------------------
class AnalysisQuery(AreaQuery):
    geometry: bool = Field(True, description="include GeoJSON geometry of the findings")


class StaffingQuery(AnalysisQuery):
    pass


class TopologyQuery(AnalysisQuery):
    min_sliver_m2: float = Field(
        topology.DEFAULT_MIN_SLIVER_M2,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        description="gaps, overlaps and outside pieces smaller than this are slivers (m²)",
    )


class OrganisationQuery(AnalysisQuery):
    min_staff: int = Field(
        organisation.DEFAULT_MIN_STAFF,
        ge=1,
        le=10_000_000,
        description="a unit this large (staff) needs a co-building agreement",
    )


class CareQuery(AnalysisQuery):
    min_contacts: int = Field(
        care.DEFAULT_MIN_CONTACTS, ge=0, le=100_000, description="fewest households per cadre"
    )
    max_contacts: int = Field(
        care.DEFAULT_MAX_CONTACTS, ge=0, le=100_000, description="most households per cadre"
    )


class WorkloadQuery(AnalysisQuery):
    since: Moment | None = Field(
        None, description="period start, reported at or after (default: until − 90 days)"
    )
    until: Moment | None = Field(
        None, description="period end, reported before; backlog as of then (default: now)"
    )
    overdue_hours: float = Field(
        workload.DEFAULT_OVERDUE_HOURS,
        gt=0,
        le=24 * 3650,
        allow_inf_nan=False,
        description="an open case older than this is overdue (hours)",
    )
    z: float = Field(
        workload.DEFAULT_Z,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="outlier: beyond this many standard deviations from the mean",
    )
    median_ratio: float = Field(
        workload.DEFAULT_MEDIAN_RATIO,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="outlier: more incidents than this times the median",
    )


# -- GET /analysis/reach, GET and POST /analysis/siting ---------------------------------------
_KINDS_DOC = (
    f"comma-separated facility kinds that serve: {', '.join(FACILITY_KINDS)} "
    "(default service_hall,service_station)"
)
_KIND = "|".join(FACILITY_KINDS)
#: New facilities a siting places when neither ``k`` nor ``lscp`` is given (as the report's).
DEFAULT_K = 5


class _WalkQuery(AreaQuery):
    minutes: float = Field(
        DEFAULT_MINUTES, gt=0, le=MAX_MINUTES, allow_inf_nan=False, description="walking time"
    )
    speed_m_per_min: float = Field(
        WALK_SPEED_M_PER_MIN,
        gt=0,
        le=MAX_SPEED,
        allow_inf_nan=False,
        description="walking speed, metres per minute",
    )
    detour: float = Field(
        DEFAULT_DETOUR,
        ge=1,
        le=MAX_DETOUR,
        allow_inf_nan=False,
        description="straight line: walked distance ÷ straight distance",
    )
    kinds: str | None = Field(
        None, max_length=200, pattern=rf"^ *({_KIND}) *(, *({_KIND}) *)*$", description=_KINDS_DOC
    )


class ReachQuery(_WalkQuery):
    network: bool | None = Field(
        None,
        description="walk the imported road network (pgRouting); default: when one is "
        "imported in the area",
    )
    frontage_m: float = Field(
        DEFAULT_FRONTAGE_M,
        ge=0,
        le=MAX_FRONTAGE_M,
        allow_inf_nan=False,
        description="network: distance from a reached street still served, metres",
    )
    rank_by: Literal["area", "households", "units"] = Field(
        "area", description="which uncovered share ranks the communities"
    )
    geometry: bool = Field(True, description="include the uncovered polygons")
    simplify_m: float = Field(
        0.0, ge=0, le=1000, allow_inf_nan=False, description="simplify polygons, metres"
    )

    def arguments(self) -> dict[str, Any]:
        values = super().arguments()
        values["use_network"] = values.pop("network")
        return values


class SitingQuery(_WalkQuery):
    k: int | None = Field(
        None,
        ge=1,
        le=MAX_K,
        description=f"new facilities to place (maximal covering); {DEFAULT_K} unless `lscp`",
        json_schema_extra={"default": DEFAULT_K},
    )
    lscp: bool = Field(False, description="instead: the fewest new facilities covering all")
    spacing_m: float | None = Field(
        None,
        ge=50,
        le=50_000,
        allow_inf_nan=False,
        description="candidate lattice spacing, metres (default: automatic, ≤ 2,000 sites)",
    )
    demand: Literal["households", "units", "both"] = Field(
        "households", description="what is covered: care households, units or both"
    )

    def arguments(self) -> dict[str, Any]:
        values = super().arguments()
        if values["k"] is None and not values["lscp"]:
            values["k"] = DEFAULT_K
        return values


class SitingBody(SitingQuery, JsonTypes):
    # JsonTypes: a JSON body's values have their documented JSON types (the query's are text).
    candidates: list[tuple[BodyLon, BodyLat]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="candidate sites [[lon, lat], …] inside the area (default: a lattice)",
    )
    crs: InputCrs = Field("EPSG:4326", description="of the candidates (as everywhere)")

    def arguments(self) -> dict[str, Any]:
        values = super().arguments()
        values["candidates_crs"] = values.pop("crs")
        if values["candidates"] is not None:
            values["candidates"] = [list(c) for c in values["candidates"]]
        return values


# -- GET /analysis/report, report.gpkg, report.zip --------------------------------------------
class ReportQuery(AreaQuery):
    siting_k: int | None = Field(
        None,
        ge=1,
        le=MAX_K,
        description="also place this many new facilities (maximal covering of care households)",
    )


class ReportJsonQuery(ReportQuery):
    geometry: bool = Field(True, description="include GeoJSON geometry of the findings")

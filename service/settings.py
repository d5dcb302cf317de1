"""Return the service's settings, split by concern, read from the environment."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "DatabaseSettings",
    "APISettings",
    "Open311Settings",
    "DispatchSettings",
    "BasemapSettings",
    "Settings",
    "get_settings",
]


class DatabaseSettings(BaseSettings):
    """Where the PostGIS database is: ``DATABASE_URL`` or the project's local cluster."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    pool_size: int = Field(default=10, alias="WANGGE_DB_POOL_SIZE", ge=1, le=200)
    #: Streaming replicas (hot standbys) of ``DATABASE_URL``, comma-separated
    #: ``postgresql://`` URLs: read-only requests are served there (``service.replicas``).
    replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="DATABASE_REPLICA_URLS"
    )
    #: How long a read waits for a replica to replay the caller's last write before it goes
    #: to the primary instead (milliseconds).
    replica_wait_ms: float = Field(
        default=100.0, alias="WANGGE_DB_REPLICA_WAIT_MS", ge=0, le=10_000
    )
    #: A replica further behind the primary than this (seconds) is not read from.
    replica_max_lag_s: float = Field(
        default=10.0, alias="WANGGE_DB_REPLICA_MAX_LAG_S", ge=0.5, le=3600
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.split("://", 1)[0].startswith("postgres"):
            raise ValueError("DATABASE_URL must be a postgresql:// URL (PostGIS is required)")
        return value

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _replicas(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for n, url in enumerate(value if isinstance(value, list) else [], 1):
            # The URL is not echoed: it may hold a password.
            if not (isinstance(url, str) and url.split("://", 1)[0].startswith("postgres")):
                raise ValueError(f"DATABASE_REPLICA_URLS: entry {n} is not a postgresql:// URL")
        return value

    def resolved_url(self) -> str:
        """Return the libpq URL, falling back to the project's local cluster."""
        if self.database_url:
            return self.database_url
        from service.localdb import LocalCluster

        return LocalCluster.from_env().url


class APISettings(BaseSettings):
    """HTTP API behaviour."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_API_", extra="ignore")

    max_batch_points: int = Field(default=10_000, ge=1, le=1_000_000)
    max_page_size: int = Field(default=1_000, ge=1, le=100_000)
    default_page_size: int = Field(default=100, ge=1)
    token_cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: Origins whose pages may call the API (CORS), comma-separated, e.g.
    #: ``https://dispatch.example,https://wall.example``; ``*`` for any; empty: no CORS headers.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=200_000_000, ge=1)
    #: A photo attached to a case (``POST /cases/{id}/attachments``); tablets shrink
    #: theirs to well under this before sending.
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    #: Bound on one point of ``POST /lookup/batch`` in the body (an object with a long id,
    #: pretty-printed): the body may be ``max_batch_points`` times this.
    batch_point_bytes: int = Field(default=256, ge=16, le=65_536)
    #: Every other body (JSON writes, forms); uploads and batches have their own limits.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Failed authentications (a wrong, revoked or malformed token) per client address in
    #: the window, after which its unverified tokens are answered 429 until the window moves.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: Lifetime of the session cookie a map page gets for its ``?access_token=``.
    session_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    #: Mixed into the session cookies' signatures: set it so that a copy of the token table
    #: (which holds only hashes) cannot forge a page session. Optional.
    session_key: SecretStr | None = None
    tile_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for origin in value if isinstance(value, list) else []:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(
                    f"WANGGE_API_CORS_ORIGINS: {origin!r} is not an origin "
                    "(scheme://host[:port], no path, no trailing slash) or *"
                )
        return value

    @model_validator(mode="after")
    def _page_sizes_agree(self) -> APISettings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("WANGGE_API_DEFAULT_PAGE_SIZE exceeds WANGGE_API_MAX_PAGE_SIZE")
        return self


class Open311Settings(BaseSettings):
    """The Open311 GeoReport v2 endpoints."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_OPEN311_", extra="ignore")

    #: Discovery and reads without a key, as the specification has them (public fields only;
    #: filing a request always needs a key). False: every call needs a key (401 without).
    public_reads: bool = True


class DispatchSettings(BaseSettings):
    """Command and dispatch: cases, their deadlines and stream."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_DISPATCH_", extra="ignore")

    #: Duplicate suggestions: cases of the same category within this distance...
    duplicate_distance_m: float = Field(default=200.0, ge=1, le=50_000)
    #: ... and reported within this many hours of each other.
    duplicate_hours: float = Field(default=72.0, ge=0.1, le=24 * 365)
    #: Each server process sweeps deadlines this often (seconds; 0: this process never does).
    sweep_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: A case flagged overdue is escalated one level up this many minutes past its deadline.
    escalate_after_minutes: int = Field(default=60, ge=0, le=366 * 24 * 60)


class BasemapSettings(BaseSettings):
    """The map pages' street basemaps (:mod:`maps.basemap`, :mod:`service.basemap`).

    Keys are secrets: never logged, never put in a static export (served pages carry them
    in their tile URLs, as the providers' own web SDKs do).
    """

    # No input in error messages: it would hold the keys.
    model_config = SettingsConfigDict(
        env_prefix="WANGGE_BASEMAP_", extra="ignore", hide_input_in_errors=True
    )

    #: ``WANGGE_BASEMAP``: the basemaps of the pages' switcher, comma-separated, the first
    #: shown: ``tianditu-vec``, ``tianditu-img``, ``amap``, ``amap-img``, ``tencent``,
    #: ``osm``, ``custom`` (``WANGGE_BASEMAP_URL``) and ``offline`` (always offered).
    choices: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["offline"], alias="WANGGE_BASEMAP"
    )
    #: Tianditu's key (``tk``), required by ``tianditu-*``.
    tianditu_key: SecretStr | None = None
    #: Any XYZ or WMTS (KVP, Web Mercator) URL template for ``custom``: ``{z}``, ``{x}``,
    #: ``{y}`` or ``{-y}``, optionally ``{s}`` (``WANGGE_BASEMAP_URL_SUBDOMAINS``) and
    #: ``{key}`` (``WANGGE_BASEMAP_URL_KEY``).
    url: str | None = None
    #: The datum of the custom tiles: ``WGS84`` (also CGCS2000), ``GCJ-02`` or ``BD-09``.
    url_datum: str = "WGS84"
    url_name: str = Field(default="Custom basemap", max_length=80)
    url_attribution: str = Field(default="", max_length=300)
    url_subdomains: str = Field(default="", max_length=20)
    url_key: SecretStr | None = None
    #: A font file with Chinese glyphs for the offline basemap's labels (default: found).
    font: str | None = None
    #: Memory for rendered offline tiles per server process (0: none kept).
    cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    @field_validator("choices", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip().lower() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _workable(self) -> BasemapSettings:
        # The same checks the pages make, at start: a basemap that cannot work is refused
        # with the setting to fix (no key or URL is echoed).
        from service.basemap import page_basemaps

        try:
            page_basemaps(self)
        except ValueError as exc:
            raise ValueError(f"WANGGE_BASEMAP: {exc}") from None
        return self


class Settings:
    """All settings, grouped."""

    def __init__(
        self,
        *,
        db: DatabaseSettings | None = None,
        api: APISettings | None = None,
        open311: Open311Settings | None = None,
        dispatch: DispatchSettings | None = None,
        basemap: BasemapSettings | None = None,
    ):
        self.db = db or DatabaseSettings()
        self.api = api or APISettings()
        self.open311 = open311 or Open311Settings()
        self.dispatch = dispatch or DispatchSettings()
        self.basemap = basemap or BasemapSettings()


def get_settings() -> Settings:
    """Return settings read from the environment now (never cached at import time)."""
    return Settings()

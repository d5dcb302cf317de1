"""Return the service's settings, split by concern, read from the environment."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DatabaseSettings", "APISettings", "Settings", "get_settings"]


class DatabaseSettings(BaseSettings):
    """Where the PostGIS database is: ``DATABASE_URL`` or the project's local cluster."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    pool_size: int = Field(default=10, alias="WANGGE_DB_POOL_SIZE", ge=1, le=200)

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.split("://", 1)[0].startswith("postgres"):
            raise ValueError("DATABASE_URL must be a postgresql:// URL (PostGIS is required)")
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
    cors_origins: list[str] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=200_000_000, ge=1)
    tile_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    @model_validator(mode="after")
    def _page_sizes_agree(self) -> APISettings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("WANGGE_API_DEFAULT_PAGE_SIZE exceeds WANGGE_API_MAX_PAGE_SIZE")
        return self


class Settings:
    """All settings, grouped."""

    def __init__(self, *, db: DatabaseSettings | None = None, api: APISettings | None = None):
        self.db = db or DatabaseSettings()
        self.api = api or APISettings()


def get_settings() -> Settings:
    """Return settings read from the environment now (never cached at import time)."""
    return Settings()

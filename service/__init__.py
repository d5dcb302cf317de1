"""wangge HTTP service (FastAPI on PostGIS)."""

__version__ = "0.1.0"

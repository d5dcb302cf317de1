"""The service app plus one bare route, for the lookup benchmark (same app, same stack)."""

from __future__ import annotations

from service.app import create_app


def create_bench_app():
    """Return the wangge app with ``GET /bench/bare``: no auth, no database."""
    app = create_app()

    @app.get("/bench/bare", include_in_schema=False)
    async def bare() -> dict:
        return {"ok": True}

    return app

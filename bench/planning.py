"""The planning page's server time, first request and repeated, per role, with and without
the cache of its coverage analyses (service.gap_cache).

Run: ``.venv/bin/python -m bench.planning postgresql://wangge@127.0.0.1:55432/<db> [--no-cache]``
on a demo database (``wangge_bench``, or one built by ``bench.tiles.prepare_volume`` for 1 M
incidents). The app runs in-process (TestClient, its lifespan and change listener included):
times are the server's, without a network. Creates three tokens in the database.
"""

import statistics
import sys
import time

from fastapi.testclient import TestClient
from sqlalchemy import text

from service.app import create_app
from service.auth import create_token
from service.db import make_engine
from service.settings import APISettings, DatabaseSettings, Settings

_CURRENT = "generation_high >= (SELECT max(id) FROM generation WHERE active)"


def main(url: str, cache: bool = True, rounds: int = 4) -> None:
    if not cache:
        import service.routers.pages as pages_router

        pages_router._gap_cache = lambda request: None
    engine = make_engine(url)
    with engine.begin() as conn:

        def first(level: str) -> str:
            sql = f"SELECT code FROM area WHERE level = :level AND {_CURRENT} ORDER BY code"
            return conn.execute(text(sql + " LIMIT 1"), {"level": level}).scalar_one()

        city, district = first("city"), first("district")
        tokens = {
            "planner (city)": create_token(conn, name="pl", role="planner", area_code=city),
            "admin": create_token(conn, name="pl", role="admin", area_code=None),
            "planner (district)": create_token(conn, name="pl", role="planner", area_code=district),
        }
    engine.dispose()
    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=url, WANGGE_DB_POOL_SIZE=2),
        api=APISettings(token_cache_seconds=0),
    )
    with TestClient(create_app(settings)) as client:
        for who, token in tokens.items():
            ms = []
            for _ in range(rounds):
                started = time.perf_counter()
                r = client.get("/pages/planning", headers={"Authorization": f"Bearer {token}"})
                ms.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200, r.text[:300]
            again = ", ".join(f"{x:.0f}" for x in ms[1:])
            print(
                f"{who:<20} first {ms[0]:6.0f} ms   repeated median "
                f"{statistics.median(ms[1:]):6.0f} ms ({again})"
            )


if __name__ == "__main__":
    main(sys.argv[1], cache="--no-cache" not in sys.argv)

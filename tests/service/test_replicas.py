"""Reads on a real streaming replica (issue 12, "read replicas").

A primary cluster of this module's own (never the shared one) and a hot standby of it made
with ``pg_basebackup -R``, each on a free port. The server runs with
``DATABASE_REPLICA_URLS`` naming the standby. Replay is paused (``pg_wal_replay_pause()``)
to make the replica visibly stale: a caller that did not write sees the replica's past, a
caller that wrote sees its write at once; the standby is stopped: reads still answer 200.
Fails, never skips, without PostgreSQL.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from service.db import ensure_database
from tests.conftest import load_tiny, make_tokens
from tests.service.test_outage import IN_NW, _free_port, _incidents_in, _tile_of, _wait_for

MAX_LAG_S = 3.0
WAIT_MS = 300.0


@pytest.fixture(scope="module")
def clusters():
    """Return (primary, standby): a throwaway cluster holding the tiny hierarchy and its
    streaming replica, both started."""
    from service.localdb import LocalCluster, find_pg_bindir

    try:
        find_pg_bindir()
    except RuntimeError as exc:
        pytest.fail(f"the replica test needs PostgreSQL + PostGIS: {exc}", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="wangge-replicas-"))
    base.chmod(0o755)  # the postgres user (when we are root) must enter it
    primary = LocalCluster(datadir=base / "primary", port=_free_port())
    standby = None
    try:
        primary.init()
        with open(primary.datadir / "postgresql.conf", "a") as conf:
            conf.write("shared_buffers = 32MB\nmax_connections = 100\n")
        primary.start()
        ensure_database(primary.url)
        load_tiny(primary.url)
        standby = primary.make_standby(base / "standby", _free_port())
        standby.start()
        with psycopg.connect(standby.url) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop(mode="immediate")
        primary.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


class _Server:
    """The app under uvicorn in a thread, reading on ``replicas``."""

    def __init__(self, url: str, replicas: list[str]):
        import threading

        import uvicorn

        from service.app import create_app
        from service.settings import APISettings, DatabaseSettings, DispatchSettings, Settings

        self.port = _free_port()
        self.app = create_app(
            Settings(
                db=DatabaseSettings(
                    DATABASE_URL=url,
                    DATABASE_REPLICA_URLS=replicas,
                    WANGGE_DB_REPLICA_WAIT_MS=WAIT_MS,
                    WANGGE_DB_REPLICA_MAX_LAG_S=MAX_LAG_S,
                ),
                api=APISettings(token_cache_seconds=300),
                dispatch=DispatchSettings(sweep_seconds=0),
            )
        )
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def replica(self):
        return self.app.state.read_routing.replicas[0]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        assert _wait_for(lambda: self.server.started, 30), "server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _replay(standby, *, paused: bool) -> None:
    with psycopg.connect(standby.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def _incident(client: httpx.Client, dx: float = 0.0) -> tuple[int, str]:
    body = {"category": "road", "source": "patrol", "lon": IN_NW[0] + dx, "lat": IN_NW[1]}
    r = client.post("/incidents", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.headers["wangge-lsn"]


ITEMS = "/ogc/collections/incidents/items?limit=1000"


def _ids(r: httpx.Response) -> set[int]:
    assert r.status_code == 200, r.text
    return {f["id"] for f in r.json()["features"]}


@pytest.fixture(scope="module")
def tokens(clusters):
    primary, _ = clusters
    city = ("city_dispatcher", "990100")
    return make_tokens(primary.url, {"writer": city, "reader": city, "other": city})


def test_reads_go_to_the_replica_and_each_caller_reads_its_own_writes(clusters, tokens, tmp_path):
    primary, standby = clusters
    with _Server(primary.url, [standby.url]) as server:
        writer, reader = server.client(tokens["writer"]), server.client(tokens["reader"])
        replica = server.replica
        assert replica.usable
        # Reads of every kind are served by the replica.
        served = replica.served
        for path in (
            "/areas?level=grid",
            "/areas/990100",
            "/lookup?lon=106.005&lat=26.015",
            ITEMS,
            "/generations",
            "/health",
            "/analysis/staffing",
        ):
            assert reader.get(path).status_code == 200, path
        assert replica.served >= served + 7

        # Replay paused: the replica stays where it is while the primary moves on.
        _replay(standby, paused=True)
        try:
            before = _ids(reader.get(ITEMS))
            new_id, lsn = _incident(writer)
            # A caller that did not write reads the replica's past ...
            assert new_id not in _ids(reader.get(ITEMS))
            # ... the writer reads its write at once (the replica cannot have it: the
            # primary answers after waiting at most WANGGE_DB_REPLICA_WAIT_MS) ...
            start = time.monotonic()
            assert new_id in _ids(writer.get(ITEMS))
            assert time.monotonic() - start < WAIT_MS / 1000 + 2
            # ... and so does any caller sending the position back.
            assert new_id in _ids(reader.get(ITEMS, headers={"Wangge-LSN": lsn}))
            bad = reader.get(ITEMS, headers={"Wangge-LSN": "yesterday"})
            assert bad.status_code == 422 and bad.json()["field"] == "Wangge-LSN", bad.text

            # Tiles: the write invalidated the cached tile and the tile drawn next is not
            # taken from the stale replica, for any caller.
            z, x, y = _tile_of(*IN_NW, 15)
            tile = f"/tiles/incidents/{z}/{x}/{y}.mvt"
            drawn = _incidents_in(reader.get(tile).content, tmp_path)
            assert drawn == len(before) + 1
            _incident(writer, dx=1e-4)
            assert _wait_for(
                lambda: _incidents_in(reader.get(tile).content, tmp_path) == drawn + 1, 5
            )

            # A replica that lags beyond WANGGE_DB_REPLICA_MAX_LAG_S is not read from:
            # after that long, every caller reads the primary (and sees the write).
            assert _wait_for(lambda: not replica.usable, MAX_LAG_S + 3), "lag not seen"
            served = replica.served
            assert new_id in _ids(reader.get(ITEMS))
            assert replica.served == served
        finally:
            _replay(standby, paused=False)
        # Replay resumed: the replica catches up and serves again, the write included.
        assert _wait_for(lambda: replica.usable, 5), "the replica did not come back"
        served = replica.served
        assert new_id in _ids(reader.get(ITEMS))
        assert replica.served == served + 1


def test_a_write_is_read_back_through_another_server_process(clusters, tokens):
    primary, standby = clusters
    # Two servers on the same databases, as `wangge serve --workers 2` runs two processes:
    # the write's position reaches the other one by NOTIFY wangge_writes.
    with _Server(primary.url, [standby.url]) as one, _Server(primary.url, [standby.url]) as two:
        _replay(standby, paused=True)
        try:
            new_id, _ = _incident(one.client(tokens["other"]), dx=2e-4)
            assert new_id in _ids(two.client(tokens["other"]).get(ITEMS))
            assert new_id not in _ids(two.client(tokens["reader"]).get(ITEMS))
        finally:
            _replay(standby, paused=False)


def test_a_dead_replica_leaves_reads_to_the_primary(clusters, tokens):
    primary, standby = clusters
    with _Server(primary.url, [standby.url]) as server:
        reader, writer = server.client(tokens["reader"]), server.client(tokens["writer"])
        replica = server.replica
        assert reader.get(ITEMS).status_code == 200  # pooled connections to the replica
        assert replica.usable
        standby.stop(mode="immediate")
        try:
            paths = [
                ITEMS,
                "/areas?level=grid",
                "/lookup?lon=106.005&lat=26.015",
                "/health",
                "/analysis/staffing",
            ]
            # The very first reads after it died: connections it dropped, then refused.
            for _ in range(3):
                for path in paths:
                    r = reader.get(path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
            assert not replica.usable
            new_id, _ = _incident(writer, dx=3e-4)
            assert new_id in _ids(reader.get(ITEMS))
        finally:
            standby.start()
        # Back: the tick probes it and reads go there again.
        assert _wait_for(lambda: replica.usable, 10), "the replica was not taken back"
        served = replica.served
        assert reader.get(ITEMS).status_code == 200
        assert replica.served == served + 1

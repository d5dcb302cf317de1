"""The PostGIS fixtures: throwaway databases in the project's cluster (or DATABASE_URL's).

No test skips for want of a database: if PostGIS is unreachable the tests fail, saying so.
"""

from __future__ import annotations

import os
import secrets

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.db import make_engine, migrate, sync_url

# No test app sweeps deadlines on its own: the databases are shared by many tests, whose
# cases must not turn overdue behind their backs (tests/service/test_deadlines.py sweeps
# with a clock it controls, or starts LiveServer(dispatch=DispatchSettings(sweep_seconds=1))).
os.environ.setdefault("WANGGE_DISPATCH_SWEEP_SECONDS", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Turn a skip into a failure: a check that did not run must not pass as done.

    Expected failures (``xfail``) keep their outcome: they name a known bug and flip when it
    is fixed.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"this project's tests fail rather than skip: {report.longrepr}"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from service.localdb import LocalCluster

    return LocalCluster.from_env().url


def _create_database(prefix: str, *, template: str | None = None) -> str:
    server = make_url(sync_url(_server_url()))
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if template is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    except Exception as exc:  # fail loudly: the suite needs a real PostGIS
        pytest.fail(
            f"cannot create a test database on {server.render_as_string(hide_password=True)}: "
            f"{exc}. Run `make test` (it starts the local PostGIS) or set DATABASE_URL.",
            pytrace=False,
        )
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": target.database},
        )
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}"')
    admin.dispose()


@pytest.fixture(scope="session")
def demo_db_url() -> str:
    """Return the URL of a throwaway database holding the Guiyang demo (built once)."""
    from fixtures.guiyang import build_guiyang_demo

    url = _create_database("wangge_test_demo")
    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        build_guiyang_demo(conn, seed=2014)
    engine.dispose()
    yield url
    _drop_database(url)


def load_tiny(url: str, *, records=None, description: str = "tiny") -> int:
    """Migrate the database at ``url`` and make the tiny hierarchy its active generation.

    ``records``: other area records instead (the tiny ones moved elsewhere, say). Returns
    the generation's id.
    """
    from fixtures.tiny import tiny_records
    from service.repositories import boundaries

    migrate(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        gen = boundaries.create_generation(conn, description=description)
        boundaries.write_areas(
            conn,
            generation_id=gen,
            records=tiny_records() if records is None else records,
            source="tiny",
        )
        boundaries.activate_generation(conn, generation_id=gen)
    engine.dispose()
    return gen


#: The session's template of :func:`tiny_database` (made on first use, dropped at the end).
_TINY_TEMPLATE: list[str] = []


def _tiny_template() -> str:
    """Return the name of a database holding what :func:`load_tiny` makes, and the coming
    year's incident partitions (what a server creates at start), to copy from.

    A copy takes ~0.4 s where migrating and loading take ~2 s, and the test servers find
    their partitions made instead of creating them while the test runs.
    """
    if not _TINY_TEMPLATE:
        url = _create_database("wangge_test_template")
        load_tiny(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("SELECT incident_ensure_partitions(12, NULL)"))
        engine.dispose()
        _TINY_TEMPLATE.append(make_url(url).database)
    return _TINY_TEMPLATE[0]


def pytest_sessionfinish(session, exitstatus):
    for name in _TINY_TEMPLATE:
        _drop_database(
            make_url(sync_url(_server_url()))
            .set(database=name)
            .render_as_string(hide_password=False)
        )


def tiny_database(prefix: str) -> str:
    """Return the URL of a new throwaway database (``prefix``…) holding the tiny hierarchy
    (migrated, the tiny areas its active generation, as :func:`load_tiny` leaves it)."""
    return _create_database(prefix, template=_tiny_template())


@pytest.fixture
def tiny_db_url() -> str:
    """Return the URL of a fresh throwaway database holding the tiny hierarchy."""
    url = tiny_database("wangge_test_tiny")
    yield url
    _drop_database(url)


def _client(url: str):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import APISettings, DatabaseSettings, Settings

    settings = Settings(
        db=DatabaseSettings(DATABASE_URL=url),
        api=APISettings(token_cache_seconds=0, max_batch_points=2_000),
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def make_tokens(url: str, specs: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    """Return name → token for ``specs`` (name → (role, area code))."""
    from service.auth import create_token

    engine = make_engine(url)
    with engine.begin() as conn:
        tokens = {
            name: create_token(conn, name=name, role=role, area_code=area)
            for name, (role, area) in specs.items()
        }
    engine.dispose()
    return tokens


@pytest.fixture(scope="session")
def demo_client(demo_db_url):
    with _client(demo_db_url) as client:
        yield client


@pytest.fixture
def tiny_client(tiny_db_url):
    with _client(tiny_db_url) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    """Return the header that authenticates ``token``."""
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """A real uvicorn server on a free port, in a thread (for concurrency and GDAL tests)."""

    def __init__(self, url: str, *, token_cache_seconds: float = 0, dispatch=None):
        import socket
        import threading

        import uvicorn

        from service.app import create_app
        from service.settings import APISettings, DatabaseSettings, Settings

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        settings = Settings(
            db=DatabaseSettings(DATABASE_URL=url, WANGGE_DB_POOL_SIZE=25),
            api=APISettings(token_cache_seconds=token_cache_seconds),
            dispatch=dispatch,  # a DispatchSettings (e.g. sweeping deadlines)
        )
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("live server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def tiny_server(tiny_db_url):
    with LiveServer(tiny_db_url) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    """Return headless Chromium for the test module (page helpers: tests/service/browser.py)."""
    from tests.service.browser import launch_chromium

    with launch_chromium() as chromium:
        yield chromium

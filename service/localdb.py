"""Return and manage the project's own local PostgreSQL + PostGIS cluster.

``make run`` and ``make test`` use this cluster unless ``DATABASE_URL`` is set. It listens on
127.0.0.1 only, on a port that is not 5432 (so it never collides with a system server), and
keeps its data directory between runs. ``initdb`` refuses to run as root, so when we are root
the cluster belongs to the ``postgres`` OS user and lives where that user can enter.

Only the standard library is used here so it also works before the app's settings load.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalCluster", "find_pg_bindir"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 55432
SUPERUSER = "wangge"


def find_pg_bindir() -> Path:
    """Return the directory of the newest installed PostgreSQL server binaries that has PostGIS."""
    env = os.environ.get("WANGGE_PG_BINDIR")
    if env:
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        reverse=True,
    )
    for initdb in candidates:
        version = Path(initdb).parts[-3]
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists():
            return Path(initdb).parent
    if candidates:
        raise RuntimeError(
            "PostgreSQL is installed but PostGIS is not: run `make postgis` "
            "(apt-get install postgresql-<version>-postgis-3)"
        )
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found: run `make postgis`")


@dataclass
class LocalCluster:
    """A PostgreSQL cluster owned by the project (data directory, port, OS owner)."""

    datadir: Path
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls) -> LocalCluster:
        """Return the cluster configured by WANGGE_PGDATA and WANGGE_PGPORT (or the defaults)."""
        port = int(os.environ.get("WANGGE_PGPORT", DEFAULT_PORT))
        datadir = os.environ.get("WANGGE_PGDATA")
        if datadir:
            path = Path(datadir)
        elif os.geteuid() == 0:
            # The postgres user must be able to enter every parent directory, which a
            # checkout under /root does not allow, hence a system location.
            path = Path(f"/var/lib/wangge/pg{port}")
        else:
            path = PROJECT_ROOT / ".pgdata"
        return cls(datadir=path.resolve(), port=port)

    # -- helpers -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{SUPERUSER}"

    @property
    def logfile(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_owner(args), check=True, text=True, **kw)

    def is_initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        bindir = find_pg_bindir()
        if not self.is_initialised():
            return False
        res = subprocess.run(
            self._as_owner([str(bindir / "pg_ctl"), "status", "-D", str(self.datadir)]),
            capture_output=True,
            text=True,
        )
        return res.returncode == 0

    # -- lifecycle -----------------------------------------------------------------------
    def init(self) -> None:
        """Create the data directory and the cluster if they do not exist yet."""
        if self.is_initialised():
            return
        bindir = find_pg_bindir()
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for p in (self.datadir.parent, self.datadir):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# wangge local cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                "unix_socket_directories = ''\n"
                "fsync = on\n"
                "shared_buffers = 256MB\n"
                "work_mem = 32MB\n"
                "maintenance_work_mem = 256MB\n"
                "max_connections = 200\n"
            )
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.datadir / "postgresql.conf", pg.pw_uid, pg.pw_gid)

    def start(self, timeout_s: float = 60) -> None:
        """Initialise (if needed) and start the cluster; return when it accepts connections."""
        self.init()
        if self.is_running():
            return
        bindir = find_pg_bindir()
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            self.logfile.touch()
            os.chown(self.logfile, pg.pw_uid, pg.pw_gid)
        self._run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(timeout_s)),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                f"-p {self.port}",
            ],
            capture_output=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            res = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if res.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not start; see {self.logfile}")

    def make_standby(self, datadir: Path, port: int) -> LocalCluster:
        """Return a streaming replica of this (running) cluster, made but not started.

        ``pg_basebackup -R`` copies the cluster and writes ``standby.signal`` and the
        ``primary_conninfo`` that streams from it; the default ``wal_level`` (replica),
        ``max_wal_senders`` and the ``replication`` lines initdb writes into ``pg_hba.conf``
        are all it needs. The copy's ``postgresql.conf`` names this cluster's port, so the
        standby's own port is written after it.
        """
        standby = LocalCluster(datadir=Path(datadir).resolve(), port=port)
        standby.datadir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(standby.datadir.parent, pg.pw_uid, pg.pw_gid)
        self._run(
            [
                str(find_pg_bindir() / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-D",
                str(standby.datadir),
                "-R",
                "--wal-method=stream",
                "--checkpoint=fast",
            ],
            capture_output=True,
        )
        with open(standby.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"\n# standby of :{self.port}\nport = {port}\nhot_standby = on\n")
        return standby

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if it runs (data is kept).

        ``mode`` is pg_ctl's: ``fast`` ends sessions cleanly, ``immediate`` kills the
        server as a crash would (the outage test uses it; recovery replays the WAL).
        """
        if not self.is_running():
            return
        bindir = find_pg_bindir()
        self._run(
            [str(bindir / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.datadir)],
            capture_output=True,
        )

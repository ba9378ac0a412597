"""A throwaway PostgreSQL cluster for tests: initdb in a temporary directory, 127.0.0.1 only.

PostgreSQL refuses to run as root. As root (CI), the cluster's directory is given to the
``postgres`` system user that Debian's package creates (or ``nobody``) and every server
program runs as that user; as anyone else they run as that user directly.

The cluster trusts connections from 127.0.0.1 (there is no other address it listens on) and
trades durability for speed (fsync off): it lives for one test session. Each test gets a
database of its own, copied from a template (``fresh_database``), so tests never see each
other's rows. ``stop()`` and ``start()`` simulate an outage on the same port.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.servers import free_port

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "autovacuum": "off",  # short-lived databases; a worker in one would slow its DROP
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # tests provoke errors on purpose
}


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: Debian's newest /usr/lib/postgresql/*/bin, or PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    bindir = find_bindir()
    if bindir is None:
        return (
            "PostgreSQL server programs not found (no /usr/lib/postgresql/*/bin/initdb, "
            "no initdb on PATH): apt-get install postgresql"
        )
    if not (bindir / "pg_ctl").exists():
        return f"{bindir} has initdb but no pg_ctl"
    if os.geteuid() == 0 and run_as_user() is None:
        return "running as root and neither the 'postgres' nor the 'nobody' user exists"
    return None


def run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root."""
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


class PgCluster:
    """One server on 127.0.0.1:<port>; ``url(dbname)`` connects as the superuser."""

    TEMPLATE = "iris_template"

    def __init__(self, bindir: Path, root: Path, port: int, user: pwd.struct_passwd | None):
        self.bindir = bindir
        self.root = root
        self.datadir = root / "data"
        self.logfile = root / "server.log"
        self.port = port
        self.user = user
        self.running = False
        self._names = itertools.count(1)
        self.startup_seconds = 0.0

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def create(cls) -> PgCluster:
        """initdb, start, and create the (empty) template database; timed in startup_seconds."""
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        bindir = find_bindir()
        assert bindir is not None
        started = time.perf_counter()
        root = Path(tempfile.mkdtemp(prefix="iris-pg-"))
        user = run_as_user() if os.geteuid() == 0 else None
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        cluster = cls(bindir, root, free_port(), user)
        atexit.register(cluster.destroy)
        cluster._initdb()
        cluster.start()
        with cluster.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cls.TEMPLATE)))
        cluster.startup_seconds = time.perf_counter() - started
        return cluster

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        result = subprocess.run(
            args,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed with status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}{self.server_log()}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.datadir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        )
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            for key, value in SERVER_SETTINGS.items():
                conf.write(f"{key} = {value}\n")
            conf.write(f"port = {self.port}\n")
            # the socket in our own directory: /var/run/postgresql may not be writable
            conf.write(f"unix_socket_directories = '{self.root}'\n")

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "--pgdata",
            str(self.datadir),
            "--log",
            str(self.logfile),
            "--wait",
            "--timeout",
            "60",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` is a crash."""
        self._run(
            str(self.bindir / "pg_ctl"),
            "stop",
            "--pgdata",
            str(self.datadir),
            "--mode",
            mode,
            "--wait",
            "--timeout",
            "60",
        )
        self.running = False

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return "\nserver log:\n" + self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # -- databases -------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        """A new empty database (a copy of the template); returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self.connect("postgres") as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self.TEMPLATE)
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        if not self.running:
            return
        with self.connect("postgres") as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))

    def password_role(self, name: str, password: str) -> None:
        """A login role that must give ``password`` over TCP (scram-sha-256); every other
        role stays trusted. Returns once the server enforces it (the reload is asynchronous)."""
        with self.connect("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                return
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            hba = self.datadir / "pg_hba.conf"
            # The first matching line wins: this one goes before initdb's "trust" lines.
            hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        wrong = f"postgresql://{name}:not-{password}@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(wrong, connect_timeout=5).close()
            except psycopg.OperationalError:
                return  # refused: the new rule is in force
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server still lets {name} in without its password")
            time.sleep(0.02)

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """The URL of a new empty database, dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            with contextlib.suppress(psycopg.Error):
                self.drop_database(name)

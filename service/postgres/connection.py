"""A small connection pool that fails fast and says why when the database is unavailable.

psycopg_pool keeps connections open and replaces broken ones in the background. Around it,
:class:`Database` adds what a replica needs during an outage:

- connect and wait timeouts of a few seconds, so a dead database answers with an error
  instead of a hang;
- a check of each connection as it is taken (an empty query), so after a server restart the
  stale connections are dropped and replaced, without the pool's own growing back-off;
- a short fail-fast window after a connection failure: for ``FAIL_FAST_SECONDS`` every caller
  gets the error at once instead of each waiting for the timeout, so a thread pool is never
  filled with callers waiting on a database that is down. The first call after the window
  makes one direct connection attempt (a refused connection fails in a millisecond) and only
  when that succeeds asks the pool again: this is how a replica finds the database back
  without a restart.

Connections are in autocommit mode; a store opens a transaction with ``conn.transaction()``.

What a client may see of an outage is :data:`UNAVAILABLE` and no more: the host, port,
database, user and the driver's words are in the log, once per outage (the ``reason`` of
:class:`DatabaseUnavailableError`), never in the error's message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger("iris.postgres")
# The pool logs every checkout at INFO and every failed reconnection attempt at WARNING; our
# own single line says when the database becomes unavailable. An explicit level set by the
# application still wins.
_pool_log = logging.getLogger("psycopg.pool")
if _pool_log.level == logging.NOTSET:
    _pool_log.setLevel(logging.ERROR)

CONNECT_TIMEOUT = 3
"""Seconds libpq may take to open a connection (whole seconds; libpq's minimum is 2)."""
POOL_TIMEOUT = 3.0
"""Seconds a caller waits for a pooled connection before the database counts as unavailable."""
FAIL_FAST_SECONDS = 1.0
"""After a connection failure, how long callers get the error at once without trying."""
# SQLSTATE classes that mean the server or the connection is gone, not that a statement is
# wrong: 08 connection exception, 57P admin shutdown / crash / cannot connect now.
_CONNECTION_STATES = ("08", "57P")

Connection = psycopg.Connection[Any]


UNAVAILABLE = "the database is unavailable"
"""All an answer says of an outage: no host, port, database, user or driver message."""


class DatabaseUnavailableError(Exception):
    """The database cannot be reached. The message is :data:`UNAVAILABLE`, fit for any
    client; ``reason`` says where and why, for the log (never the password)."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE)
        self.reason = reason


def describe(url: str) -> str:
    """``user@host:port/dbname`` of a connection URL, for the log (never the password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "the configured database"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    user = f"{info['user']}@" if info.get("user") else ""
    return f"{user}{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the database went away rather than that SQL was refused."""
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
        state = getattr(error, "sqlstate", None)
        return state is None or state.startswith(_CONNECTION_STATES)
    return False


class _Pool(ConnectionPool[Connection]):
    """The pool, remembering why its last connection attempt failed (for the error message)."""

    last_error: str = ""

    def _connect(self, timeout: float | None = None) -> Connection:
        try:
            conn = super()._connect(timeout)
        except Exception as error:
            self.last_error = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise
        self.last_error = ""
        return conn


class Database:
    """A pool of autocommit connections to ``url`` with outage-aware errors."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: int = CONNECT_TIMEOUT,
        timeout: float = POOL_TIMEOUT,
        name: str = "iris",
    ) -> None:
        self.url = url
        self.where = describe(url)  # for the log only: answers never name the database
        self.timeout = timeout
        self.max_size = max_size
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_reason = ""
        self._last_refusal = ""
        # True until a connection has worked, and again after a failure: then the next caller
        # probes with one direct connection attempt before it waits on the pool.
        self._suspect = True
        self._connect_kwargs = connect_kwargs(connect_timeout, name)
        self.pool = _Pool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._connect_kwargs | {"autocommit": True},
            timeout=timeout,
            # Give up background reconnection quickly: the next caller starts a fresh attempt
            # at once, instead of waiting out an exponential back-off grown during an outage.
            reconnect_timeout=max(1.0, float(connect_timeout)),
            open=False,
            name=name,
        )
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=1.0)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A checked connection; connection failures become :class:`DatabaseUnavailableError`.

        Errors raised by a statement that the server refused (a constraint, a read-only
        transaction) pass through unchanged for the store to translate.
        """
        with self._lock:
            if time.monotonic() < self._down_until:
                raise DatabaseUnavailableError(self._down_reason)
            suspect = self._suspect
        if suspect:
            self._probe()
        conn = self._checked()
        if suspect:
            with self._lock:
                recovered, self._suspect = bool(self._down_reason), False
                self._down_reason = ""
            if recovered:
                log.warning("database available again: %s", self.where)
        try:
            yield conn
        except psycopg.Error as error:
            if is_connection_error(error) or conn.broken:
                reason = f"lost the connection to {self.where}: {first_line(error)}"
                raise self._trip(reason) from error
            raise
        finally:
            self.pool.putconn(conn)

    def _probe(self) -> None:
        """After a failure, one direct connection attempt decides before the pool is asked.

        The pool would make the caller wait its whole timeout while its own reconnection
        attempts back off; a refused connection answers in a millisecond.
        """
        try:
            psycopg.connect(self.url, **self._connect_kwargs).close()
        except psycopg.Error as error:
            raise self._trip(f"cannot connect to {self.where}: {first_line(error)}") from None

    def _checked(self) -> Connection:
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_size + 1):
            try:
                conn = self.pool.getconn(timeout=max(0.05, deadline - time.monotonic()))
            except PoolTimeout:
                why = self.pool.last_error or "no connection became free"
                raise self._trip(
                    f"no connection to {self.where} within {self.timeout:g} s ({why})"
                ) from None
            try:
                conn.execute("")  # an empty query: one round trip, no work on the server
            except psycopg.Error:
                self.pool.putconn(conn)  # broken (the server restarted): the pool replaces it
                self._probe()  # down, rather than restarted: say so now, not after a timeout
                continue
            return conn
        raise self._trip(f"every pooled connection to {self.where} was broken")

    def refused(self, what: str, error: psycopg.Error) -> None:
        """Log a statement the server refused, with where and why, for the answer omits both;
        once per distinct message (the poller retrying every second adds no line)."""
        why = first_line(error)
        with self._lock:
            first, self._last_refusal = why != self._last_refusal, why
        if first:
            log.warning("%s: %s: %s", what, self.where, why)

    def _trip(self, reason: str) -> DatabaseUnavailableError:
        with self._lock:
            first = not self._down_reason  # once per outage, not once per attempt
            self._down_until = time.monotonic() + FAIL_FAST_SECONDS
            self._down_reason = reason
            self._suspect = True
        if first:
            log.warning("database unavailable: %s", reason)
        return DatabaseUnavailableError(reason)


def connect_kwargs(connect_timeout: int, name: str) -> dict[str, Any]:
    """libpq options for every connection: short connect timeout, TCP keepalives."""
    return {
        "connect_timeout": max(2, int(connect_timeout)),
        "application_name": name,
        # A peer that vanished without closing (a node lost) is noticed in about 10 s.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
    }


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

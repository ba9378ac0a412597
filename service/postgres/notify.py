"""Activation notifications: a thread that LISTENs and tells the registry at once.

:meth:`PostgresModelStore.activate` sends ``NOTIFY iris_model_activated, '<version>'`` in the
transaction that moves the pointer; PostgreSQL delivers it to every listening connection when
that transaction commits. A :class:`Listener` holds one such connection of its own (never a
pooled one) and calls ``callback(version)`` for each notification.

Notifications sent while the connection was down are lost, so after every (re)connection the
listener calls ``callback(None)``: "look at the pointer, something may have changed". A lost
connection is retried with a growing delay (``RETRY_MIN`` up to ``RETRY_MAX`` seconds). The
registry keeps its periodic check besides, as the fallback for anything this misses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from service.postgres.connection import CONNECT_TIMEOUT, connect_kwargs, describe, first_line
from service.postgres.migrations import CHANNEL

log = logging.getLogger("iris.postgres")

RETRY_MIN = 0.1
RETRY_MAX = 2.0
WAIT = 0.25  # seconds per wait for notifications: how quickly stop() is noticed
PING_EVERY = 5.0  # seconds between checks that a quiet connection is still alive


class Listener(threading.Thread):
    """LISTEN on the activation channel in a daemon thread; ``stop()`` ends it."""

    def __init__(
        self,
        url: str,
        callback: Callable[[str | None], None],
        *,
        channel: str = CHANNEL,
        connect_timeout: int = CONNECT_TIMEOUT,
        name: str = "iris-listener",
    ) -> None:
        super().__init__(daemon=True, name=name)
        self.url = url
        self.callback = callback
        self.channel = channel
        self.connect_timeout = connect_timeout
        self.connected = threading.Event()
        """Set while the LISTEN connection is up (tests and readiness may wait on it)."""
        self.connections = 0
        """How many times a LISTEN connection was made (1 + the reconnections)."""
        self._stopping = threading.Event()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        delay = RETRY_MIN
        while not self._stopping.is_set():
            try:
                self._listen()
                delay = RETRY_MIN
            except psycopg.Error as error:
                if delay == RETRY_MIN:  # once per outage, not once per retry
                    log.warning(
                        "activation listener: %s: %s; retrying",
                        describe(self.url),
                        first_line(error),
                    )
                self.connected.clear()
                self._stopping.wait(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _listen(self) -> None:
        with psycopg.connect(
            self.url,
            autocommit=True,
            **connect_kwargs(self.connect_timeout, self.name),
        ) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.connections += 1
            self.connected.set()
            if self.connections > 1:
                log.info("activation listener reconnected to %s", describe(self.url))
            self._deliver(None)  # anything sent while we were away is lost: look now
            pinged = time.monotonic()
            while not self._stopping.is_set():
                for notify in conn.notifies(timeout=WAIT):
                    self._deliver(notify.payload)
                if time.monotonic() - pinged > PING_EVERY:
                    conn.execute("")  # a dead peer that sent no FIN shows here
                    pinged = time.monotonic()
        self.connected.clear()

    def _deliver(self, version: str | None) -> None:
        try:
            self.callback(version)
        except Exception:  # the callback's failure must not end the listener
            log.exception("activation listener: the callback failed for %s", version)


def listen(url: str, callback: Callable[[str | None], None]) -> Listener:
    """Start a :class:`Listener` and return it (call ``stop()`` at shutdown)."""
    listener = Listener(url, callback)
    listener.start()
    return listener

"""Worker process life: a worker of a multi-worker server ends when its supervisor is gone."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

log = logging.getLogger("iris.service")
PARENT_CHECK_SECONDS = 0.5


def watch_parent(interval: float = PARENT_CHECK_SECONDS) -> threading.Event | None:
    """In a worker spawned by the multi-worker supervisor, SIGTERM ourselves once it is gone.

    After a ``kill -9`` of the supervisor its workers are re-parented (to PID 1 or a
    subreaper) and would keep serving and holding the port. The SIGTERM takes the graceful
    path: in-flight requests finish, training children are stopped. Returns the event that
    stops the watch, or None in a single-process server (nothing to watch).
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    parent_pid = parent.pid
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                log.error(
                    "the server's main process %d is gone: this worker shuts down", parent_pid
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    return stop

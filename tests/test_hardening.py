"""Issue 10 hardening against a real ``iris-serve``: orphan workers, a locked jobs database,
file modes, model follow-up across workers.

Every server runs on 127.0.0.1 with its own data directory and is always stopped (see
tests/server_utils.py); waits are bounded polls with deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_utils import (
    ROOT,
    ServerProcess,
    proc_alive,
    serve_command,
    server_pool,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.slow

TOKEN = "hardening-test-token-0123456789abcdef"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``serve(workers=1, data_dir=None, **env)``: an iris-serve, always stopped."""
    with server_pool(tmp_path) as start_server:

        def start(workers: int = 1, data_dir: Path | None = None, **env: str) -> ServerProcess:
            settings = {"IRIS_WORKERS": str(workers), "IRIS_API_TOKEN": TOKEN} | env
            return start_server(data_dir, settings)

        yield start


# -- orphan workers --------------------------------------------------------------------------


def test_workers_exit_when_the_main_process_is_killed_and_the_port_is_free_again(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve(workers=2)
    workers = worker_pids(server.pid)
    assert len(workers) == 2, workers
    os.kill(server.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: not any(proc_alive(pid) for pid in workers),
        10.0,
        "both workers exited after the main process was killed",
    )
    print(f"workers gone {time.monotonic() - killed:.2f} s after kill -9 of the main process")
    # A new server on the same port starts (the old workers no longer hold it).
    again = ServerProcess(tmp_path / "data", tmp_path / "again.log", server.extra_env)
    again.port = server.port
    try:
        with open(again.log_path, "ab") as log:
            again.proc = subprocess.Popen(
                serve_command(),
                cwd=ROOT,
                env=again.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert again.wait_ready(20.0), again.log()
    finally:
        again.stop()

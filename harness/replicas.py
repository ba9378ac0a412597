"""Several ``iris-serve`` replicas on one PostgreSQL database, with HAProxy in front.

Used by tests/test_replicas.py and bench/bench_replicas.py::

    replicas = ReplicaSet(database_url, workdir, count=3).start()
    try:
        httpx.post(f"{replicas.balancer_url}/predict", json=PREDICT)
        replicas.serving(replicas.servers[0])       # the version one replica serves
    finally:
        replicas.stop()

Every replica is a real process (``ServerProcess``) with its own empty data directory, the
same database URL and the same API token; the balancer is ``tests/haproxy.py``'s HAProxy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness.haproxy import HAProxy
from harness.servers import DeadlineError, ServerProcess, cmdline, descendants, wait_for

TOKEN = "replicas-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PREDICT = {"instances": [ROW]}
TERMINAL = ("succeeded", "failed", "cancelled")


class ReplicaSet:
    """``count`` replicas of the service on ``database_url`` and one HAProxy in front."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        count: int = 3,
        heartbeat_timeout: float = 2.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.count = count
        self.env = {
            "IRIS_DATABASE_URL": database_url,
            "IRIS_API_TOKEN": TOKEN,
            "IRIS_JOB_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
            "IRIS_LOG_LEVEL": "warning",
        } | dict(extra_env or {})
        self.servers: list[ServerProcess] = []
        self.balancer: HAProxy | None = None
        self._started = 0

    @property
    def balancer_url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    def _new_server(self) -> ServerProcess:
        self._started += 1
        data_dir = self.workdir / f"replica-{self._started}"
        data_dir.mkdir(parents=True)
        log = self.workdir / f"replica-{self._started}.log"
        return ServerProcess(data_dir, log, self.env).start()

    def _start_balancer(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        self.balancer = HAProxy([s.port for s in self.servers], self.workdir / "haproxy")
        self.balancer.start()
        wait_for(self.balancer.stats_socket.exists, 10.0, "HAProxy's stats socket")
        self.balancer.wait_servers_up(len(self.servers), seconds=15.0)

    def start(self) -> ReplicaSet:
        try:
            # One after the other: the first creates the schema and the default model.
            for _ in range(self.count):
                self.servers.append(self._new_server())
            self._start_balancer()
        except BaseException:
            self.stop()
            raise
        return self

    def replace_dead(self) -> list[int]:
        """Start a fresh replica (new empty data directory) for each one that exited."""
        replaced = []
        for index, server in enumerate(self.servers):
            if server.proc is None or server.proc.poll() is not None:
                server.stop()
                self.servers[index] = self._new_server()
                replaced.append(index)
        if replaced or self.balancer is None or not self.balancer.running():
            self._start_balancer()
        return replaced

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
            self.balancer = None
        for server in self.servers:
            server.stop()

    def logs(self) -> str:
        return "\n".join(
            f"===== {s.log_path.name} (port {s.port})\n{s.log()[-4000:]}" for s in self.servers
        )

    # -- asking replicas --------------------------------------------------------------------

    @staticmethod
    def serving(server: ServerProcess, client: httpx.Client | None = None) -> str:
        """The version that answers a one-row /predict on this replica, asked directly."""
        if client is None:
            with httpx.Client(timeout=5.0) as own:
                return ReplicaSet.serving(server, own)
        answer = client.post(f"{server.url}/predict", json=PREDICT)
        answer.raise_for_status()
        version: str = answer.json()["model_version"]
        return version

    def wait_all_serve(
        self, version: str, seconds: float, servers: list[ServerProcess] | None = None
    ) -> dict[int, float]:
        """Poll every replica directly until each serves ``version``.

        Returns each replica's index and the wall-clock time (``time.time()``) its first
        answer with ``version`` arrived. Raises DeadlineError naming what each served.
        """
        servers = self.servers if servers is None else servers
        seen: dict[int, float] = {}
        last: dict[int, str] = {}
        deadline = time.monotonic() + seconds
        with httpx.Client(timeout=2.0) as client:
            while True:
                for index, server in enumerate(servers):
                    if index in seen:
                        continue
                    served = self.serving(server, client)
                    last[index] = served
                    if served == version:
                        seen[index] = time.time()
                if len(seen) == len(servers):
                    return seen
                if time.monotonic() > deadline:
                    raise DeadlineError(
                        f"not every replica served {version} within {seconds:g} s: {last}"
                    )
                time.sleep(0.005)

    def follow_job(
        self, client: httpx.Client, job_id: str, old_version: str, seconds: float
    ) -> tuple[dict[str, Any], dict[int, float]]:
        """Poll the job and every replica until the job ends and, if it made a new current
        version, every replica serves it; returns the job and each replica's first-seen time
        of a version other than ``old_version``."""
        seen: dict[int, float] = {}
        versions: dict[int, str] = {}
        deadline = time.monotonic() + seconds
        job: dict[str, Any] = {}
        with httpx.Client(timeout=2.0) as replica_client:
            while True:
                job = client.get(f"/train/{job_id}").json()
                for index, server in enumerate(self.servers):
                    if index not in seen:
                        served = self.serving(server, replica_client)
                        if served != old_version:
                            seen[index] = time.time()
                            versions[index] = served
                ended = job.get("status") in TERMINAL
                if ended and (not job.get("activated") or len(seen) == len(self.servers)):
                    break
                if time.monotonic() > deadline:
                    raise DeadlineError(
                        f"job {job_id} and its version on every replica: not within "
                        f"{seconds:g} s (job {job.get('status')}, new versions seen {versions})"
                    )
                time.sleep(0.005)
        if job.get("activated"):
            assert set(versions.values()) == {job["model_version"]}, (versions, job)
        return job, seen

    def training_owner(self) -> tuple[int, int] | None:
        """The index of the replica whose training child runs, and that child's pid."""
        for index, server in enumerate(self.servers):
            if server.proc is None or server.proc.poll() is not None:
                continue
            for pid in descendants(server.pid):
                if "service.worker" in cmdline(pid):
                    return index, pid
        return None

    def kill(self, index: int, child_pid: int | None = None) -> None:
        """SIGKILL a replica's process group, and its training child's (a session of its own)."""
        server = self.servers[index]
        assert server.proc is not None
        for group in (server.pid, child_pid):
            if group is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        server.proc.wait(10)


def finished_at(job: dict[str, Any]) -> float:
    """The job's ``finished_at`` (the database server's clock) as a Unix time."""
    return datetime.fromisoformat(job["finished_at"]).timestamp()

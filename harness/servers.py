"""The one launcher of server processes for tests and benchmarks.

A :class:`ServerProcess` starts the ``iris-serve`` console script (or another command: the
benchmark's ceiling app, a peer server) on a free port of 127.0.0.1 with its own data
directory, waits for its readiness path, and always stops it again. Every process it starts (the
server, its uvicorn workers, their training children, which run in sessions of their own)
carries a marker in its environment, so :func:`kill_marked` finds and ends any of them that
outlived a test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
MARKER = "IRIS_SERVER_PROCESS_TEST"
READY_SECONDS = 20.0
STOP_SECONDS = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


class DeadlineError(AssertionError):
    """A condition polled for did not hold before its deadline."""


def wait_for(probe: Callable[[], T | None], seconds: float, what: str, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something other than None (or False); bounded."""
    deadline = time.monotonic() + seconds
    last: T | None = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise DeadlineError(f"{what}: not within {seconds:g} s (last probe: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_command() -> list[str]:
    """The installed ``iris-serve`` console script next to this interpreter, or ``-m service``."""
    script = Path(sys.executable).with_name("iris-serve")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "service"]


# -- processes, found through /proc ------------------------------------------------------------


def proc_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def marked_pids(marker_value: str) -> list[int]:
    """Live processes whose environment carries ``MARKER=marker_value``."""
    needle = f"{MARKER}={marker_value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and proc_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_marked(marker_value: str) -> list[int]:
    """SIGKILL every live process carrying the marker; returns their pids."""
    pids = marked_pids(marker_value)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def worker_pids(server_pid: int) -> set[int]:
    """The uvicorn workers of a multi-worker server (the server itself when it has one)."""
    spawned = {pid for pid in descendants(server_pid) if "--multiprocessing-fork" in cmdline(pid)}
    return spawned or {server_pid}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` itself (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextlib.contextmanager
def spinning(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` busy loops at normal priority (other load on the machine), each spinning
    once it has said so; killed on the way out."""
    spin = "import sys; print(flush=True); sys.stdout.close()\nwhile True: pass"
    spinners = [
        subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE) for _ in range(count)
    ]
    try:
        for spinner in spinners:
            assert spinner.stdout is not None
            spinner.stdout.readline()
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.communicate()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and every live process below it."""
    total = 0.0
    for member in {pid} | descendants(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def loadavg() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def uptime() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip()
    return f"load average: {loadavg()}"


def server_end(server_port: int, client_port: int) -> list[str] | None:
    """The /proc/net/tcp row (split in fields) of the server end of a connection to
    127.0.0.1: local port ``server_port``, remote port ``client_port``; None when gone."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    found = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[1].endswith(local) and fields[2].endswith(remote):
                    found = fields
    return found


def unread_bytes(server_port: int, client_port: int) -> int | None:
    """What the client sent on that connection and the server has not read yet (the receive
    queue of the server end); None once the connection is gone."""
    fields = server_end(server_port, client_port)
    return None if fields is None else int(fields[4].split(":")[1], 16)


def server_connections(server_port: int) -> int:
    """Connections to 127.0.0.1:``server_port`` whose server end the server has not closed
    yet: ESTABLISHED (01), SYN_RECV (03) or CLOSE_WAIT (08, the client has closed its end)."""
    local = f":{server_port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[1].endswith(local) and fields[3] in ("01", "03", "08"):
                    count += 1
    return count


def socket_owner(server_port: int, client_port: int, candidates: set[int]) -> int | None:
    """The process among ``candidates`` holding the server end of a connection to 127.0.0.1.

    The server side of the connection is the /proc/net/tcp row whose local port is
    ``server_port`` and whose remote port is ``client_port``; its inode names the socket
    that one worker's file descriptor table points at.
    """
    fields = server_end(server_port, client_port)
    if fields is None:
        return None
    inode = fields[9]
    target = f"socket:[{inode}]"
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
    return None


# -- the jobs database, read directly --------------------------------------------------------


def job_pid(jobs_db: Path, job_id: str) -> int | None:
    """The training child's pid recorded in the job row (the API does not show it)."""
    db = sqlite3.connect(f"file:{jobs_db}?mode=ro", uri=True, timeout=5.0)
    try:
        row = db.execute("SELECT pid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        db.close()
    return None if row is None or row[0] is None else int(row[0])


def job_row(jobs_db: Path, job_id: str) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{jobs_db}?mode=ro", uri=True, timeout=5.0)
    try:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        db.close()
    if row is None:
        raise AssertionError(f"no job {job_id} in {jobs_db}")
    return dict(row)


# -- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """What it takes to start a server other than iris-serve: command, environment, cwd."""

    command: list[str]
    env: dict[str, str]
    cwd: Path


class ServerProcess:
    """``iris-serve`` in a process group of its own, logging to ``log_path``.

    ``command`` runs another program the same way (in the repository, with the same
    environment); ``launch``, where given, makes the command, environment and working
    directory for a port (peers take their ports their own way). ``ready_path`` is polled
    every ``ready_interval`` seconds; ``ready_seconds`` is then the time from the process
    start to its first 200.
    """

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        name: str = "iris-serve",
        command: list[str] | None = None,
        launch: Callable[[int], Launch] | None = None,
        ready_path: str = "/readyz",
        ready_interval: float = 0.05,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.name = name
        self.command = command
        self.launch = launch
        self.ready_path = ready_path
        self.ready_interval = ready_interval
        self.ready_seconds = math.nan
        self.marker = uuid.uuid4().hex
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = self.extra_env.get("IRIS_API_TOKEN")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def jobs_db(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return "(no log)"

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("IRIS_") and key != "PROMETHEUS_MULTIPROC_DIR"
        }
        env |= {
            "IRIS_DATA_DIR": str(self.data_dir),
            # no gRPC unless a test asks: servers of one run must not share a gRPC port
            "IRIS_GRPC_PORT": "0",
            "IRIS_HOST": "127.0.0.1",
            "IRIS_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            MARKER: self.marker,
        }
        return env | self.extra_env

    def launching(self) -> Launch:
        """The command, environment and directory for a start on ``self.port``."""
        if self.launch is not None:
            launch = self.launch(self.port)
            return Launch(launch.command, launch.env | {MARKER: self.marker}, launch.cwd)
        return Launch(self.command or serve_command(), self.environment(), ROOT)

    def start(self, ready_seconds: float = READY_SECONDS) -> ServerProcess:
        """Start on a free port and wait for readiness; retries when the port was taken."""
        for _ in range(3):
            self.port = free_port()
            if self.spawn(ready_seconds):
                return self
            if "address already in use" not in self.log().lower():
                break
        self.stop()
        raise AssertionError(f"{self.name} did not become ready; its log:\n{self.log()}")

    def restart(self, ready_seconds: float = READY_SECONDS) -> ServerProcess:
        """Start again, stopped, on the port it had (as a restarted deployment comes back)."""
        if not self.spawn(ready_seconds):
            self.stop()
            raise AssertionError(f"{self.name} did not come back; its log:\n{self.log()}")
        return self

    def spawn(self, ready_seconds: float) -> bool:
        """Start on ``self.port``; whether it became ready."""
        launch = self.launching()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name} on port {self.port}\n".encode())
            log.flush()
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                launch.command,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not self.wait_ready(ready_seconds):
            return False
        self.ready_seconds = time.perf_counter() - started
        return True

    def wait_ready(self, seconds: float) -> bool:
        """True once the readiness path answers 200; False if the process exited first."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.ready_path).status_code == 200:
                        return True
                time.sleep(self.ready_interval)
        raise AssertionError(
            f"{self.name}: {self.ready_path} not 200 within {seconds:g} s; log:\n{self.log()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the group; then kill anything else that carries the marker."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(DeadlineError):
            wait_for(lambda: not kill_marked(self.marker), 5.0, "leftover processes killed")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)

    def auth(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        assert token is not None, "no API token known for this server"
        return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def running_server(
    data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, log_path, env)
    try:
        yield server.start()
    finally:
        server.stop()


def post_fresh_connection(
    server: ServerProcess,
    path: str,
    body: dict[str, Any],
    workers: set[int] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], int | None]:
    """POST on a new TCP connection (with ``headers`` besides the JSON content type); returns
    status, JSON body and the worker pid that answered.

    The worker (one of ``workers``, default every process below the server) is found while
    the connection is still open: the server keeps it alive after answering.
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10.0)
    try:
        conn.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        payload = json.loads(response.read())
        client_port = conn.sock.getsockname()[1] if conn.sock is not None else -1
        worker = socket_owner(server.port, client_port, workers or descendants(server.pid))
        return response.status, payload, worker
    finally:
        conn.close()


@contextlib.contextmanager
def server_pool(tmp_path: Path) -> Iterator[Callable[[Path | None, dict[str, str]], ServerProcess]]:
    """``start(data_dir, env)`` starts iris-serve; every server is stopped and its log shown."""
    servers: list[ServerProcess] = []

    def start(data_dir: Path | None, env: dict[str, str]) -> ServerProcess:
        log = tmp_path / f"server-{len(servers)}.log"
        server = ServerProcess(data_dir or tmp_path / "data", log, env)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            print(f"===== {server.log_path.name} (port {server.port})\n{server.log()}")

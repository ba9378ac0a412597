"""A real HAProxy in front of local backends, for tests with several replicas.

:class:`HAProxy` writes a configuration for a list of backend ports on 127.0.0.1 (round
robin, health checks with ``GET /readyz``, retries that move to another backend, bounded
timeouts), starts ``haproxy -f CFG -db`` as a child process that stays in the foreground,
waits until it accepts connections, and stops it again::

    with HAProxy([port_a, port_b, port_c], tmp_path) as balancer:
        balancer.wait_servers_up(3)
        httpx.post(f"{balancer.url}/predict", json=...)

Retries: a request that could not be sent, or that found its backend gone before any answer
(a replica killed or stopping), or that got 503, is tried again on another backend, but only
when repeating it changes nothing: GET and HEAD, and the POSTs that only compute
(``/predict``, ``/gradients``, v2 ``infer``). Training, cancelling and activating are never
sent twice. ``server_states`` reads each backend's state from HAProxy's stats socket.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from harness.programs import require
from harness.servers import free_port, wait_for

START_SECONDS = 10.0
STOP_SECONDS = 5.0


def config_text(
    backends: Sequence[int],
    port: int,
    stats_socket: Path,
    check_interval_ms: int = 200,
    retries: int = 3,
    *,
    grpc: tuple[int, Sequence[int]] | None = None,
) -> str:
    """An HAProxy configuration: 127.0.0.1:``port`` in front of 127.0.0.1:``backends``; with
    ``grpc`` (a port, and the backends' gRPC ports in the same order), gRPC in front of those
    too, over HTTP/2, each backend checked on its HTTP port."""
    servers = "\n".join(
        f"    server replica{index} 127.0.0.1:{backend} check"
        for index, backend in enumerate(backends)
    )
    head = http_config(backends, port, stats_socket, check_interval_ms, retries, servers=servers)
    return head + ("" if grpc is None else grpc_config(backends, *grpc, check_interval_ms))


def grpc_config(
    backends: Sequence[int], port: int, grpc_backends: Sequence[int], check_interval_ms: int
) -> str:
    servers = "\n".join(
        f"    server replica{index} 127.0.0.1:{grpc} proto h2 check port {http} check-proto h1"
        for index, (http, grpc) in enumerate(zip(backends, grpc_backends, strict=True))
    )
    return f"""
# The Open Inference Protocol over gRPC: HTTP/2 without TLS (h2c) from clients and to the
# replicas, each call balanced on its own (not each connection). A replica is in while its
# HTTP /readyz is 200, the check above, which the gRPC health service follows.
frontend front_grpc
    bind 127.0.0.1:{port} proto h2
    default_backend replicas_grpc

backend replicas_grpc
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter {check_interval_ms}ms fastinter {check_interval_ms}ms \
downinter {check_interval_ms}ms fall 2 rise 2 observe layer4 error-limit 1 \
on-error mark-down
{servers}
"""


def http_config(
    backends: Sequence[int],
    port: int,
    stats_socket: Path,
    check_interval_ms: int,
    retries: int,
    *,
    servers: str,
) -> str:
    return f"""\
global
    maxconn 2048
    stats socket {stats_socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # The whole request, body included, is read before a backend is chosen: slow clients
    # never hold a replica, and a request kept whole can be retried on another backend.
    option http-buffer-request
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 1s
    retries {retries}
    # Every retry goes to another backend, not only the last one.
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend front
    bind 127.0.0.1:{port}
    # Requests that change state are never replayed on another backend.
    acl pure_post path /predict /gradients
    acl pure_post path_reg ^/v2/models/[^/]+(/versions/[^/]+)?/infer$
    http-request disable-l7-retry if !METH_GET !pure_post
    default_backend replicas

backend replicas
    balance roundrobin
    http-reuse safe
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    # Out after two failed checks, or at once when live traffic cannot connect;
    # back after two good checks. Requests already on a backend that is marked down run
    # to their end: a replica that stops drains what it has.
    default-server inter {check_interval_ms}ms fastinter {check_interval_ms}ms \
downinter {check_interval_ms}ms fall 2 rise 2 observe layer4 error-limit 1 \
on-error mark-down
{servers}
"""


def check_config(path: Path) -> str:
    """``haproxy -c -f path``: its output; raises AssertionError when HAProxy refuses it."""
    haproxy = require("haproxy")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise AssertionError(f"haproxy -c -f {path} refused it ({result.returncode}):\n{output}")
    return output


class HAProxy:
    """One HAProxy process in front of ``backends`` (ports on 127.0.0.1)."""

    def __init__(
        self,
        backends: Sequence[int],
        workdir: Path,
        check_interval_ms: int = 200,
        retries: int = 3,
        grpc_backends: Sequence[int] = (),
    ) -> None:
        self.backends = list(backends)
        self.grpc_backends = list(grpc_backends)
        self.grpc_port = free_port() if grpc_backends else None
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "haproxy.cfg"
        # A Unix socket path has room for about 100 bytes: a short directory of its own,
        # not the test's (often long) tmp_path.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="haproxy-"))
        self.stats_socket = self.socket_dir / "stats.sock"
        self.log_path = workdir / "haproxy.log"
        self.check_interval_ms = check_interval_ms
        self.retries = retries
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_names(self) -> list[str]:
        return [f"replica{index}" for index in range(len(self.backends))]

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            config_text(
                self.backends,
                self.port,
                self.stats_socket,
                self.check_interval_ms,
                self.retries,
                grpc=None if self.grpc_port is None else (self.grpc_port, self.grpc_backends),
            )
        )
        return self.config_path

    def start(self) -> HAProxy:
        haproxy = require("haproxy")
        check_config(self.write_config())
        with self.log_path.open("ab") as log:
            # -db: stay in the foreground, never fork into the background, so that this
            # object owns the one process and can stop it.
            self.process = subprocess.Popen(
                [haproxy, "-f", str(self.config_path), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self._accepts, START_SECONDS, f"haproxy accepting on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"haproxy exited with {self.process.returncode} at start:\n{self.log()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """SIGTERM (HAProxy's immediate stop), SIGKILL if it is still there after 5 s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_SECONDS)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("haproxy is not running")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the stats socket ----------------------------------------------------------------------

    def command(self, line: str) -> str:
        """One command on the admin socket (``show stat``, ``disable server replicas/x``...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(os.fspath(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self, backend: str = "replicas") -> dict[str, str]:
        """Each server's status in ``backend`` as HAProxy sees it: UP, DOWN, ``UP 1/2``..."""
        text = self.command("show stat").lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row.get("pxname") == backend and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def check_results(self, backend: str = "replicas") -> dict[str, str]:
        """Each server's last health check in ``backend``: L7OK once one has passed."""
        text = self.command("show stat").lstrip("# ")
        return {
            row["svname"]: row["check_status"]
            for row in csv.DictReader(io.StringIO(text))
            if row.get("pxname") == backend and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def wait_servers_up(
        self, count: int, seconds: float = 10.0, backend: str = "replicas"
    ) -> dict[str, str]:
        """Wait until ``count`` servers of ``backend`` are UP; returns the states."""

        def probe() -> dict[str, str] | None:
            states = self.server_states(backend)
            up = sum(1 for state in states.values() if state == "UP")
            return states if up >= count else None

        return wait_for(probe, seconds, f"{count} backends UP behind haproxy", interval=0.05)

    def wait_server_down(self, name: str, seconds: float = 10.0) -> None:
        wait_for(
            lambda: self.server_states().get(name, "").startswith(("DOWN", "MAINT")),
            seconds,
            f"haproxy marking {name} down",
            interval=0.05,
        )

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

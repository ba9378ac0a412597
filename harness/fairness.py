"""Clients that compete for a server, for the fairness tests: a one-row probe, large uploads.

:class:`Probe` sends one-row /predict requests on fresh connections, one after another, and
keeps each answer's time and status; :class:`Upload` declares a 16 MiB body and sends it in
one of three ways (nothing, a trickle under the rate floor, as fast as it can).
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from harness.api import ROW
from harness.servers import ServerProcess, wait_for

MiB = 2**20
DECLARED = 16 * MiB  # the default IRIS_MAX_BODY_BYTES
PREDICT = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
)
ROW_BODY = httpx.Request("POST", "http://x", json={"instances": [ROW]}).content


def status_of(answer: bytes) -> int:
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


@contextlib.contextmanager
def unharmed(process: ServerProcess) -> Iterator[ServerProcess]:
    """``process`` for a module of tests; at the end it must still answer a one-row /predict
    with 200 and have no traceback in its log. Stopped in any case."""
    try:
        yield process
        with process.client() as http:
            assert http.post("/predict", json={"instances": [ROW]}).status_code == 200
        assert "Traceback" not in process.log(), process.log()
    finally:
        process.stop()


@dataclass
class Probe:
    """One-row predictions on fresh connections, one after another, until stopped."""

    port: int
    seconds: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        request = PREDICT % (len(ROW_BODY), ROW_BODY)
        while not self.stop.is_set():
            started = time.perf_counter()
            answer = exchange(self.port, request)
            self.seconds.append(time.perf_counter() - started)
            self.statuses.append(status_of(answer))

    @contextlib.contextmanager
    def running(self, at_least: int = 20) -> Iterator[Probe]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
            wait_for(lambda: len(self.statuses) >= at_least or None, 30, "probe answers")
        finally:
            self.stop.set()
            thread.join(30)

    def check(self, what: str) -> None:
        median = statistics.median(self.seconds)
        worst = max(self.seconds)
        print(
            f"\n{what}: {len(self.statuses)} one-row /predict, median {median * 1000:.1f} ms, "
            f"max {worst * 1000:.0f} ms, statuses {sorted(set(self.statuses))}"
        )
        assert set(self.statuses) == {200}, self.statuses
        assert median < 0.1, f"median {median * 1000:.0f} ms"


def exchange(port: int, data: bytes, seconds: float = 30.0) -> bytes:
    """Send ``data`` on a new connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


class Upload:
    """A POST /predict declaring DECLARED bytes, sent in one of three ways; its answer."""

    def __init__(self, port: int, how: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.how = how
        self.answer = b""
        self.sent = 0
        self.ended = 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        head = (
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED}\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            self.sock.sendall(head)
            if self.how == "fast":
                piece = b" " * (256 * 1024)
                while self.sent < DECLARED:
                    self.sock.sendall(piece)
                    self.sent += len(piece)
            elif self.how == "slow":  # 500 bytes a second, under the 4096 floor
                while self.sent < DECLARED and not self.answered():
                    self.sock.sendall(b" " * 50)
                    self.sent += 50
        with contextlib.suppress(OSError):
            self.sock.settimeout(30)
            while chunk := self.sock.recv(65536):
                self.answer += chunk
        self.ended = time.monotonic()
        self.sock.close()

    def answered(self) -> bool:
        self.sock.settimeout(0.1)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        self.answer += chunk
        return True

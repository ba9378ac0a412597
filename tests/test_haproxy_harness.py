"""harness/haproxy.py: a real HAProxy spreads requests, drops dead backends, retries safely.

Two small HTTP servers from the standard library, in threads on free ports, stand in for
replicas; each answers with its own name and counts what it received.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from harness.haproxy import HAProxy, check_config, config_text
from harness.servers import wait_for

pytestmark = pytest.mark.haproxy

REQUESTS = 40
# A fake backend's deliberate delay on /slow: the request is still in flight while the test
# takes that backend out of the balancer.
SLOW_SECONDS = 1.0


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A peer that hangs up early (HAProxy after a health check's status) is expected."""


class Backend:
    """A stand-in replica: ``/readyz``, and any other path answered with the backend's name.

    ``ready`` False makes /readyz answer 503. ``drop_posts`` makes it close the connection on
    every POST without answering, as a replica killed mid-request does.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.drop_posts = False
        self.hits: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so HAProxy reuses connections
            wbufsize = 65536  # headers and body leave in one write, not two small ones

            def setup(self) -> None:
                super().setup()
                with backend.lock:
                    backend.connections.add(self.connection)

            def finish(self) -> None:
                with backend.lock:
                    backend.connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

            def do_GET(self) -> None:
                if self.path == "/readyz":
                    self.answer(200 if backend.ready else 503, b"ready")
                    return
                self.count()
                if self.path == "/slow":
                    time.sleep(SLOW_SECONDS)
                self.answer(200, backend.name.encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.count()
                if backend.drop_posts:
                    self.close_connection = True
                    return  # no answer at all: the client side sees an empty response
                self.answer(200, backend.name.encode())

            def count(self) -> None:
                with backend.lock:
                    backend.hits[self.path] += 1
                    backend.request_ids.append(self.headers.get("X-Request-Id", ""))

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop_listening(self) -> None:
        """As a replica that got SIGTERM: no new connections, requests in flight go on."""
        self.server.shutdown()
        self.server.socket.close()

    def stop(self) -> None:
        """Gone as a killed process is: no listener, and every open connection cut."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=5)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend("a"), Backend("b")]
    yield started
    for backend in started:
        if backend.thread.is_alive():
            backend.stop()


@pytest.fixture
def balancer(backends: list[Backend], tmp_path: Path) -> Iterator[HAProxy]:
    with HAProxy([b.port for b in backends], tmp_path) as proxy:
        proxy.wait_servers_up(len(backends))
        yield proxy


def test_the_written_configuration_passes_haproxy_check(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config_text([8001, 8002, 8003], 8000, tmp_path / "sock"))
    check_config(path)


def test_check_config_rejects_a_broken_configuration(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    text = config_text([8001], 8000, tmp_path / "sock")
    path.write_text(text.replace("balance roundrobin", "balance roundrobbin"))
    with pytest.raises(AssertionError, match="balance only supports"):
        check_config(path)


def test_requests_reach_every_backend(balancer: HAProxy, backends: list[Backend]) -> None:
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        answers = Counter(client.get("/who").text for _ in range(REQUESTS))
    assert answers == {"a": REQUESTS // 2, "b": REQUESTS // 2}
    assert [b.hits["/who"] for b in backends] == [REQUESTS // 2, REQUESTS // 2]


def test_a_stopped_backend_is_taken_out(balancer: HAProxy, backends: list[Backend]) -> None:
    _, b = backends
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        assert {client.get("/who").text for _ in range(4)} == {"a", "b"}
        b.stop()
        # At once, before any health check has noticed: every request is answered, by a.
        answers = [client.get("/who") for _ in range(REQUESTS)]
    assert [r.status_code for r in answers] == [200] * REQUESTS
    assert {r.text for r in answers} == {"a"}
    balancer.wait_server_down("replica1")
    assert balancer.server_states()["replica0"] == "UP"


def test_a_request_in_flight_on_a_stopping_backend_is_answered(
    balancer: HAProxy, backends: list[Backend]
) -> None:
    """Marking a backend down never cuts what it is still answering (a replica draining)."""
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=balancer.url, timeout=5) as slow_client:
        slow = threading.Thread(target=lambda: answers.append(slow_client.get("/slow")))
        slow.start()
        busy = wait_for(
            lambda: next((b for b in backends if b.hits["/slow"]), None), 5, "the slow request"
        )
        busy.stop_listening()
        with httpx.Client(base_url=balancer.url, timeout=5) as client:
            others = [client.get("/who") for _ in range(10)]
        balancer.wait_server_down(f"replica{backends.index(busy)}")
        slow.join(timeout=10)
    assert [r.status_code for r in others] == [200] * 10
    assert {r.text for r in others} == {b.name for b in backends if b is not busy}
    assert [(r.status_code, r.text) for r in answers] == [(200, busy.name)]


def test_a_backend_that_is_not_ready_gets_no_requests(
    balancer: HAProxy, backends: list[Backend]
) -> None:
    _, b = backends
    b.ready = False
    balancer.wait_server_down("replica1")
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        assert {client.get("/who").text for _ in range(10)} == {"a"}
    b.ready = True
    balancer.wait_servers_up(2)
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        assert {client.get("/who").text for _ in range(10)} == {"a", "b"}


def test_a_prediction_lost_with_its_backend_is_retried_elsewhere(
    balancer: HAProxy, backends: list[Backend]
) -> None:
    _, b = backends
    b.drop_posts = True
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        answers = [client.post("/predict", json={"instances": []}) for _ in range(10)]
    assert [r.status_code for r in answers] == [200] * 10
    assert {r.text for r in answers} == {"a"}
    assert b.hits["/predict"] >= 1, "b never got a request: the retry was not exercised"


def test_a_training_request_is_never_sent_twice(balancer: HAProxy, backends: list[Backend]) -> None:
    a, b = backends
    b.drop_posts = True
    statuses = []
    with httpx.Client(base_url=balancer.url, timeout=5) as client:
        for _ in range(10):
            request_id = uuid.uuid4().hex
            try:
                response = client.post("/train", json={}, headers={"X-Request-Id": request_id})
                statuses.append(response.status_code)
            except httpx.RemoteProtocolError:
                # On a kept-alive client connection HAProxy passes the backend's silence on
                # by closing the client connection instead of answering 502.
                statuses.append(0)
    delivered = Counter(a.request_ids + b.request_ids)
    assert len(delivered) == 10
    assert set(delivered.values()) == {1}, f"a request went to more than one backend: {delivered}"
    # The ones b swallowed were answered with an error instead of a replay on a.
    assert statuses.count(200) == a.hits["/train"]
    assert b.hits["/train"] >= 1
    assert all(status in {0, 200, 502} for status in statuses), statuses


def test_stop_ends_the_process(backends: list[Backend], tmp_path: Path) -> None:
    proxy = HAProxy([b.port for b in backends], tmp_path).start()
    pid = proxy.pid
    assert proxy.running()
    proxy.stop()
    assert not proxy.running()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", proxy.port)) != 0

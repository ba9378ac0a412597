"""client/ against hostile servers: raw sockets on 127.0.0.1 that trickle, flood, compress
bombs, redirect, or answer with control characters, markup and malformed documents.

Each server is a thread in this process, so a test can count what it managed to send and
wait for the client to hang up, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from iris_client import (
    AsyncIrisClient,
    ConnectionFailedError,
    IrisClient,
    ProtocolError,
    RetryPolicy,
    UnavailableError,
)
from iris_client._core import Answer, retry_after
from iris_client.cli import cli

MiB = 2**20
JOB_ID = "5c0f8f7d2b8e4f0c9a1e6f2d3b4a5c6d"
LIMITS = {"max_instances": 100, "max_body_bytes": MiB, "max_train_rows": 1000}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CSV = "sepal_length,sepal_width,petal_length,petal_width\n" + "".join(
    ",".join(map(str, row)) + "\n" for row in ROWS
)
# What a terminal acts on: none of it may reach the output.
OSC52 = "\x1b]52;c;aWQgPiAvdG1wL3B3bmVk\x07"  # write the clipboard
CLEAR = "\x1b[2J\x1b[H"
NO_RETRY = RetryPolicy(attempts=1)


# -- a raw HTTP server -----------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HungUpError(Exception):
    """The client closed the connection while the server was still sending."""


@dataclass
class Hostile:
    """One thread per connection; ``answer(request, server, conn)`` writes raw bytes.

    ``sent`` counts every byte written after the request; ``hung_up`` is set when a write
    fails because the client went away. Every answer closes its connection.
    """

    answer: Callable[[Request, Hostile, socket.socket], None]
    sent: int = 0
    requests: list[Request] = field(default_factory=list)
    hung_up: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Hostile:
        accept = threading.Thread(target=self.accept, daemon=True)
        accept.start()
        self.threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(5)

    def accept(self) -> None:
        self.listener.settimeout(0.05)  # a closed socket does not wake a blocked accept()
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = read_request(conn)
                with self.lock:
                    self.requests.append(request)
                self.answer(request, self, conn)
            except (HungUpError, OSError):
                pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        try:
            conn.sendall(data)
        except OSError:
            self.hung_up.set()
            raise HungUpError from None
        with self.lock:
            self.sent += len(data)

    def pause(self, seconds: float) -> None:
        """Wait between writes, cut short when the test ends."""
        if self.stop.wait(seconds):
            raise HungUpError


def read_request(conn: socket.socket) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise HungUpError
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += conn.recv(65536)
    method, path, _ = line.split(" ", 2)
    return Request(method, path, headers, body)


def head(status: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole(status: int, body: Any, headers: dict[str, str] | None = None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    more = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    return head(status, more | (headers or {})) + data


def routes(table: Mapping[str, bytes | Callable[[Request, Hostile, socket.socket], None]]) -> Any:
    """An ``answer`` by path: a fixed answer, or a function for the path; else a 404."""

    def answer(request: Request, server: Hostile, conn: socket.socket) -> None:
        found = table.get(request.path.split("?")[0])
        if found is None:
            server.send(conn, whole(404, problem(404, f"no endpoint at {request.path}")))
        elif isinstance(found, bytes):
            server.send(conn, found)
        else:
            found(request, server, conn)

    return answer


def problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": "Problem", "status": status, "detail": detail}


def prediction(label: str = "setosa", index: int = 0) -> dict[str, Any]:
    probabilities = {"setosa": 0.0, "versicolor": 0.0, "virginica": 0.0} | {label: 1.0}
    return {"label": label, "class_index": index, "probabilities": probabilities}


def job(**fields: Any) -> dict[str, Any]:
    found = {
        "job_id": JOB_ID,
        "status": "queued",
        "created_at": "2026-12-02T07:53:22+00:00",
        "progress": {"epoch": 0, "epochs": 10},
        "hyperparameters": {},
        "dataset": {"source": "iris", "rows": 150},
        "activate": True,
    }
    return found | fields


def iris(url: str, *args: str, timeout: float = 2.0) -> Result:
    """The ``iris`` command line in-process, pointed at ``url``."""
    env = {"IRIS_API_TOKEN": "t", "FORCE_COLOR": None, "IRIS_DEBUG": None}
    base = ["--url", url, "--timeout", str(timeout)]
    return CliRunner().invoke(cli, [*base, *args], input=CSV, env=env)


def one_line_error(result: Result, code: int) -> str:
    """The single stderr line of a failed command, which must exit with ``code``."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("iris: error: ")
    assert "unexpected" not in lines[0]
    return lines[0]


# -- a bounded answer: size ------------------------------------------------------------------


def endless(request: Request, server: Hostile, conn: socket.socket) -> None:
    """A chunked answer that never ends (stopping at 256 MiB, so a regression ends too)."""
    server.send(
        conn, head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    )
    chunk = b"[" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    for _ in range(256 * MiB // len(chunk)):
        server.send(conn, frame)


def test_an_endless_answer_is_cut_at_the_size_cap() -> None:
    with Hostile(routes({"/models": endless})) as server:
        with (
            IrisClient(server.url, max_answer_bytes=MiB, retry=NO_RETRY) as client,
            pytest.raises(ProtocolError, match="larger than the client's limit of 1048576 bytes"),
        ):
            client.models()
        assert server.hung_up.wait(5), "the client kept reading"
    # a MiB read, the rest of what was sent waited in socket buffers (a few MiB at most)
    assert server.sent < 32 * MiB


def test_an_answer_declared_larger_than_64_mib_is_refused_before_its_body() -> None:
    def huge(request: Request, server: Hostile, conn: socket.socket) -> None:
        server.send(conn, head(200, {"Content-Length": str(4 * 2**30)}))
        for _ in range(4 * 2**30 // 65536):
            server.send(conn, bytes(65536))

    with Hostile(routes({"/models": huge})) as server:
        with IrisClient(server.url, retry=NO_RETRY) as client, pytest.raises(ProtocolError) as e:
            client.models()
        assert server.hung_up.wait(5)
    assert f"limit of {64 * MiB} bytes" in str(e.value)
    assert server.sent < 32 * MiB


def gzip_bomb(mebibytes: int) -> bytes:
    """A gzip stream of ``mebibytes`` MiB of zeros, about 1 KB per MiB.

    Each MiB ends in a full flush, which resets the compressor: every MiB after the first
    is the same bytes, so a large bomb costs one MiB of compression.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + again * (mebibytes - 1)  # no trailer: a bounded client never reaches it


def test_a_gzip_bomb_is_cut_at_the_cap_counted_after_decompression() -> None:
    bomb = gzip_bomb(512)  # 0.5 MB on the wire, 512 MiB decoded
    answer = whole(200, bomb, {"Content-Encoding": "gzip"})
    with Hostile(routes({"/models": answer})) as server:
        tracemalloc.start()
        try:
            with (
                IrisClient(server.url, max_answer_bytes=MiB, retry=NO_RETRY) as client,
                pytest.raises(ProtocolError, match="larger than the client's limit"),
            ):
                client.models()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(bomb) < MiB  # the cap was passed by decoding, not by the bytes on the wire
    # one 64 KiB read of gzip decodes to about 64 MiB before it is counted (140 MiB peak
    # with zlib's growing output buffer); reading the whole bomb would take 512 MiB or more
    assert peak < 256 * MiB, f"{peak / MiB:.0f} MiB"


def test_a_small_gzip_answer_within_the_cap_is_read() -> None:
    data = json.dumps({"current": None, "serving": None, "models": []}).encode()
    answer = whole(200, zlib.compress(data, wbits=31), {"Content-Encoding": "gzip"})
    with Hostile(routes({"/models": answer})) as server, IrisClient(server.url) as client:
        assert client.models().models == ()


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip"])
def test_an_encoding_the_client_did_not_ask_for_is_refused(encoding: str) -> None:
    answer = whole(200, b"\x1f\x8b" * 100, {"Content-Encoding": encoding})
    with (
        Hostile(routes({"/models": answer})) as server,
        IrisClient(server.url, retry=NO_RETRY) as client,
        pytest.raises(ProtocolError) as e,
    ):
        client.models()
    assert "encoded as" in str(e.value)
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_the_async_client_has_the_same_cap() -> None:
    async def models(url: str) -> None:
        async with AsyncIrisClient(url, max_answer_bytes=MiB, retry=NO_RETRY) as client:
            await client.models()

    with Hostile(routes({"/models": endless})) as server:
        with pytest.raises(ProtocolError, match="larger than the client's limit"):
            asyncio.run(models(server.url))
        assert server.hung_up.wait(5)
    assert server.sent < 32 * MiB


def test_the_command_line_reports_a_too_large_answer_with_exit_3() -> None:
    with Hostile(routes({"/limits": endless})) as server:
        line = one_line_error(iris(server.url, "limits"), 3)
    assert f"GET /limits: the answer is larger than the client's limit of {64 * MiB}" in line


# -- a bounded answer: time ------------------------------------------------------------------


def trickle(status_first: bool) -> Callable[[Request, Hostile, socket.socket], None]:
    """One byte every 50 ms, far below any read timeout: 5 s for the whole answer."""

    def answer(request: Request, server: Hostile, conn: socket.socket) -> None:
        body = json.dumps({"current": None, "serving": None, "models": []}).encode().ljust(100)
        data = whole(200, body)
        if status_first:  # the head at once, then the body
            server.send(conn, data[: -len(body)])
            data = data[-len(body) :]
        for i in range(len(data)):
            server.send(conn, data[i : i + 1])
            server.pause(0.05)

    return answer


@pytest.mark.parametrize("status_first", [True, False], ids=["body", "head"])
def test_a_trickling_server_is_given_up_on_after_the_timeout(status_first: bool) -> None:
    with Hostile(routes({"/models": trickle(status_first)})) as server:
        with IrisClient(server.url, timeout=0.5, retry=NO_RETRY) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionFailedError, match=r"did not answer within the 0.5 s"):
                client.models()
            took = time.monotonic() - started
        assert server.hung_up.wait(5)
    print(f"\ngave up on a 5 s trickle after {took:.2f} s (timeout 0.5 s)")
    # Bounds, not speed: not before the timeout, and long before the 5 s the answer takes.
    assert 0.45 < took < 1.0, took


def test_the_async_client_gives_up_on_a_trickling_server_after_the_timeout() -> None:
    async def models(url: str) -> float:
        async with AsyncIrisClient(url, timeout=0.5, retry=NO_RETRY) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionFailedError, match=r"did not answer within the 0.5 s"):
                await client.models()
            return time.monotonic() - started

    with Hostile(routes({"/models": trickle(True)})) as server:
        took = asyncio.run(models(server.url))
    print(f"\ngave up on a 5 s trickle after {took:.2f} s (timeout 0.5 s)")
    # Bounds, not speed: not before the timeout, and long before the 5 s the answer takes.
    assert 0.45 < took < 1.0, took


def test_iris_timeout_bounds_the_whole_answer_and_exits_3() -> None:
    with Hostile(routes({"/healthz": trickle(True)})) as server:
        started = time.monotonic()
        result = iris(server.url, "health", timeout=0.5)
        took = time.monotonic() - started
    line = one_line_error(result, 3)
    assert f"{server.url} did not answer within the 0.5 s timeout" in line
    print(f"\niris health gave up on a 5 s trickle after {took:.2f} s (timeout 0.5 s)")
    assert took < 1.5, took  # a bound: the timeout covers the whole 5 s answer


def test_a_503_whose_retry_after_outlasts_the_timeout_is_reported_at_once() -> None:
    answer = whole(503, problem(503, "loading"), {"Retry-After": "5"})
    with Hostile(routes({"/models": answer})) as server, IrisClient(server.url, timeout=1) as c:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="loading"):
            c.models()
        # A bound, not speed: neither the 5 s Retry-After nor the 1 s timeout was waited.
        assert time.monotonic() - started < 0.9
    assert len(server.requests) == 1


# -- Retry-After ---------------------------------------------------------------------------


def answer_with(retry: str) -> Answer:
    return Answer(
        503, httpx.Headers({"Retry-After": retry}), b"", "GET", httpx.URL("http://x/models")
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "soon", "", "1 s"])
def test_a_malformed_retry_after_counts_as_absent(value: str) -> None:
    assert retry_after(answer_with(value)) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("-5", 0.0), ("2.5", 2.5), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_seconds_are_read_and_a_past_time_is_now(value: str, seconds: float) -> None:
    assert retry_after(answer_with(value)) == seconds


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "tomorrow"])
def test_a_malformed_retry_after_is_retried_with_backoff_and_exits_3(value: str) -> None:
    answer = whole(503, problem(503, "loading"), {"Retry-After": value})
    with Hostile(routes({"/train": answer})) as server:
        # Time for every attempt (backoff of at most 0.25 + 0.5 + 1 s between four), so that
        # a slow machine cannot leave the last retry without an answer.
        result = iris(server.url, "jobs", timeout=4.0)
    line = one_line_error(result, 3)
    assert "loading (HTTP 503" in line
    assert len(server.requests) >= 2  # retried, within the timeout


# -- answers that are not what was asked ---------------------------------------------------


def predict_server(predictions: Any, status: int = 200) -> Hostile:
    answer = predictions if isinstance(predictions, bytes) else whole(status, predictions)
    return Hostile(routes({"/limits": whole(200, LIMITS), "/predict": answer}))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model_version": "v", "predictions": [prediction()]}, "1 predictions for the 3 rows"),
        ({"model_version": "v", "predictions": [prediction()] * 4}, "4 predictions for the 3"),
        ({"model_version": "v", "predictions": [{"label": "setosa"}] * 3}, "lacks 'class_index'"),
        ({"model_version": "v", "predictions": [prediction("daisy")] * 3}, "prediction 0 is not"),
        ({"model_version": "v", "predictions": [prediction("setosa", 2)] * 3}, "prediction 0"),
        (
            {"model_version": "v", "predictions": [prediction() | {"probabilities": [1]}] * 3},
            "prediction 0 is not",
        ),
        (
            {"model_version": "v", "predictions": [prediction(), prediction(), 7]},
            "a prediction is not an object",
        ),
        ({"model_version": 5, "predictions": [prediction()] * 3}, "'model_version' is 5"),
        ({"predictions": "all"}, "'predictions' is not a list"),
        (b"{not json", "the answer is not JSON"),
    ],
)
def test_a_predict_answer_unlike_what_was_asked_exits_3_in_one_line(body: Any, says: str) -> None:
    with predict_server(whole(200, body)) as server:
        line = one_line_error(iris(server.url, "predict", "-"), 3)
    assert says in line


def test_a_predict_answer_with_too_few_rows_is_a_protocol_error_for_python_callers() -> None:
    answer = {"model_version": "v", "predictions": [prediction()] * 2}
    with predict_server(answer) as server, IrisClient(server.url) as client:
        with pytest.raises(ProtocolError, match="2 predictions for the 3 rows sent"):
            client.predict(ROWS)
        assert len(client.predict(ROWS[:2])) == 2


def gradients_answer(rows: int, hidden: int = 4, **change: Any) -> dict[str, Any]:
    def zeros(*shape: int) -> Any:
        return [zeros(*shape[1:]) for _ in range(shape[0])] if shape else 0.0

    found = {
        "model_version": "v",
        "reduction": "mean",
        "loss": 0.5,
        "gradients": {
            "W1": zeros(hidden, 4),
            "b1": zeros(hidden),
            "W2": zeros(3, hidden),
            "b2": zeros(3),
        },
        "activations": {
            "x": zeros(rows, 4),
            "h_a": zeros(rows, hidden),
            "h_s": zeros(rows, hidden),
            "o_a": zeros(rows, 3),
            "o_s": zeros(rows, 3),
        },
    }
    return found | change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"loss": [0.5, 0.5]}, "loss has shape (2,), not ()"),
        ({"reduction": "none"}, "gradients.W1 has shape (4, 4), not (2, 4, 4)"),
        ({"gradients": gradients_answer(2, hidden=5)["gradients"]}, "activations.h_a has shape"),
        ({"activations": gradients_answer(3)["activations"]}, "activations.x has shape (3, 4)"),
        ({"gradients": {"W1": [[1.0, [2.0]]]}}, "missing b1"),
    ],
)
def test_a_gradients_answer_of_the_wrong_shape_is_a_protocol_error(
    change: dict[str, Any], says: str
) -> None:
    good = gradients_answer(2)
    with (
        Hostile(routes({"/gradients": whole(200, good | change)})) as server,
        IrisClient(server.url) as client,
        pytest.raises(ProtocolError) as caught,
    ):
        client.gradients(ROWS[:2], ["setosa", "virginica"], include=["activations"])
    assert says in str(caught.value)
    with Hostile(routes({"/gradients": whole(200, good)})) as server, IrisClient(server.url) as c:
        found = c.gradients(ROWS[:2], ["setosa", "virginica"], include=["activations"])
    assert found.gradients.W1.shape == (4, 4)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"limits": 1}, "'max_instances' is None"),
        (LIMITS | {"max_instances": 0}, "a limit below 1"),
        ([], "expected a JSON object, got list"),
    ],
)
def test_a_malformed_limits_answer_exits_3(body: Any, says: str) -> None:
    with Hostile(routes({"/limits": whole(200, body)})) as server:
        line = one_line_error(iris(server.url, "predict", "-"), 3)
    assert says in line


def test_a_job_whose_id_is_not_32_hex_digits_is_a_protocol_error() -> None:
    answer = whole(202, job(job_id=f"{JOB_ID}\n\x1b[2J"))
    with Hostile(routes({"/train": answer})) as server:
        line = one_line_error(iris(server.url, "train"), 3)
    assert "is not a job id" in line
    assert "\x1b" not in line


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_with_a_job_shaped_body_is_an_error_not_a_started_job(status: int) -> None:
    location = "https://elsewhere.example/train"
    answer = whole(status, job(), {"Location": location})
    with Hostile(routes({"/train": answer})) as server:
        result = iris(server.url, "train")
        assert [r.path for r in server.requests] == ["/train"]  # not followed
    line = one_line_error(result, 3)
    assert f"POST /train: the server answered HTTP {status}, a redirect to {location}" in line
    assert JOB_ID not in result.stdout


def test_the_python_client_reports_a_redirect_too() -> None:
    answer = whole(302, {"current": None, "serving": None, "models": []}, {"Location": "/x"})
    with (
        Hostile(routes({"/models": answer})) as server,
        IrisClient(server.url) as client,
        pytest.raises(ProtocolError, match="HTTP 302, a redirect to /x"),
    ):
        client.models()


# -- what the server says reaches the terminal inert -----------------------------------------


def test_control_characters_in_an_error_detail_are_escaped_on_one_line() -> None:
    detail = f"bad thing{OSC52}{CLEAR}\nFAKE: iris: all good\r\u202eevil\x9b31m"
    with Hostile(routes({"/models": whole(400, problem(400, detail))})) as server:
        result = iris(server.url, "models")
    line = one_line_error(result, 2)
    assert line == (
        "iris: error: bad thing\\x1b]52;c;aWQgPiAvdG1wL3B3bmVk\\x07\\x1b[2J\\x1b[H"
        "\\nFAKE: iris: all good\\r\\u202eevil\\x9b31m (HTTP 400 Problem)"
    )


def test_a_megabyte_error_detail_is_cut_to_one_short_line() -> None:
    detail = "x" * MiB
    with Hostile(routes({"/models": whole(500, problem(500, detail))})) as server:
        line = one_line_error(iris(server.url, "models", timeout=5), 3)
    assert line.endswith("... (cut)")
    assert len(line) < 2000


def test_a_server_without_problem_documents_is_escaped_too() -> None:
    answer = whole(500, b"<h1>oops\x1b[5m</h1>", {"Content-Type": "text/html"})
    with Hostile(routes({"/models": answer})) as server:
        line = one_line_error(iris(server.url, "models"), 3)
    assert "/models: <h1>oops\\x1b[5m</h1>" in line


MARKUP = "[bold red]v1[/bold red][link=https://evil.example]click[/link]:smile:"


def test_versions_are_shown_as_text_never_as_rich_markup() -> None:
    predictions = {"model_version": MARKUP + "\x1b[2J", "predictions": [prediction()] * 3}
    with predict_server(predictions) as server:
        result = iris(server.url, "predict", "-", "--format", "table")
    assert result.exit_code == 0, result.stderr
    assert f"model {MARKUP}\\x1b[2J" in result.stdout
    assert "\x1b" not in result.stdout


def test_model_and_job_tables_show_server_text_escaped_and_literal() -> None:
    models = {
        "current": MARKUP,
        "serving": MARKUP,
        "models": [{"version": MARKUP, "active": True, "error": f"corrupt{CLEAR}\nnext"}],
    }
    failed = job(status="failed", error=f"boom{OSC52}\n[red]x[/red]", model_version=MARKUP)
    answers = {"/models": whole(200, models), "/train": whole(200, {"jobs": [failed]})}
    with Hostile(routes(answers)) as server:
        shown = iris(server.url, "models", "--format", "table")
        listed = iris(server.url, "jobs", "--format", "csv")
    assert shown.exit_code == 0, shown.stderr
    assert MARKUP in shown.stdout
    assert "corrupt\\x1b[2J\\x1b[H\\nnext" in shown.stdout
    assert listed.exit_code == 0, listed.stderr
    assert "boom\\x1b]52;c;aWQgPiAvdG1wL3B3bmVk\\x07\\n[red]x[/red]" in listed.stdout
    assert len(listed.stdout.splitlines()) == 2  # the header and one job
    for output in (shown.stdout, listed.stdout):
        assert "\x1b" not in output
        assert "\x07" not in output


def test_a_followed_jobs_outcome_is_one_escaped_line() -> None:
    failed = job(status="failed", error=f"boom{OSC52}\nsucceeded: version v is now served")
    answers = {f"/train/{JOB_ID}": whole(200, failed)}
    with Hostile(routes(answers)) as server:
        result = iris(server.url, "job", JOB_ID, "--follow")
    assert result.exit_code == 1, result.stderr
    assert result.stdout == (
        f"job {JOB_ID} failed: boom\\x1b]52;c;aWQgPiAvdG1wL3B3bmVk\\x07"
        "\\nsucceeded: version v is now served\n"
    )


def test_health_and_activate_print_server_text_escaped() -> None:
    ready = {"status": "ready", "model_version": f"v{CLEAR}", "problem": f"slow\n{OSC52}"}
    answers = {
        "/healthz": whole(200, {"status": "ok"}),
        "/readyz": whole(200, ready),
        "/models/v1/activate": whole(200, {"current": MARKUP, "serving": "v1\x1b[8m"}),
    }
    with Hostile(routes(answers)) as server:
        health = iris(server.url, "health")
        activated = iris(server.url, "activate", "v1")
    assert health.stdout == (
        "ready: serving v\\x1b[2J\\x1b[H (slow\\n\\x1b]52;c;aWQgPiAvdG1wL3B3bmVk\\x07)\n"
    )
    assert activated.stdout == "now serving v1\\x1b[8m\n"


def test_the_client_keeps_the_servers_text_as_it_was_sent() -> None:
    """Escaping is for the terminal: Python callers get the detail unchanged."""
    detail = f"bad{OSC52}\n"
    with (
        Hostile(routes({"/models": whole(503, problem(503, detail))})) as server,
        IrisClient(server.url, retry=NO_RETRY) as client,
        pytest.raises(UnavailableError) as caught,
    ):
        client.models()
    assert caught.value.detail == detail

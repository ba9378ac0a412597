"""The pieces of the HTTP benchmark's gRPC and binary section (``bench_http.py --only grpc``).

No peer is installed here. What can be checked without MLServer: the file h2load sends is
one gRPC message that the protocol's generated messages read back as the request meant; what
h2load prints is read right; the MLServer launcher says which gRPC port it gave MLServer;
post.lua sends the headers it is given; the bench's in-process steps run against this build
of the service. The gRPC ceiling and h2load together run as real processes (slow).

tritonclient's generated messages stand for the protocol here, as in tests/test_grpc.py:
this process never imports service.rpc's (the same names); the bench's own code, which does,
runs in a child process.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from harness import h2load
from harness.modules import load_module
from harness.programs import require
from harness.servers import free_port, wait_for
from model.data import load_iris

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RAW = load_iris().raw

H2LOAD_OUTPUT = """\
starting benchmark...
spawning thread #0: 1 total client(s). Timing-based test with 0s of warm-up time and 3s of \
main duration for measurements.
Application protocol: h2c

finished in 3.00s, 3402.00 req/s, 739.73KB/s
requests: 10206 total, 10238 started, 10206 done, 10206 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 10206 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.17MB (2272452) total, 40.84KB (41823) headers (space savings 96.29%), 2.18MB \
(2282224) data
                     min         max         mean         sd        +/- sd
time for request:      662us     16.26ms      9.39ms      1.41ms    73.27%
"""


def test_the_call_file_is_one_grpc_message_the_protocol_reads_back(tmp_path: Path) -> None:
    rows = RAW[:3]
    request = h2load.model_infer_request(service_pb2.ModelInferRequest, rows)
    path = h2load.write_call(tmp_path / "call.bin", request.SerializeToString())
    body = path.read_bytes()
    assert body[0] == 0  # not compressed
    assert int.from_bytes(body[1:5], "big") == len(body) - 5
    read = service_pb2.ModelInferRequest.FromString(h2load.unframed(body))
    assert read.model_name == "iris"
    (tensor,) = read.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("measurements", "FP64", [3, 4])
    (raw,) = read.raw_input_contents
    assert np.array_equal(np.frombuffer(raw, "<f8").reshape(3, 4), rows)
    # the client's own copy of the protocol's messages writes the same bytes
    from iris_client import oip_pb2

    theirs = h2load.model_infer_request(oip_pb2.ModelInferRequest, rows).SerializeToString()
    assert theirs == h2load.unframed(body)


def test_a_body_that_is_not_one_message_is_refused() -> None:
    with pytest.raises(ValueError, match="byte 0"):
        h2load.unframed(b"\x01\0\0\0\0")
    with pytest.raises(ValueError, match="the prefix says 9 bytes, 2 follow"):
        h2load.unframed(b"\0\0\0\0\x09ab")


def test_the_command_is_the_grpc_call_and_h2load_output_is_read() -> None:
    command = h2load.command("h2load", Path("call.bin"), "127.0.0.1:9", streams=32, seconds=5)
    assert command == [
        "h2load", "-t1", "-c1", "-m32", "-D5",
        "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", "call.bin",
        "http://127.0.0.1:9/inference.GRPCInferenceService/ModelInfer",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        h2load.command("h2load", Path("b"), "a:1", streams=1, requests=5, seconds=5)
    found = h2load.summary(H2LOAD_OUTPUT)
    assert found["seconds"] == 3.0
    assert found["rps"] == 3402.0
    assert (found["requests"], found["succeeded"], found["failed"]) == (10206, 10206, 0)
    assert (found["errored"], found["timeout"]) == (0, 0)
    assert found["data_bytes"] == 2282224
    shorter = H2LOAD_OUTPUT.replace("finished in 3.00s", "finished in 250.50ms")
    assert h2load.summary(shorter)["seconds"] == pytest.approx(0.2505)
    with pytest.raises(ValueError, match="no summary"):
        h2load.summary("connect failed")
    assert h2load.percentiles_us([100, 200, 300])["p50_us"] == 200


def test_the_mlserver_launcher_says_which_grpc_port_it_gave(tmp_path: Path) -> None:
    peers = load_module(BENCH / "peer_servers.py")
    venv = peers.Venv(peers.MLSERVER, tmp_path / "venv", 0.0, False, 0, {})
    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"weights")
    launcher = peers.mlserver_launcher(venv, weights, tmp_path / "run")
    assert launcher.grpc_port is None  # chosen per start
    first = launcher(12345)
    assert first.env["MLSERVER_HTTP_PORT"] == "12345"
    assert launcher.grpc_port == int(first.env["MLSERVER_GRPC_PORT"]) != 12345
    assert first.command[-2:] == ["start", str(tmp_path / "run")]
    settings = json.loads((tmp_path / "run" / "model-settings.json").read_text())
    assert settings["name"] == "iris"  # the model_name of the gRPC calls
    assert (tmp_path / "run" / "weights.npz").read_bytes() == b"weights"
    again = launcher(12346)  # a start retried on another port chooses again
    assert launcher.grpc_port == int(again.env["MLSERVER_GRPC_PORT"])


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []  # noqa: RUF012 (reset by the fixture)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.seen.append({"headers": dict(self.headers), "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[int]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_post_lua_sends_the_headers_it_is_given(recorder: int, tmp_path: Path) -> None:
    wrk = require("wrk")
    body = tmp_path / "body.bin"
    body.write_bytes(b'{"x":1}\0\1\2')
    done = subprocess.run(
        [wrk, "-t1", "-c1", "-d1s", "-s", str(BENCH / "post.lua"),
         f"http://127.0.0.1:{recorder}/v2/models/iris/infer", "--", str(body),
         "Content-Type: application/octet-stream", "Inference-Header-Content-Length: 7"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WRK_JSON " in done.stdout
    first = Recorder.seen[0]
    assert first["body"] == body.read_bytes()
    assert first["headers"]["Content-Type"] == "application/octet-stream"  # replaced, not added
    assert first["headers"]["Inference-Header-Content-Length"] == "7"


STEPS = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, "bench")
import bench_http
from service.inference import Inference

stored = bench_http.default_model(Path(sys.argv[1]))
registry = SimpleNamespace(cached=lambda version: stored, active=stored)
state = SimpleNamespace(inference=Inference(registry, 10_000, 10**12))
ran = {}
for rows in (1, 10_000):
    for path, steps in bench_http.wire_steps(rows, state).items():
        for name, step in steps.items():
            step()
            ran.setdefault(f"{path}, {rows}", []).append(name)
print(json.dumps({"ran": ran, "message": bench_http.grpc_message(3).hex()}))
"""


def test_the_bench_builds_its_grpc_call_and_runs_its_in_process_steps(tmp_path: Path) -> None:
    """In a child process (the bench imports service.rpc): every step the split times runs
    against this build, and the bench's ModelInfer message is the protocol's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    done = subprocess.run(
        [sys.executable, "-c", STEPS, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    steps = {
        "/v2 JSON": ["read", "predict", "route"],
        "/v2 binary": ["decode", "read", "predict", "route"],
        "gRPC": ["decode", "read", "predict", "route"],
    }
    expected_steps = {
        f"{path}, {rows}": names for rows in (1, 10_000) for path, names in steps.items()
    }
    # A one-row message sent again is remembered: read without protobuf's parse.
    expected_steps["gRPC, 1"] = ["read", "predict", "route"]
    assert found["ran"] == expected_steps
    message = bytes.fromhex(found["message"])
    expected = h2load.model_infer_request(service_pb2.ModelInferRequest, RAW[:3])
    assert service_pb2.ModelInferRequest.FromString(message) == expected


@pytest.mark.slow
def test_the_grpc_ceiling_answers_h2load_with_its_constant(tmp_path: Path) -> None:
    """bench/grpc_ceiling.py as a process under h2load: every call answered with the
    constant, as the DATA bytes h2load counts and its per-call log say."""
    tool = require("h2load", "nghttp2-client")
    answer = tmp_path / "answer.bin"
    answer.write_bytes(b"constant answer" * 10)
    grpc_port, http_port = free_port(), free_port()
    env = os.environ | {
        "IRIS_GRPC_PORT": str(grpc_port),
        "IRIS_PORT": str(http_port),
        "CEILING_ANSWER_FILE": str(answer),
    }
    call = h2load.write_call(tmp_path / "call.bin", b"anything")
    with open(tmp_path / "ceiling.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / "grpc_ceiling.py")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool | None:
            assert proc.poll() is None, (tmp_path / "ceiling.log").read_text()
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
            try:
                conn.request("GET", "/")
                return conn.getresponse().status == 200 or None
            except OSError:
                return None
            finally:
                conn.close()

        wait_for(ready, 20, "the ceiling to start")
        log_file = tmp_path / "calls.tsv"
        done = subprocess.run(
            h2load.command(tool, call, f"127.0.0.1:{grpc_port}", streams=8, requests=200,
                           log_file=log_file),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        found = h2load.summary(done.stdout)
        assert (found["requests"], found["succeeded"]) == (200, 200)
        assert found["data_bytes"] == 200 * len(h2load.framed(answer.read_bytes()))
        assert len(h2load.latencies_us(log_file)) == 200
    finally:
        proc.terminate()
        proc.wait(10)

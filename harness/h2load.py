"""gRPC calls under load with h2load (Debian's nghttp2-client), for the tests and the benchmarks.

h2load sends one fixed body on every stream. For gRPC that body is one length-prefixed
message, as the protocol frames it: a byte 0 (not compressed), the message's length in 4
big-endian bytes, then the message; the call goes with ``content-type: application/grpc``
and ``te: trailers`` to ``/inference.GRPCInferenceService/ModelInfer``.

h2load does not read trailers, where a call's status travels: a refused call is still an
HTTP 200 to it. What was answered has to be checked another way: the server's own counters,
or the DATA bytes h2load received (:func:`summary`), which a refusal (trailers only) does not
add to.

The messages come from whichever generated module a caller holds (the service's
``service.rpc.inference_pb2``, tritonclient's ``service_pb2``, the client's ``oip_pb2``): one
process cannot import the first two together, and all three write the same bytes.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PREFIX_BYTES = 5


def framed(message: bytes) -> bytes:
    """``message`` as one gRPC length-prefixed message (uncompressed)."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def unframed(body: bytes) -> bytes:
    """The message of one uncompressed length-prefixed message; ValueError for anything else."""
    if len(body) < PREFIX_BYTES or body[0] != 0:
        raise ValueError("not one uncompressed gRPC message (a byte 0 and a length first)")
    size = int.from_bytes(body[1:PREFIX_BYTES], "big")
    if size != len(body) - PREFIX_BYTES:
        raise ValueError(f"the prefix says {size} bytes, {len(body) - PREFIX_BYTES} follow")
    return body[PREFIX_BYTES:]


def model_infer_request(message_type: Any, rows: Any, model_name: str = "iris") -> Any:
    """A ``ModelInferRequest`` of ``message_type`` (any generated module's class) for
    ``rows`` (n, 4): input ``measurements``, FP64, its values little-endian in
    ``raw_input_contents``, as tritonclient.grpc sends them."""
    array = np.ascontiguousarray(rows, dtype="<f8")
    request = message_type(model_name=model_name)
    request.inputs.add(name="measurements", datatype="FP64", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    return request


def write_call(path: Path, message: bytes) -> Path:
    """The file h2load sends (``-d``): ``message`` framed."""
    path.write_bytes(framed(message))
    return path


def command(
    h2load: str,
    body: Path,
    address: str,
    *,
    streams: int,
    requests: int | None = None,
    seconds: float | None = None,
    log_file: Path | None = None,
    path: str = MODEL_INFER,
) -> list[str]:
    """h2load on one connection and one thread, ``streams`` calls in flight, each posting
    ``body`` to ``address`` (host:port) + ``path``: ``requests`` calls, or as many as fit in
    ``seconds``; ``log_file`` gets one line per call (start, status, microseconds)."""
    if (requests is None) == (seconds is None):
        raise ValueError("give requests or seconds, not both")
    found = [h2load, "-t1", "-c1", f"-m{streams}"]
    found += [f"-n{requests}"] if requests is not None else [f"-D{seconds:g}"]
    for header in GRPC_HEADERS:
        found += ["-H", header]
    found += ["-d", str(body)]
    if log_file is not None:
        found.append(f"--log-file={log_file}")
    return [*found, f"http://{address}{path}"]


_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.MULTILINE)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_DATA = re.compile(r"^traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data", re.M)


def summary(stdout: str) -> dict[str, Any]:
    """What h2load printed: seconds, req/s, the calls' counts, DATA bytes received."""
    finished, counts, traffic = (r.search(stdout) for r in (_FINISHED, _REQUESTS, _DATA))
    if finished is None or counts is None or traffic is None:
        raise ValueError(f"h2load printed no summary:\n{stdout[-2000:]}")
    seconds = float(finished[1]) * _UNIT[finished[2]]
    total, _, done, succeeded, failed, errored, timeout = (int(v) for v in counts.groups())
    return {
        "seconds": seconds,
        "rps": float(finished[3]),
        "requests": done,
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "bytes": int(traffic[1]),
        "data_bytes": int(traffic[3]),
    }


def latencies_us(log_file: Path) -> list[int]:
    """Each call's time to its answer's end, in microseconds, from ``--log-file``."""
    found = []
    for line in log_file.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            found.append(int(fields[2]))
    return found


def percentiles_us(latencies: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99, max and mean of ``latencies`` (microseconds), as post.lua prints them."""
    if not latencies:
        return {"p50_us": 0.0, "p90_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "mean_us": 0.0}
    values = np.asarray(latencies, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50_us": float(p50),
        "p90_us": float(p90),
        "p99_us": float(p99),
        "max_us": float(values.max()),
        "mean_us": statistics.fmean(latencies),
    }

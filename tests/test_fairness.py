"""No client may starve the others: uploads, idle sockets and listeners against small requests.

Each test runs ``iris-serve`` as a real process, lets one kind of client take what it can (the
body budget, the connection allowances, the job threads, the framing bound) and meanwhile
sends another client's one-row /predict on fresh connections: every one must be answered
200, quickly. The figures are printed (``pytest -s``); docs' reliability page has the last
ones. Bounds are an order of magnitude above what the server needs, so a slow machine does
not fail them and a starved client does.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.api import wait_job
from harness.clients import LONG_JOB
from harness.fairness import ROW_BODY, MiB, Probe, Upload, exchange, status_of, unharmed
from harness.servers import ServerProcess, cpu_seconds, job_pid, open_fds, spinning, wait_for
from service.tuning import (
    IOPRIO_CLASS_IDLE,
    IOPRIO_CLASS_SHIFT,
    IOPRIO_WHO_PROCESS,
    SERVING_SLICE_NS,
)

pytestmark = pytest.mark.slow

TOKEN = "fairness-test-token-0123456789abcdef"
BUDGET = 64 * MiB  # the default IRIS_MAX_BUFFERED_BYTES
GRACE = 1.0  # IRIS_BODY_RATE_GRACE_SECONDS here, so the rate floor acts within the test


def start(tmp_path: Path, **env: str) -> ServerProcess:
    settings = {"IRIS_API_TOKEN": TOKEN, "IRIS_BODY_RATE_GRACE_SECONDS": str(GRACE), **env}
    return ServerProcess(tmp_path / "data", tmp_path / "server.log", settings).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """iris-serve at its default limits; it must still serve, with no traceback, at the end."""
    with unharmed(start(tmp_path_factory.mktemp("fairness"))) as process:
        yield process


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to VmRSS


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("how", ["nothing", "slow", "fast"])
@pytest.mark.parametrize("count", [4, 40, 100])
def test_small_predictions_are_served_whatever_uploads_of_16_mib_do(
    server: ServerProcess, count: int, how: str
) -> None:
    """``count`` connections declare 16 MiB bodies and send nothing, trickle, or send fast:
    another client's one-row predictions are all answered 200 meanwhile; the slow uploads are
    closed by the rate floor (408), the fast ones past the budget refused with 503 and
    Retry-After (each admitted upload takes its 16 MiB with its first bytes: the large share
    of the budget, three quarters, holds three); the server's memory stays within twice the
    budget (a body is joined from its chunks once)."""
    reset_peak_rss(server.pid)
    peak = peak_rss(server.pid)
    uploads = [Upload(server.port, how) for _ in range(count)]
    started = time.monotonic()
    with Probe(server.port).running() as probe:
        for upload in uploads:
            upload.thread.start()
        for upload in uploads:
            upload.thread.join(90)
    probe.check(f"{count} uploads of 16 MiB sending {how}")
    grown = (peak_rss(server.pid) - peak) / MiB
    statuses = [status_of(u.answer) for u in uploads]
    ended = max(u.ended for u in uploads) - started
    print(
        f"uploads answered {sorted(set(statuses))} within {ended:.1f} s; peak RSS +{grown:.0f} MiB"
    )
    assert grown < 2 * BUDGET / MiB + 64
    refused = [u.answer for u in uploads if status_of(u.answer) == 503]
    assert all(b"retry-after: 1" in a.lower() for a in refused)
    if how == "fast":
        assert set(statuses) <= {503, 400}, statuses  # 400: spaces are not JSON
        assert statuses.count(400) >= min(count, 3)  # read whole: admitted ones complete
        assert len(refused) >= (count - 3) // 2  # the rest take turns as the budget frees
    elif how == "slow":
        assert set(statuses) <= {408, 503}, statuses
        assert statuses.count(408) == min(count, 3)  # the admitted ones, closed by the floor
    else:
        assert set(statuses) == {408}, statuses  # a head alone holds none of the budget
    if how != "fast":
        closed = next(u.answer for u in uploads if status_of(u.answer) == 408)
        assert b"below its floor" in closed
        assert ended < GRACE + 5  # long before the 30 s body timeout


def test_an_idle_declared_upload_holds_no_budget(tmp_path: Path) -> None:
    """Heads declaring more than the whole budget, then nothing: an upload another client
    sends meanwhile is read whole (it takes the budget with its first bytes)."""
    server = start(
        tmp_path, IRIS_MAX_BUFFERED_BYTES=str(8 * MiB), IRIS_BODY_RATE_GRACE_SECONDS="30"
    )
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(8)]
    try:
        for sock in idle:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4194304\r\n\r\n"
            )
        rows = b",".join([ROW_BODY[len(b'{"instances":[') : -2]] * 20_000)
        body = b'{"instances":[' + rows + b"]}"
        assert len(body) > 1 * MiB
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = http.post(
                "/predict", content=body, headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 422, response.text  # read whole: over the row limit
        assert "10000" in response.json()["detail"]
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_connections_that_say_nothing_do_not_take_the_place_of_requests(tmp_path: Path) -> None:
    """Three times the request allowance in idle sockets: the oldest idle ones are closed to
    make room, and every small request is served."""
    server = start(tmp_path, IRIS_MAX_CONNECTIONS="50", IRIS_MAX_IDLE_CONNECTIONS="100")
    sockets: list[socket.socket] = []
    try:
        with Probe(server.port).running() as probe:
            for _ in range(150):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        probe.check("150 idle sockets, 50 requests and 100 idle connections allowed")
        fds = open_fds(server.pid)
        print(f"the server holds {fds} descriptors")
        assert fds < 100 + 60  # the idle allowance, the listener, logs and the stores
        closed = 0
        for sock in sockets[:50]:  # the longest idle: closed to make room, without a word
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                closed += sock.recv(1) == b""
        assert closed == 50
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def test_requests_past_the_allowance_are_refused_with_503(tmp_path: Path) -> None:
    """IRIS_MAX_CONNECTIONS counts requests in progress (a head in, its answer not out):
    past it, 503 with Retry-After; once they end, requests are served again."""
    server = start(tmp_path, IRIS_MAX_CONNECTIONS="20", IRIS_BODY_RATE_GRACE_SECONDS="30")
    sockets = []
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    try:
        for _ in range(20):  # heads whose bodies have not come: in progress
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(head)
            sockets.append(sock)

        def refused() -> bytes | None:
            answer = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 5)
            return answer if status_of(answer) == 503 else None

        answer = wait_for(refused, 10, "a 503 past 20 requests in progress")
        assert b"IRIS_MAX_CONNECTIONS" in answer
        assert b"retry-after: 1" in answer.lower()
    finally:
        for sock in sockets:
            sock.close()
    try:
        with server.client() as http:  # once they are gone, requests are served again
            wait_for(lambda: http.get("/healthz").status_code == 200 or None, 10, "a 200")
    finally:
        server.stop()


def test_chunk_extensions_count_as_framing(server: ServerProcess) -> None:
    """1-byte chunks each carrying a 30 KB extension: the connection is cut once the framing
    passes 64 KiB more than the body's data, not after gigabytes."""
    extension = b";x=" + b"a" * 30_000
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            for _ in range(100_000):  # 3 GB if nothing stopped it
                sock.sendall(b"1" + extension + b"\r\n \r\n")
                sent += len(extension) + 6
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    print(f"\nchunk extensions: the server closed after {sent / MiB:.2f} MiB")
    assert sent < 4 * MiB  # 64 KiB and what was in flight
    assert status_of(answer) in (0, 431), answer[:300]  # 0: reset while still sending


def test_event_stream_subscribers_have_their_own_allowance(tmp_path: Path) -> None:
    """A thousand subscribers to a running job's events: they take neither the request
    allowance nor the job threads; small requests and GET /train are served meanwhile; the
    subscriber past the allowance is refused with 503."""
    server = start(
        tmp_path,
        IRIS_MAX_CONNECTIONS="50",
        IRIS_MAX_EVENT_STREAMS="1000",
        IRIS_MAX_EVENT_STREAMS_PER_JOB="1000",
    )
    streams: list[socket.socket] = []
    try:
        with server.client() as http:
            job = http.post(
                "/train",
                json={"hyperparameters": LONG_JOB},
                headers=server.auth(),
            ).json()
            job_id = job["job_id"]
            wait_for(lambda: job_running(http, job_id), 60, "the job to run")
            request = f"GET /train/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            for _ in range(1000):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                sock.sendall(request)
                streams.append(sock)
            for sock in streams:  # each stream has begun: its head and first event came
                assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "a stream refused"
            refused = exchange(server.port, request, 10)
            assert status_of(refused) == 503, refused[:300]
            assert b"IRIS_MAX_EVENT_STREAMS" in refused
            with Probe(server.port).running():
                listing = []
                for _ in range(20):
                    started = time.perf_counter()
                    assert http.get("/train").status_code == 200
                    listing.append(time.perf_counter() - started)
            probe_median = statistics.median(listing)
            print(f"\nGET /train with 1000 subscribers: median {probe_median * 1000:.1f} ms")
            assert probe_median < 0.1
            http.post(f"/train/{job_id}/cancel", headers=server.auth())
        ended = 0
        for sock in streams:  # every stream gets the job's end
            data = b""
            sock.settimeout(30)
            while b"event: end" not in data and (chunk := sock.recv(65536)):
                data += chunk
            ended += b"event: end" in data
        assert ended == 1000
    finally:
        for sock in streams:
            sock.close()
        server.stop()


def job_running(http: httpx.Client, job_id: str) -> bool | None:
    return http.get(f"/train/{job_id}").json()["status"] == "running" or None


def test_the_training_process_yields_to_serving(tmp_path: Path) -> None:
    """Every thread of the training child runs at nice 19 under SCHED_IDLE in the idle I/O
    class, in the server's autogroup (a session of its own would weigh as much as the
    server's whatever its threads say) but not its process group (a Ctrl-C in the server's
    terminal is for the server); the server's threads ask for short slices."""
    server = start(tmp_path)
    try:
        with server.client() as http:
            job_id = http.post(
                "/train", json={"hyperparameters": LONG_JOB}, headers=server.auth()
            ).json()["job_id"]
            pid = wait_for(lambda: job_pid(server.jobs_db, job_id), 60, "the training child")
            wait_for(lambda: job_running(http, job_id), 60, "the job to run")
            stats = [
                (int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split())
                for stat in Path(f"/proc/{pid}/task").glob("*/stat")
            ]
            assert len(stats) >= 2  # the training thread and the heartbeat's
            assert {int(fields[16]) for _, fields in stats} == {19}  # field 19: nice
            assert {int(fields[38]) for _, fields in stats} == {os.SCHED_IDLE}  # 41: policy
            io_class = {io_priority(tid) >> IOPRIO_CLASS_SHIFT for tid, _ in stats}
            assert io_class == {IOPRIO_CLASS_IDLE}, io_class
            autogroup = Path(f"/proc/{pid}/autogroup")
            if autogroup.exists():  # CONFIG_SCHED_AUTOGROUP
                assert autogroup.read_text() == Path(f"/proc/{server.pid}/autogroup").read_text()
            assert os.getsid(pid) == os.getsid(server.pid)
            assert os.getpgid(pid) == pid != os.getpgid(server.pid)
            slices = {
                line.split(":")[1].strip()
                for sched in Path(f"/proc/{server.pid}/task").glob("*/sched")
                for line in sched.read_text().splitlines()
                if line.startswith("se.slice")
            }
            if slices:  # kernels with EEVDF's custom slices (6.12 on) list them
                assert slices == {str(SERVING_SLICE_NS)}, slices
            http.post(f"/train/{job_id}/cancel", headers=server.auth())
    finally:
        server.stop()


def test_training_naps_while_other_tasks_want_the_cpus(tmp_path: Path) -> None:
    """A spinner at normal priority for every CPU, beside a running job, for half a second
    of CPU each: the job naps through it (SCHED_IDLE alone would take the CPU between their
    slices), then finishes, its metrics counting the naps."""
    server = start(tmp_path)
    try:
        with server.client() as http:
            hyperparameters = {"hidden_units": 64, "epochs": 5000}
            job_id = http.post(
                "/train", json={"hyperparameters": hyperparameters}, headers=server.auth()
            ).json()["job_id"]
            wait_for(lambda: job_running(http, job_id), 60, "the job to run")
            with spinning(os.cpu_count() or 1) as spinners:
                spun = {spinner.pid: cpu_seconds(spinner.pid) for spinner in spinners}
                wait_for(
                    lambda: all(cpu_seconds(pid) - spun[pid] >= 0.5 for pid in spun) or None,
                    30,
                    "the spinners to spin",
                )
            done = wait_job(http, job_id, {"succeeded"}, 60)
            assert done["metrics"]["yielded_seconds"] >= 0.3, done["metrics"]
    finally:
        server.stop()


def io_priority(thread: int) -> int:
    """ioprio_get(2) of a thread (x86_64 and arm64)."""
    number = {"x86_64": 252, "aarch64": 31}[os.uname().machine]
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    value: int = syscall(number, IOPRIO_WHO_PROCESS, thread)
    assert value >= 0, ctypes.get_errno()
    return value


def test_a_shutdown_ends_open_event_streams_at_once_with_a_going_away_event(
    tmp_path: Path,
) -> None:
    """SIGTERM with event streams open: each gets a final ``going-away`` event and is closed
    at once, and the server exits well within its grace period, with no traceback."""
    server = start(tmp_path)
    streams: list[socket.socket] = []
    try:
        with server.client() as http:
            job_id = http.post(
                "/train", json={"hyperparameters": LONG_JOB}, headers=server.auth()
            ).json()["job_id"]
            wait_for(lambda: job_running(http, job_id), 60, "the job to run")
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(f"GET /train/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            streams.append(sock)
        for sock in streams:  # each stream is open and has said something
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert server.proc is not None
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for sock in streams:
            data = b""
            while chunk := sock.recv(65536):  # until the server closes it
                data += chunk
            last = data.rsplit(b"event: ", 1)[-1]
            assert last.startswith(b"going-away\ndata: "), data[-300:]  # the last event
            assert data.endswith(b"\r\n0\r\n\r\n"), data[-300:]  # the response ended whole
        server.proc.wait(30)
        took = time.monotonic() - began
        print(f"\nexit with 3 open event streams: {took:.2f} s")
        assert took < 5, took  # the graceful period is 10 s; streams must not wait it out
        assert server.proc.returncode == 0
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        for sock in streams:
            sock.close()
        server.stop()

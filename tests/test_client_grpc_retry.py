"""IrisClient.infer over gRPC, retried as its HTTP calls are: the client's RetryPolicy, its one
deadline for the whole call. Against a gRPC server in this process that answers each attempt as
a test tells it (the client's own messages, iris_client.oip_pb2: this module never imports
service.rpc), and against iris-serve restarted under a call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from iris_client import (
    BadRequestError,
    ConflictError,
    ConnectionFailedError,
    IrisClient,
    NotFoundError,
    ProtocolError,
    RetryPolicy,
    ServerError,
    UnavailableError,
)
from iris_client import oip_pb2 as pb
from iris_client._oip import GRPC_CALL, grpc_error, grpc_retry_delay
from iris_client.types import CLASSES

from harness.clients import client_server
from harness.servers import ServerProcess, free_port, wait_for
from model.data import load_iris

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)
ROWS = load_iris().raw[:3]
OK = "ok"
HANG = "hang"  # no answer: the attempt ends when the client gives up on it
BUSY = "Concurrent RPC limit exceeded!"  # grpc's own server past maximum_concurrent_rpcs
TOO_LARGE = "input 'measurements': the message is larger than the limit of 1048576 bytes"


@dataclass(frozen=True)
class Refuse:
    code: grpc.StatusCode
    details: str = "refused"
    pushback: str | None = None  # grpc-retry-pushback-ms


UNAVAILABLE = Refuse(grpc.StatusCode.UNAVAILABLE, "no model is loaded yet")


@dataclass(frozen=True)
class Attempt:
    at: float  # time.monotonic() when it reached the server
    remaining: float | None  # the gRPC timeout it carried, as the server saw it


def answer_for(request: Any) -> Any:
    """A well-formed answer for the request's rows: every one setosa."""
    n = request.inputs[0].shape[0]
    answer = pb.ModelInferResponse(model_name="iris", model_version="v1")
    for name, datatype, shape in (
        ("probabilities", "FP64", [n, len(CLASSES)]),
        ("class_index", "INT64", [n]),
        ("label", "BYTES", [n]),
    ):
        answer.outputs.add(name=name, datatype=datatype, shape=shape)
    label = CLASSES[0].encode()
    answer.raw_output_contents.extend([
        np.tile([0.9, 0.07, 0.03], (n, 1)).astype("<f8").tobytes(),
        np.zeros(n, dtype="<i8").tobytes(),
        (len(label).to_bytes(4, "little") + label) * n,
    ])  # fmt: skip
    return answer


@dataclass
class Scripted:
    """A ModelInfer server on 127.0.0.1 whose n-th attempt gets ``script[n]`` (the last entry
    for every attempt past the script's end)."""

    script: list[Any]
    port: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    server: Any = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Scripted:
        self.server = grpc.server(ThreadPoolExecutor(4))
        handler = grpc.unary_unary_rpc_method_handler(
            self.handle,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString,
        )
        service, method = GRPC_CALL.strip("/").split("/")
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()

    def handle(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.attempts.append(Attempt(time.monotonic(), context.time_remaining()))
        step = self.script[min(len(self.attempts), len(self.script)) - 1]
        if step == HANG:
            ended = threading.Event()
            context.add_callback(ended.set)  # the client's deadline, or the server's stop
            ended.wait(60)
            return pb.ModelInferResponse()
        if isinstance(step, Refuse):
            if step.pushback is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", step.pushback),))
            context.abort(step.code, step.details)
        return answer_for(request)


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    """``scripted(*steps)`` starts a :class:`Scripted` server; each is stopped afterwards."""
    started: list[Scripted] = []

    def start(*steps: Any, port: int = 0) -> Scripted:
        server = Scripted(list(steps), port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)


def infer(target: str, policy: RetryPolicy = FAST, timeout: float = 10.0, **kwargs: Any) -> Any:
    # the HTTP URL is never asked: gRPC's infer goes to grpc_url alone
    with IrisClient("http://127.0.0.1:9", timeout=timeout, retry=policy, **kwargs) as iris:
        return iris.infer(ROWS, protocol="grpc", grpc_url=target)


@dataclass(frozen=True)
class OnRetry(RetryPolicy):
    """FAST's attempts with no wait, ``before`` run ahead of every retry (a server restarted)."""

    before: Callable[[int], object] = lambda retry: None

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        self.before(retry)
        return 0.0


# -- what is retried, and how often --------------------------------------------------------------


def test_unavailable_is_retried_until_the_server_answers(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(UNAVAILABLE, UNAVAILABLE, OK)
    answer = infer(server.target)
    assert answer.labels == ["setosa"] * len(ROWS)
    assert len(server.attempts) == 3


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_unavailable_is_tried_as_many_times_as_the_policy_says(
    scripted: Callable[..., Scripted], attempts: int
) -> None:
    """attempts=1: no retry at all; then the server's refusal is the caller's error."""
    server = scripted(UNAVAILABLE)
    with pytest.raises(UnavailableError, match="no model is loaded yet"):
        infer(server.target, RetryPolicy(attempts=attempts, base=0.01, cap=0.05))
    assert len(server.attempts) == attempts


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        (Refuse(grpc.StatusCode.INVALID_ARGUMENT, "row 0, sepal_length"), BadRequestError),
        (Refuse(grpc.StatusCode.NOT_FOUND, "no stored model version"), NotFoundError),
        (Refuse(grpc.StatusCode.FAILED_PRECONDITION, "sha256 mismatch"), ConflictError),
        (Refuse(grpc.StatusCode.INTERNAL, "internal error"), ServerError),
        (Refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_LARGE), BadRequestError),
        # a negative pushback is the server saying: do not retry
        (Refuse(grpc.StatusCode.UNAVAILABLE, "draining", pushback="-1"), UnavailableError),
    ],
    ids=["invalid-argument", "not-found", "failed-precondition", "internal", "too-large",
         "pushback-negative"],
)  # fmt: skip
def test_a_final_refusal_is_sent_once_and_keeps_its_error(
    scripted: Callable[..., Scripted], refusal: Refuse, error: type[Exception]
) -> None:
    server = scripted(refusal, OK)
    with pytest.raises(error, match=refusal.details) as raised:
        infer(server.target)
    assert type(raised.value) is error
    assert len(server.attempts) == 1


@pytest.mark.parametrize(
    "busy",
    [
        Refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY),
        Refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, "over capacity", pushback="0"),
    ],
    ids=["concurrent-rpc-limit", "pushback"],
)
def test_a_busy_server_is_retried_and_then_unavailable(
    scripted: Callable[..., Scripted], busy: Refuse
) -> None:
    server = scripted(busy, OK)
    assert infer(server.target).labels == ["setosa"] * len(ROWS)
    assert len(server.attempts) == 2
    always = scripted(busy)
    with pytest.raises(UnavailableError, match=busy.details):
        infer(always.target)
    assert len(always.attempts) == FAST.attempts


def test_the_servers_pushback_is_waited_for(scripted: Callable[..., Scripted]) -> None:
    server = scripted(Refuse(grpc.StatusCode.UNAVAILABLE, pushback="300"), OK)
    infer(server.target)  # FAST alone would wait at most 0.01 s
    first, second = server.attempts
    assert second.at - first.at >= 0.3


def test_an_answer_over_max_answer_bytes_is_a_protocol_error_sent_once(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(OK)
    with pytest.raises(ProtocolError, match="larger than max_answer_bytes"):
        infer(server.target, max_answer_bytes=64)
    assert len(server.attempts) == 1


# -- one deadline for the whole call -------------------------------------------------------------


def test_each_attempt_has_what_is_left_of_the_deadline(scripted: Callable[..., Scripted]) -> None:
    """The retry comes 0.3 s in (the pushback) and hangs: it carries the 0.7 s left, and the
    call ends at its deadline, not 1 s after the retry."""
    server = scripted(Refuse(grpc.StatusCode.UNAVAILABLE, pushback="300"), HANG)
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="no answer within the timeout"):
        infer(server.target, timeout=1.0)
    elapsed = time.monotonic() - started
    first, second = server.attempts
    assert first.remaining is not None
    assert second.remaining is not None
    assert first.remaining <= 1.0
    assert second.at - started >= 0.3
    assert second.remaining <= 0.8  # about 0.7; the whole timeout again would be about 1
    assert 0.95 <= elapsed < 1.5


def test_retries_end_at_the_deadline(scripted: Callable[..., Scripted]) -> None:
    """Without the deadline, 10,000 attempts 0.02 s apart: minutes. The last attempt may have
    had only the deadline's last milliseconds, and be cut by it (ConnectionFailedError)."""
    server = scripted(UNAVAILABLE)
    many = RetryPolicy(attempts=10_000, base=0.02, cap=0.02)
    started = time.monotonic()
    with pytest.raises((UnavailableError, ConnectionFailedError)):
        infer(server.target, many, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert 2 < len(server.attempts) < many.attempts


def test_a_hung_attempt_is_not_retried_past_the_deadline(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(HANG, OK)
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="no answer within the timeout"):
        infer(server.target, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert len(server.attempts) == 1


def test_a_pushback_past_the_deadline_is_reported_at_once(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(Refuse(grpc.StatusCode.UNAVAILABLE, "draining", pushback="5000"), OK)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as raised:
        infer(server.target, timeout=2.0)
    assert time.monotonic() - started < 1.5
    assert raised.value.retry_after == 5.0
    assert len(server.attempts) == 1


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        (grpc.StatusCode.CANCELLED, "Cancelled"),
        (grpc.StatusCode.INVALID_ARGUMENT, "row 0"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_LARGE),
        # the client's own cap on an answer, as grpcio words it
        (grpc.StatusCode.RESOURCE_EXHAUSTED,
         "Stream removed (CLIENT: Received message larger than max (5000 vs. 1000))"),
    ],
)  # fmt: skip
def test_only_unavailable_and_busy_have_a_delay(code: grpc.StatusCode, details: str) -> None:
    failed = Failed(code, details)
    assert grpc_retry_delay(failed, FAST, 0) is None
    assert grpc_retry_delay(Failed(grpc.StatusCode.UNAVAILABLE, details), FAST, 0) is not None
    if "CLIENT" in details:
        assert isinstance(grpc_error(failed, "x:1"), ProtocolError)


@dataclass(frozen=True)
class Failed:
    """What grpc raises for a failed call, as grpc_retry_delay and grpc_error read it."""

    status: grpc.StatusCode
    text: str
    trailers: tuple[tuple[str, str], ...] = ()

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.text

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.trailers


# -- lost connections --------------------------------------------------------------------------


def test_a_retry_after_a_refused_connection_connects_at_once(
    scripted: Callable[..., Scripted],
) -> None:
    """The server starts between the attempts, and the retry, sent without a wait, reaches it
    (a channel that failed to connect would fail it fast for about a second, its reconnection
    backoff)."""
    port = free_port()
    servers: list[Scripted] = []
    policy = OnRetry(attempts=2, before=lambda retry: servers.append(scripted(OK, port=port)))
    assert infer(f"127.0.0.1:{port}", policy).labels == ["setosa"] * len(ROWS)
    (server,) = servers
    assert len(server.attempts) == 1


def test_a_call_cut_by_a_stopping_server_is_retried_on_its_successor(
    scripted: Callable[..., Scripted],
) -> None:
    """A server going away mid-call (UNAVAILABLE, "Cancelling all calls"), then another on its
    port: the call is sent again, and answered."""
    first = scripted(HANG)
    successors: list[Scripted] = []

    def restart(retry: int) -> None:
        successors.append(scripted(OK, port=first.port))

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(infer, first.target, OnRetry(attempts=2, before=restart))
        wait_for(lambda: len(first.attempts) == 1, 10, "the first attempt at the server")
        first.stop(0.1)
        answer = call.result(timeout=30)
    assert answer.labels == ["setosa"] * len(ROWS)
    (successor,) = successors
    assert len(successor.attempts) == 1


@pytest.mark.slow
def test_iris_serve_restarted_under_a_call_answers_its_retry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The real server, stopped: the first attempt's connection is refused, the server comes
    back on its ports before the retry, which it answers as /predict would."""
    grpc_port = free_port()
    with client_server(tmp_path_factory.mktemp("grpc-retry"), IRIS_GRPC_PORT=str(grpc_port)) as (
        server
    ):
        target = f"127.0.0.1:{grpc_port}"
        before = infer(target)
        server.stop()
        restarted: list[ServerProcess] = []
        policy = OnRetry(attempts=2, before=lambda retry: restarted.append(server.restart()))
        after = infer(target, policy, timeout=60.0)
        assert restarted == [server]
        current = httpx.get(f"{server.url}/models", timeout=10).json()["current"]
    assert after.model_version == before.model_version == current
    assert np.array_equal(after.probabilities, before.probabilities)
    assert after.labels == before.labels

"""The blocking client: ``IrisClient`` and the ``JobHandle`` that ``train`` returns."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx

from iris_client import _core, _deadline, _oip
from iris_client._core import Answer, Call, ProgressCallback, RetryPolicy, Rows
from iris_client._oip import Inferred
from iris_client.errors import (
    LimitsWarning,
    NotFoundError,
    ProblemError,
    ProtocolError,
    WaitTimeoutError,
)
from iris_client.settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    MAX_ANSWER_BYTES,
    MAX_CONCURRENCY,
    POLL_SECONDS,
)
from iris_client.types import (
    DEFAULT_LIMITS,
    Activation,
    Canary,
    Feedback,
    Gradients,
    Health,
    Hyperparameters,
    Include,
    Job,
    Limits,
    ModelDetail,
    ModelList,
    Monitoring,
    Prediction,
    Predictions,
    Reduction,
    Routing,
    RoutingEvent,
)


class IrisClient:
    """A blocking client of the Iris service's HTTP API.

    ``token`` is needed for ``train``, ``cancel``, ``delete_job``, ``activate`` and
    ``delete_model``.
    Idempotent calls (reads, ``predict``, ``gradients``, ``infer``) are retried on connection
    errors and 502/503/504 (over gRPC, UNAVAILABLE and a busy server's RESOURCE_EXHAUSTED)
    with backoff; a call that changes state is sent again only when the connection was
    refused before the request left.

    Each request (a chunk of a split ``predict`` is one) gives up after ``timeout`` seconds in
    all, retries included, however slowly the server sends its answer; an answer longer than
    ``max_answer_bytes`` once decoded is refused as it passes that size (ProtocolError).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _core.base_url(url)
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._token = token
        self._limits: Limits | None = None
        limits = httpx.Limits(max_connections=MAX_CONCURRENCY)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers=_core.headers(None),
            # a transport of the caller's gets the deadline checked between chunks only
            transport=transport or _deadline.transport(limits),
            limits=limits,
        )

    def __enter__(self) -> IrisClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, call: Call) -> Answer:
        deadline = time.monotonic() + self.timeout
        retries = 0
        while True:
            try:
                answer = self._attempt(call, deadline)
            except httpx.TransportError as error:
                delay = self.retry.delay(retries)
                if not (
                    _core.retryable(error, call.idempotent)
                    and _core.may_retry(self.retry, retries, delay, deadline)
                ):
                    raise _core.connection_error(error, self.url, self.timeout) from None
                time.sleep(delay)
                retries += 1
                continue
            if call.idempotent and answer.status_code in _core.RETRY_STATUSES:
                delay = self.retry.delay(retries, _core.retry_after(answer))
                if answer.status_code not in call.expected and _core.may_retry(
                    self.retry, retries, delay, deadline
                ):
                    time.sleep(delay)
                    retries += 1
                    continue
            return _core.check(answer, call)

    def _attempt(self, call: Call, deadline: float) -> Answer:
        """One request, its answer streamed in whole within the size cap and the deadline."""
        auth = {"Authorization": f"Bearer {self._token}"} if call.auth and self._token else {}
        token = _deadline.DEADLINE.set(deadline)
        try:
            with self._http.stream(
                call.method,
                call.path,
                content=call.body,
                params=call.params,
                headers=auth
                | ({"Content-Type": "application/json"} if call.body else {})
                | dict(call.headers or {}),
            ) as response:
                body = _core.Body(response, self.max_answer_bytes)
                for chunk in response.iter_bytes():
                    body.add(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the call's deadline passed")
                return body.answer()
        except httpx.DecodingError as error:
            raise ProtocolError(f"{call.method} {call.path}: undecodable answer: {error}") from None
        finally:
            _deadline.DEADLINE.reset(token)

    def _json(self, call: Call) -> Any:
        return _core.json_of(self._send(call))

    # -- the API -------------------------------------------------------------------------------

    def limits(self) -> Limits:
        """The server's request limits, read once; documented defaults for an older server."""
        if self._limits is None:
            try:
                self._limits = Limits.from_json(self._json(Call("GET", "/limits")))
            except NotFoundError:
                warnings.warn(
                    f"{self.url} publishes no limits (GET /limits: 404); using the documented "
                    f"defaults: {DEFAULT_LIMITS.max_instances} rows per request, "
                    f"{DEFAULT_LIMITS.max_body_bytes} bytes per body",
                    LimitsWarning,
                    stacklevel=2,
                )
                self._limits = DEFAULT_LIMITS
        return self._limits

    def predict(
        self,
        rows: Rows,
        *,
        model_version: str | None = None,
        concurrency: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Predictions:
        """Species and probabilities for every row, in input order.

        ``rows``: measurement mappings, an (n, 4) array or a CSV path. An input above the
        server's ``max_instances`` (or body limit) is sent in consecutive chunks, up to
        ``concurrency`` at a time; every chunk after the first asks for the version that
        answered the first, so one model predicts the whole input. ``progress(done, total)``
        is called as rows are answered.
        """
        plan, send = self._chunk_sender(rows, {}, progress)
        first = send(plan[0], model_version)
        parts: list[Predictions] = [first]
        if len(plan) > 1:
            parts += self._map(send, plan[1:], model_version or first.model_version, concurrency)
        rows_out: list[Prediction] = [p for part in parts for p in part.predictions]
        return Predictions(first.model_version, tuple(rows_out))

    def _chunk_sender(
        self, rows: Rows, headers: Mapping[str, str], progress: ProgressCallback | None
    ) -> tuple[list[range], Callable[[range, str | None], Predictions]]:
        """The chunks of ``rows`` within the server's limits, and how one is sent to
        /predict (asking for a version, or None), ``progress`` told as rows are answered."""
        data = _core.instances(rows)
        limits = self.limits()
        plan = _core.plan_chunks(data, limits.max_instances, limits.max_body_bytes)
        done = 0
        lock = threading.Lock()

        def send(chunk: range, version: str | None) -> Predictions:
            nonlocal done
            body = _core.predict_body(data[chunk.start : chunk.stop], version)
            call = Call("POST", "/predict", body, headers=headers or None)
            try:
                answer = _core.predictions(self._json(call), len(chunk))
            except ProblemError as error:
                raise _core.shifted(error, chunk.start) from None
            with lock:
                done += len(chunk)
                if progress is not None:
                    progress(done, len(data))
            return answer

        return list(plan), send

    def _map(
        self,
        send: Callable[[range, str | None], Predictions],
        chunks: Sequence[range],
        version: str | None,
        concurrency: int | None,
    ) -> list[Predictions]:
        workers = max(1, min(concurrency or self.concurrency, MAX_CONCURRENCY))
        if workers == 1:
            return [send(chunk, version) for chunk in chunks]
        with ThreadPoolExecutor(workers, thread_name_prefix="iris-predict") as pool:
            futures: list[Future[Predictions]] = [pool.submit(send, c, version) for c in chunks]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def infer(
        self,
        rows: Any,
        *,
        model_version: str | None = None,
        protocol: str = "http",
        grpc_url: str | None = None,
    ) -> Inferred:
        """The Open Inference Protocol's inference for an (n, 4) array of measurements, FP64
        in and every output out in binary: over HTTP (the binary tensor data extension) or
        over gRPC (``protocol="grpc"``, raw contents, at ``grpc_url``, by default this
        client's host on port 8001). One call: the rows must fit the server's limits
        (``limits()``). Either protocol is retried by ``retry`` within ``timeout``; over gRPC
        on UNAVAILABLE and on a RESOURCE_EXHAUSTED that says the server is busy. Needs
        NumPy; gRPC needs ``iris-client[grpc]``."""
        data = _oip.measurements(rows)
        if protocol == "grpc":
            target = _oip.grpc_target(grpc_url or _oip.grpc_default(self.url))
            return _oip.grpc_infer(
                target,
                data,
                model_version,
                timeout=self.timeout,
                max_answer_bytes=self.max_answer_bytes,
                retry=self.retry,
            )
        if protocol != "http":
            raise ValueError(
                f"protocol must be one of {', '.join(_oip.PROTOCOLS)}, not {protocol!r}"
            )
        body, headers = _oip.http_request(data)
        answer = self._send(Call("POST", _oip.path(model_version), body, headers=headers))
        where = f"{self.url}{_oip.path(model_version)}"
        return _oip.read_http_answer(
            answer.content, answer.headers.get(_oip.HEADER), len(data), where
        )

    def gradients(
        self,
        rows: Rows,
        labels: Sequence[str | int],
        *,
        reduction: Reduction = "mean",
        include: Sequence[Include] = (),
        model_version: str | None = None,
    ) -> Gradients:
        """Loss and backpropagation gradients for rows and their labels (names or indices)."""
        body = _core.gradients_body(rows, labels, reduction, include, model_version)
        answer = Gradients.from_json(self._json(Call("POST", "/gradients", body)))
        return answer.shaped_for(len(labels))

    def train(
        self,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        data: Sequence[Mapping[str, float | str]] | str | os.PathLike[str] | None = None,
        activate: bool = True,
        min_validation_accuracy: float | None = None,
        note: str | None = None,
    ) -> JobHandle:
        """Start a training job (sent once, never retried once it may have arrived).

        ``data``: samples with a ``species``, or a CSV path; default the shipped Iris data.
        ``note``: kept with the job and the version it makes (one line, at most 200
        characters).
        """
        body = _core.train_body(hyperparameters, data, activate, min_validation_accuracy, note)
        answer = self._json(Call("POST", "/train", body, auth=True, idempotent=False))
        return JobHandle(self, Job.from_json(answer))

    def job(self, job_id: str) -> Job:
        return Job.from_json(self._json(Call("GET", _core.job_path(job_id))))

    def handle(self, job_id: str) -> JobHandle:
        """A handle on an existing job, to wait for or cancel it."""
        return JobHandle(self, self.job(job_id))

    def jobs(self, limit: int | None = None) -> list[Job]:
        """Recent jobs, newest first (the server's default count unless ``limit``)."""
        params = {"limit": limit} if limit is not None else None
        answer = self._json(Call("GET", "/train", params=params))
        return _core.job_list(answer)

    def cancel(self, job_id: str) -> Job:
        """Ask a queued or running job to stop; the answer shows it as it is then."""
        call = Call("POST", _core.job_path(job_id, "/cancel"), auth=True, idempotent=False)
        return Job.from_json(self._json(call))

    def delete_job(self, job_id: str) -> None:
        """Remove an ended job's record (409 while it runs)."""
        self._send(Call("DELETE", _core.job_path(job_id), auth=True, idempotent=False))

    def models(self) -> ModelList:
        return ModelList.from_json(self._json(Call("GET", "/models")))

    def model(self, version: str) -> ModelDetail:
        """One stored version's metadata (without its training history)."""
        return ModelDetail.from_json(self._json(Call("GET", _core.model_path(version))))

    def delete_model(self, version: str) -> None:
        """Delete a stored version; the current one is refused (ConflictError, 409)."""
        self._send(Call("DELETE", _core.model_path(version), auth=True, idempotent=False))

    def activate(self, version: str) -> Activation:
        """Make a stored version the served one (roll back or forward)."""
        call = Call("POST", _core.model_path(version, "/activate"), auth=True, idempotent=False)
        return Activation.from_json(self._json(call))

    def check_token(self) -> bool:
        """Does the server accept the token? Asked with an authenticated call that changes
        nothing, after ``GET /healthz`` (so a wrong URL fails as such).

        True: accepted. False: the server has no such call to try it with (not verified).
        Raises AuthenticationError when the server refuses the token.
        """
        self._send(Call("GET", "/healthz"))
        return _core.token_accepted(self._send(_core.TOKEN_PROBE))

    def health(self) -> Health:
        """Alive (``/healthz``) and ready (``/readyz``); not ready is an answer, not an error."""
        self._send(Call("GET", "/healthz"))
        response = self._send(Call("GET", "/readyz", expected=(503,)))
        return _core.health(response)

    # -- the rollout: routing, its history, feedback, monitoring --------------------------------

    def routing(self) -> Routing:
        """The traffic split: stable, the canary and its rule, the shadow (``GET /routing``)."""
        return Routing.from_json(self._json(Call("GET", "/routing")))

    def set_routing(
        self,
        canary: Canary | Mapping[str, Any] | None = None,
        shadow: str | Mapping[str, Any] | None = None,
        revision: int | None = None,
    ) -> Routing:
        """Set the whole plan but stable (token required): ``canary`` a :class:`Canary` or its
        mapping, ``shadow`` a version; a part left None is cleared. With ``revision`` (what
        ``routing()`` read) the change is made only if the routing is still at it, else
        ConflictError (409). A canary or shadow that is stable or not stored: ValidationError.
        """
        # Sent again only when the connection was refused before the request left. PUT is
        # idempotent in HTTP terms, but a replay of one that was applied is not harmless: with
        # ``revision`` it finds the revision moved and reports a 409 for a change that took
        # place; without, it can undo what happened in between (the rule rolling the canary
        # back, another person's change), and each application adds a history entry.
        body = _core.routing_body(canary, shadow, revision)
        call = Call("PUT", "/routing", body, auth=True, idempotent=False)
        return Routing.from_json(self._json(call))

    def clear_routing(self, revision: int | None = None) -> Routing:
        """No canary and no shadow: stable answers every request (token required)."""
        return self.set_routing(None, None, revision)

    def routing_history(self, limit: int | None = None) -> list[RoutingEvent]:
        """Routing changes, promotions, rollbacks and failed promotions, oldest first (the
        newest 1000, or ``limit``)."""
        params = {"limit": limit} if limit is not None else None
        return _core.history(self._json(Call("GET", "/routing/history", params=params)))

    def feedback(self, model_version: str, rows: Rows, labels: Sequence[str | int]) -> Feedback:
        """The true species of rows ``model_version`` answered (token required): ``rows`` as
        ``predict`` takes them, ``labels`` species names or class indices, one per row.

        Counts the labels and how many the version predicts right, and lets the rule judge
        the canary; ``decision`` is what it decided upon this feedback, if anything. More rows
        than the server's ``max_instances`` go in consecutive requests; a request is never
        sent twice once it may have arrived (its labels would count twice), so after a
        failure the requests before it are counted.
        """
        data = _core.instances(rows)
        given = _core.feedback_labels(labels, len(data))
        limits = self.limits()
        answers: list[Feedback] = []
        for chunk, body in _core.feedback_requests(
            model_version, data, given, limits.max_instances, limits.max_body_bytes
        ):
            call = Call("POST", "/feedback", body, auth=True, idempotent=False)
            try:
                answer = self._json(call)
            except ProblemError as error:
                raise _core.shifted(error, chunk.start) from None
            answers.append(_core.feedback_answer(answer, model_version, len(chunk)))
        return _core.feedback_total(model_version, answers)

    def monitoring(self) -> Monitoring:
        """Per version: rows served, live accuracy, shadow agreement; the drift of the inputs."""
        return Monitoring.from_json(self._json(Call("GET", "/monitoring")))

    def predict_batches(
        self,
        rows: Rows,
        *,
        model_version: str | None = None,
        routing_key: str | None = None,
        concurrency: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Predictions]:
        """Predictions of consecutive batches of at most the server's ``max_instances`` rows,
        in input order, each routed on its own: unlike ``predict``'s chunks none is pinned to
        the version that answered another, so with a canary they may come from several
        versions (each batch's ``model_version`` says which). ``model_version`` pins them all;
        ``routing_key`` is sent as ``X-Routing-Key``, so one key meets one version.
        """
        plan, send = self._chunk_sender(rows, _core.routing_headers(routing_key), progress)
        return self._map(send, plan, model_version, concurrency)


class JobHandle:
    """A training job: ``job`` is the latest snapshot; ``wait`` polls until it ends."""

    def __init__(self, client: IrisClient, job: Job) -> None:
        self.client = client
        self.job = job

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, status={self.job.status!r})"

    def refresh(self) -> Job:
        self.job = self.client.job(self.job_id)
        return self.job

    def wait(
        self,
        progress: Callable[[Job], object] | None = None,
        *,
        timeout: float | None = None,
        interval: float = POLL_SECONDS,
    ) -> Job:
        """Poll ``GET /train/{id}`` until the job ends; ``progress(job)`` on every change.

        Raises WaitTimeoutError after ``timeout`` seconds (the job keeps running).
        """
        interval = _core.poll_interval(interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Job | None = None
        while True:
            job = self.refresh()
            if progress is not None and job != last:
                progress(job)
            last = job
            if job.ended:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(job.job_id, job.status, timeout or 0.0)
                time.sleep(min(interval, left))
            else:
                time.sleep(interval)

    def cancel(self) -> Job:
        self.job = self.client.cancel(self.job_id)
        return self.job

"""The asyncio twin of :mod:`iris_client.sync`: ``AsyncIrisClient`` and ``AsyncJobHandle``."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from iris_client import _core, _oip
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

T = TypeVar("T")


class AsyncIrisClient:
    """The same client as :class:`iris_client.IrisClient`, for asyncio (``async with``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = _core.base_url(url)
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._token = token
        self._limits: Limits | None = None
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            headers=_core.headers(None),
            transport=transport,
            limits=httpx.Limits(max_connections=MAX_CONCURRENCY),
        )

    async def __aenter__(self) -> AsyncIrisClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Answer:
        deadline = time.monotonic() + self.timeout
        retries = 0
        while True:
            try:
                answer = await self._attempt(call, deadline)
            except TimeoutError:
                raise _core.deadline_error(self.url, self.timeout) from None
            except httpx.TransportError as error:
                delay = self.retry.delay(retries)
                if not (
                    _core.retryable(error, call.idempotent)
                    and _core.may_retry(self.retry, retries, delay, deadline)
                ):
                    raise _core.connection_error(error, self.url, self.timeout) from None
                await asyncio.sleep(delay)
                retries += 1
                continue
            if call.idempotent and answer.status_code in _core.RETRY_STATUSES:
                delay = self.retry.delay(retries, _core.retry_after(answer))
                if answer.status_code not in call.expected and _core.may_retry(
                    self.retry, retries, delay, deadline
                ):
                    await asyncio.sleep(delay)
                    retries += 1
                    continue
            return _core.check(answer, call)

    async def _attempt(self, call: Call, deadline: float) -> Answer:
        """One request, its answer streamed in whole within the size cap and the deadline."""
        auth = {"Authorization": f"Bearer {self._token}"} if call.auth and self._token else {}
        try:
            async with (
                asyncio.timeout(deadline - time.monotonic()),
                self._http.stream(
                    call.method,
                    call.path,
                    content=call.body,
                    params=call.params,
                    headers=auth
                    | ({"Content-Type": "application/json"} if call.body else {})
                    | dict(call.headers or {}),
                ) as response,
            ):
                body = _core.Body(response, self.max_answer_bytes)
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
                return body.answer()
        except httpx.DecodingError as error:
            raise ProtocolError(f"{call.method} {call.path}: undecodable answer: {error}") from None

    async def _json(self, call: Call) -> Any:
        return _core.json_of(await self._send(call))

    async def limits(self) -> Limits:
        """The server's request limits, read once; documented defaults for an older server."""
        if self._limits is None:
            try:
                self._limits = Limits.from_json(await self._json(Call("GET", "/limits")))
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

    async def predict(
        self,
        rows: Rows,
        *,
        model_version: str | None = None,
        concurrency: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Predictions:
        """As :meth:`iris_client.IrisClient.predict`: split, pinned to one version, in order."""
        plan, send = await self._chunk_sender(rows, {}, progress, concurrency)
        first = await send(plan[0], model_version)
        version = model_version or first.model_version
        parts = [first, *await gathered([send(chunk, version) for chunk in plan[1:]])]
        rows_out: list[Prediction] = [p for part in parts for p in part.predictions]
        return Predictions(first.model_version, tuple(rows_out))

    async def _chunk_sender(
        self,
        rows: Rows,
        headers: Mapping[str, str],
        progress: ProgressCallback | None,
        concurrency: int | None,
    ) -> tuple[list[range], Callable[[range, str | None], Awaitable[Predictions]]]:
        """As the blocking client's: the chunks, and how one is sent (``concurrency`` at a
        time at most)."""
        data = _core.instances(rows)
        limits = await self.limits()
        plan = _core.plan_chunks(data, limits.max_instances, limits.max_body_bytes)
        done = 0
        gate = asyncio.Semaphore(max(1, min(concurrency or self.concurrency, MAX_CONCURRENCY)))

        async def send(chunk: range, version: str | None) -> Predictions:
            nonlocal done
            body = _core.predict_body(data[chunk.start : chunk.stop], version)
            call = Call("POST", "/predict", body, headers=headers or None)
            async with gate:
                try:
                    answer = _core.predictions(await self._json(call), len(chunk))
                except ProblemError as error:
                    raise _core.shifted(error, chunk.start) from None
            done += len(chunk)
            if progress is not None:
                progress(done, len(data))
            return answer

        return list(plan), send

    async def infer(self, rows: Any, *, model_version: str | None = None) -> Inferred:
        """The Open Inference Protocol's inference over HTTP in the binary form, as
        :meth:`IrisClient.infer` with ``protocol="http"`` (gRPC is the blocking client's)."""
        data = _oip.measurements(rows)
        body, headers = _oip.http_request(data)
        answer = await self._send(Call("POST", _oip.path(model_version), body, headers=headers))
        where = f"{self.url}{_oip.path(model_version)}"
        return _oip.read_http_answer(
            answer.content, answer.headers.get(_oip.HEADER), len(data), where
        )

    async def gradients(
        self,
        rows: Rows,
        labels: Sequence[str | int],
        *,
        reduction: Reduction = "mean",
        include: Sequence[Include] = (),
        model_version: str | None = None,
    ) -> Gradients:
        body = _core.gradients_body(rows, labels, reduction, include, model_version)
        answer = Gradients.from_json(await self._json(Call("POST", "/gradients", body)))
        return answer.shaped_for(len(labels))

    async def train(
        self,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        data: Sequence[Mapping[str, float | str]] | str | os.PathLike[str] | None = None,
        activate: bool = True,
        min_validation_accuracy: float | None = None,
        note: str | None = None,
    ) -> AsyncJobHandle:
        body = _core.train_body(hyperparameters, data, activate, min_validation_accuracy, note)
        answer = await self._json(Call("POST", "/train", body, auth=True, idempotent=False))
        return AsyncJobHandle(self, Job.from_json(answer))

    async def job(self, job_id: str) -> Job:
        return Job.from_json(await self._json(Call("GET", _core.job_path(job_id))))

    async def handle(self, job_id: str) -> AsyncJobHandle:
        return AsyncJobHandle(self, await self.job(job_id))

    async def jobs(self, limit: int | None = None) -> list[Job]:
        params = {"limit": limit} if limit is not None else None
        return _core.job_list(await self._json(Call("GET", "/train", params=params)))

    async def cancel(self, job_id: str) -> Job:
        call = Call("POST", _core.job_path(job_id, "/cancel"), auth=True, idempotent=False)
        return Job.from_json(await self._json(call))

    async def delete_job(self, job_id: str) -> None:
        await self._send(Call("DELETE", _core.job_path(job_id), auth=True, idempotent=False))

    async def models(self) -> ModelList:
        return ModelList.from_json(await self._json(Call("GET", "/models")))

    async def model(self, version: str) -> ModelDetail:
        return ModelDetail.from_json(await self._json(Call("GET", _core.model_path(version))))

    async def delete_model(self, version: str) -> None:
        await self._send(Call("DELETE", _core.model_path(version), auth=True, idempotent=False))

    async def activate(self, version: str) -> Activation:
        call = Call("POST", _core.model_path(version, "/activate"), auth=True, idempotent=False)
        return Activation.from_json(await self._json(call))

    async def check_token(self) -> bool:
        """As :meth:`iris_client.IrisClient.check_token`."""
        await self._send(Call("GET", "/healthz"))
        return _core.token_accepted(await self._send(_core.TOKEN_PROBE))

    async def health(self) -> Health:
        await self._send(Call("GET", "/healthz"))
        return _core.health(await self._send(Call("GET", "/readyz", expected=(503,))))

    # -- the rollout: routing, its history, feedback, monitoring --------------------------------

    async def routing(self) -> Routing:
        """As :meth:`iris_client.IrisClient.routing`."""
        return Routing.from_json(await self._json(Call("GET", "/routing")))

    async def set_routing(
        self,
        canary: Canary | Mapping[str, Any] | None = None,
        shadow: str | Mapping[str, Any] | None = None,
        revision: int | None = None,
    ) -> Routing:
        """As :meth:`iris_client.IrisClient.set_routing` (not sent twice once it may have
        arrived: see there why)."""
        body = _core.routing_body(canary, shadow, revision)
        call = Call("PUT", "/routing", body, auth=True, idempotent=False)
        return Routing.from_json(await self._json(call))

    async def clear_routing(self, revision: int | None = None) -> Routing:
        return await self.set_routing(None, None, revision)

    async def routing_history(self, limit: int | None = None) -> list[RoutingEvent]:
        params = {"limit": limit} if limit is not None else None
        return _core.history(await self._json(Call("GET", "/routing/history", params=params)))

    async def feedback(
        self, model_version: str, rows: Rows, labels: Sequence[str | int]
    ) -> Feedback:
        """As :meth:`iris_client.IrisClient.feedback`: split by the server's limits, the
        requests one after another, none sent twice once it may have arrived."""
        data = _core.instances(rows)
        given = _core.feedback_labels(labels, len(data))
        limits = await self.limits()
        answers: list[Feedback] = []
        for chunk, body in _core.feedback_requests(
            model_version, data, given, limits.max_instances, limits.max_body_bytes
        ):
            call = Call("POST", "/feedback", body, auth=True, idempotent=False)
            try:
                answer = await self._json(call)
            except ProblemError as error:
                raise _core.shifted(error, chunk.start) from None
            answers.append(_core.feedback_answer(answer, model_version, len(chunk)))
        return _core.feedback_total(model_version, answers)

    async def monitoring(self) -> Monitoring:
        return Monitoring.from_json(await self._json(Call("GET", "/monitoring")))

    async def predict_batches(
        self,
        rows: Rows,
        *,
        model_version: str | None = None,
        routing_key: str | None = None,
        concurrency: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Predictions]:
        """As :meth:`iris_client.IrisClient.predict_batches`: each batch routed on its own."""
        headers = _core.routing_headers(routing_key)
        plan, send = await self._chunk_sender(rows, headers, progress, concurrency)
        return await gathered([send(chunk, model_version) for chunk in plan])


class AsyncJobHandle:
    """As :class:`iris_client.JobHandle`, with awaitable ``refresh``, ``wait`` and ``cancel``."""

    def __init__(self, client: AsyncIrisClient, job: Job) -> None:
        self.client = client
        self.job = job

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def __repr__(self) -> str:
        return f"AsyncJobHandle({self.job_id!r}, status={self.job.status!r})"

    async def refresh(self) -> Job:
        self.job = await self.client.job(self.job_id)
        return self.job

    async def wait(
        self,
        progress: Callable[[Job], object | Awaitable[object]] | None = None,
        *,
        timeout: float | None = None,
        interval: float = POLL_SECONDS,
    ) -> Job:
        """Poll until the job ends; ``progress(job)`` (plain or async) on every change."""
        interval = _core.poll_interval(interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Job | None = None
        while True:
            job = await self.refresh()
            if progress is not None and job != last:
                outcome = progress(job)
                if inspect.isawaitable(outcome):
                    await outcome
            last = job
            if job.ended:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(job.job_id, job.status, timeout or 0.0)
                await asyncio.sleep(min(interval, left))
            else:
                await asyncio.sleep(interval)

    async def cancel(self) -> Job:
        self.job = await self.client.cancel(self.job_id)
        return self.job


async def gathered(calls: Sequence[Awaitable[T]]) -> list[T]:
    """The results of ``calls`` run at once, in order; the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

"""What the blocking and the asyncio client share: requests, retries, answers, input rows.

No I/O happens here: each client sends a :class:`Call` its own way, streams the answer into a
:class:`Body` (which bounds it) and hands the :class:`Answer` to :func:`check`, so the two stay
the same client with two ways of waiting.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import operator
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

import httpx
import orjson

from iris_client.csvio import read_table
from iris_client.errors import (
    ConnectionFailedError,
    InputError,
    ProblemError,
    ProtocolError,
    field_errors,
    problem_class,
)
from iris_client.types import (
    CLASSES,
    FEATURES,
    JOB_ID,
    Canary,
    Feedback,
    Health,
    Hyperparameters,
    Job,
    Predictions,
    RoutingEvent,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

from iris_client.settings import MAX_POLL_SECONDS, MIN_POLL_SECONDS, __version__

RETRY_STATUSES = frozenset({502, 503, 504})
# What the client asks for and decodes: one layer of gzip or deflate expands a 64 KiB read to at
# most about 64 MiB, so the size cap is passed by one read at most; brotli, zstd or layered
# encodings could expand a read without a useful bound, and are refused.
ACCEPT_ENCODING = "gzip, deflate"
ENCODINGS = frozenset({"gzip", "deflate", "identity", ""})
# Room for {"model_version": "...", } around the instances when a chunk's size is planned.
BODY_MARGIN = 512

Rows = Union[
    Sequence[Mapping[str, float]],
    Sequence[Sequence[float]],
    "NDArray[np.floating[Any]]",
    str,
    "os.PathLike[str]",
]
ProgressCallback = Callable[[int, int], object]


def base_url(url: str) -> str:
    """``url`` checked to be http(s) with a host, without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the server URL {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


# -- requests and retries ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API request. ``idempotent`` calls are retried; ``expected`` statuses are returned."""

    method: str
    path: str
    body: bytes | None = None
    params: Mapping[str, str | int] | None = None
    auth: bool = False
    idempotent: bool = True
    expected: tuple[int, ...] = ()
    headers: Mapping[str, str] | None = None  # the body's own (its type, its framing)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``attempts`` counts the first try."""

    attempts: int = 4
    base: float = 0.25
    cap: float = 4.0
    max_retry_after: float = 30.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * 2**retry))


def may_retry(policy: RetryPolicy, retries: int, delay: float, deadline: float) -> bool:
    """Is there an attempt left, and time for it after ``delay`` before the call's deadline?"""
    return retries + 1 < policy.attempts and time.monotonic() + delay < deadline


def retryable(error: httpx.TransportError, idempotent: bool) -> bool:
    """May a request that failed with ``error`` be sent again?

    A refused or timed-out connection never carried the request, so any call may retry it.
    Once a request may have reached the server (a connection broken mid-answer), only an
    idempotent call is sent again: a ``POST /train`` never twice.
    """
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    return idempotent and isinstance(error, (httpx.NetworkError, httpx.RemoteProtocolError))


def retry_after(answer: Answer) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or a date); None when absent or malformed."""
    value = answer.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # nan, inf and their kin say nothing usable; a time already past means now
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, when - time.time())


def deadline_error(url: str, timeout: float) -> ConnectionFailedError:
    return ConnectionFailedError(f"{url} did not answer within the {timeout:g} s timeout")


def connection_error(
    error: httpx.TransportError, url: str, timeout: float
) -> ConnectionFailedError:
    """A one-line account of a transport failure, naming the server."""
    if isinstance(error, httpx.ConnectTimeout):
        what = f"cannot reach {url}: the connection timed out"
    elif isinstance(error, httpx.ConnectError):
        reason = str(error).split("] ")[-1] or "connection failed"
        what = f"cannot reach {url}: {reason}"
    elif isinstance(error, httpx.TimeoutException):
        return deadline_error(url, timeout)
    else:
        reason = str(error) or type(error).__name__
        what = f"the connection to {url} broke before an answer: {reason}"
    return ConnectionFailedError(what)


@dataclass(frozen=True)
class Answer:
    """An answer read whole, within the client's bounds: all the rest of the client sees."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    method: str
    url: httpx.URL


class Body:
    """An answer's decoded bytes as they stream in, refused once past ``limit``.

    Made when the head has arrived: a redirect, an encoding the client did not ask for, or a
    declared length past the limit fail here, before any of the body is read.
    """

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.response = response
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.what = what = f"{response.request.method} {response.request.url.path}"
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "nowhere")[:200]
            raise ProtocolError(
                f"{what}: the server answered HTTP {response.status_code}, a redirect to "
                f"{location}, which the client does not follow; is the URL right?"
            )
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ENCODINGS:
            raise ProtocolError(f"{what}: the answer is encoded as {encoding!r:.60}, not asked for")
        declared = response.headers.get("content-length", "")
        if encoding in ("", "identity") and declared.isdigit() and int(declared) > limit:
            raise self.too_large()

    def too_large(self) -> ProtocolError:
        return ProtocolError(
            f"{self.what}: the answer is larger than the client's limit of {self.limit} bytes "
            "(max_answer_bytes); is this an Iris service?"
        )

    def add(self, chunk: bytes) -> None:
        """One decoded chunk (``iter_bytes``), counted before it is kept."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise self.too_large()
        self.chunks.append(chunk)

    def answer(self) -> Answer:
        request = self.response.request
        return Answer(
            self.response.status_code,
            self.response.headers,
            b"".join(self.chunks),
            request.method,
            request.url,
        )


def problem_from(response: Answer) -> ProblemError:
    """The exception for a 4xx/5xx answer, from its problem document where it has one."""
    status = response.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: Any = None
    with contextlib.suppress(ValueError):
        body = orjson.loads(response.content)
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        job_id = body.get("job_id")
        return problem_class(status)(
            status,
            str(body.get("title") or title),
            body["detail"],
            errors=field_errors(body.get("errors")),
            job_id=job_id if isinstance(job_id, str) else None,
            instance=body.get("instance") if isinstance(body.get("instance"), str) else None,
            retry_after=retry_after(response),
        )
    text = " ".join(response.content[:400].decode("utf-8", "replace").split())[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = body["error"]
    return problem_class(status)(status, title, f"{response.url.path}: {text or 'no detail given'}")


def check(response: Answer, call: Call) -> Answer:
    if response.status_code >= 400 and response.status_code not in call.expected:
        raise problem_from(response)
    return response


def json_of(response: Answer) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProtocolError(
            f"{response.method} {response.url}: the answer is not JSON "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no type')}); "
            "is this an Iris service?"
        ) from None


def headers(token: str | None) -> dict[str, str]:
    found = {
        "User-Agent": f"iris-client/{__version__}",
        "Accept": "application/json",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    return found | ({"Authorization": f"Bearer {token}"} if token else {})


# -- input rows ----------------------------------------------------------------------------


def instances(rows: Rows) -> list[dict[str, float]]:
    """Measurement mappings, an (n, 4) NumPy array or a CSV path, as ``/predict`` rows."""
    if isinstance(rows, (str, os.PathLike)):
        return read_table(rows).rows
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(rows, numpy.ndarray):
        if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
            raise InputError(
                f"an array of measurements must have shape (n, 4), not {tuple(rows.shape)}"
            )
        return [
            {"sepal_length": a, "sepal_width": b, "petal_length": c, "petal_width": d}
            for a, b, c, d in rows.tolist()
        ]
    found = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            found.append(dict(row))
        elif isinstance(row, Sequence) and not isinstance(row, str) and len(row) == 4:
            found.append(dict(zip(FEATURES, row, strict=True)))
        else:
            raise InputError(
                f"row {i}: {row!r:.60}; expected a mapping of the four measurements, "
                "or four numbers in the order " + ", ".join(FEATURES)
            )
    if not found:
        raise InputError("no rows to send")
    return found


def samples(data: Sequence[Mapping[str, float | str]] | str | os.PathLike[str]) -> list[Any]:
    if isinstance(data, (str, os.PathLike)):
        return list(read_table(data, need_species=True).samples())
    return [dict(row) for row in data]


def predict_body(rows: Sequence[Mapping[str, float]], version: str | None) -> bytes:
    body: dict[str, Any] = {"instances": rows}
    if version is not None:
        body["model_version"] = version
    return orjson.dumps(body)


def plan_chunks(rows: Sequence[Mapping[str, float]], max_rows: int, max_bytes: int) -> list[range]:
    """Consecutive row ranges of at most ``max_rows`` rows whose bodies fit in ``max_bytes``."""
    planned = plan_bodies(
        len(rows), max_rows, max_bytes, lambda start, stop: predict_body(rows[start:stop], None)
    )
    return [chunk for chunk, _ in planned]


_INSTANCE = re.compile(r"\binstances\.(\d+)")


def shifted(error: ProblemError, offset: int) -> ProblemError:
    """A chunk's problem with its row numbers counted from the start of the whole input."""
    if offset == 0:
        return error

    def shift_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        if len(loc) >= 2 and loc[0] == "instances" and isinstance(loc[1], int):
            return ("instances", loc[1] + offset, *loc[2:])
        return loc

    detail = _INSTANCE.sub(lambda m: f"instances.{int(m.group(1)) + offset}", error.detail)
    moved = type(error)(
        error.status,
        error.title,
        detail,
        errors=[replace(e, loc=shift_loc(e.loc)) for e in error.errors],
        job_id=error.job_id,
        instance=error.instance,
        retry_after=error.retry_after,
    )
    return moved


def first_row(error: ProblemError) -> int | None:
    """The input row a 422 names first (after :func:`shifted`), if any."""
    for e in error.errors:
        if len(e.loc) >= 2 and e.loc[0] == "instances" and isinstance(e.loc[1], int):
            return e.loc[1]
    match = _INSTANCE.search(error.detail)
    return int(match.group(1)) if match else None


def train_body(
    hyperparameters: Hyperparameters | Mapping[str, Any] | None,
    data: Sequence[Mapping[str, float | str]] | str | os.PathLike[str] | None,
    activate: bool,
    min_validation_accuracy: float | None,
    note: str | None = None,
) -> bytes:
    """The ``POST /train`` body; what is left out takes the server's default."""
    body: dict[str, Any] = {"activate": activate}
    if hyperparameters:
        body["hyperparameters"] = dict(hyperparameters)
    if data is not None:
        body["dataset"] = {"samples": samples(data)}
    if min_validation_accuracy is not None:
        body["min_validation_accuracy"] = min_validation_accuracy
    if note is not None:
        body["note"] = note
    return orjson.dumps(body)


def job_path(job_id: str, suffix: str = "") -> str:
    if not JOB_ID.fullmatch(job_id):
        raise InputError(f"{job_id!r} is not a job id (32 hex digits)")
    return f"/train/{job_id}{suffix}"


VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def model_path(version: str, suffix: str = "") -> str:
    if not VERSION.fullmatch(version):
        raise InputError(f"{version!r} is not a model version")
    return f"/models/{version}{suffix}"


def gradients_body(
    rows: Rows,
    labels: Sequence[str | int],
    reduction: str,
    include: Sequence[str],
    version: str | None,
) -> bytes:
    body: dict[str, Any] = {
        "instances": instances(rows),
        "labels": list(labels),
        "reduction": reduction,
        "include": list(include),
    }
    if version is not None:
        body["model_version"] = version
    return orjson.dumps(body)


def job_list(answer: Any) -> list[Job]:
    jobs = answer.get("jobs") if isinstance(answer, dict) else None
    if not isinstance(jobs, list):
        raise ProtocolError("jobs answer: 'jobs' is not a list")
    return [Job.from_json(job) for job in jobs]


def predictions(answer: Any, rows: int) -> Predictions:
    """A ``/predict`` answer that must hold one prediction per row sent."""
    found = Predictions.from_json(answer)
    if len(found) != rows:
        raise ProtocolError(f"predict answer: {len(found)} predictions for the {rows} rows sent")
    return found


# An authenticated call that changes nothing: no job has the nil id (job ids are uuid4, whose
# version digit is 4), so a server that accepts the token answers 404 "no training job".
TOKEN_PROBE = Call("GET", "/auth", auth=True, expected=(204, 404))


def token_accepted(answer: Answer) -> bool:
    """True for the 204 of ``GET /auth`` (the token passed); False for a server without that
    route (not verified). A refused token raised AuthenticationError before this."""
    return answer.status_code == 204


def health(readyz: Answer) -> Health:
    """Health from a /readyz answer (after /healthz answered): 200 ready, 503 not."""
    answer = json_of(readyz)
    if readyz.status_code == 503:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        return Health(alive=True, ready=False, problem=detail if isinstance(detail, str) else None)
    version = answer.get("model_version") if isinstance(answer, dict) else None
    problem = answer.get("problem") if isinstance(answer, dict) else None
    return Health(
        alive=True,
        ready=True,
        model_version=version if isinstance(version, str) else None,
        problem=problem if isinstance(problem, str) else None,
    )


def poll_interval(seconds: float) -> float:
    return min(max(seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS)


# -- the rollout: routing, feedback ----------------------------------------------------------

ROUTING_KEY_HEADER = "X-Routing-Key"
MAX_ROUTING_KEY = 1024
# Printable ASCII: what any HTTP stack carries in a header unchanged (no CR or LF to split it,
# no space at either end, which HTTP trims).
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def routing_headers(key: str | None) -> dict[str, str]:
    """The ``X-Routing-Key`` header for ``key``: the same key always meets the same version."""
    if key is None:
        return {}
    if not _HEADER_VALUE.fullmatch(key) or len(key) > MAX_ROUTING_KEY:
        raise InputError(
            f"routing key {key!r:.60}: expected 1 to {MAX_ROUTING_KEY} printable ASCII characters"
        )
    return {ROUTING_KEY_HEADER: key}


def canary_json(canary: Canary | Mapping[str, Any]) -> dict[str, Any]:
    return canary.to_json() if isinstance(canary, Canary) else dict(canary)


def shadow_json(shadow: str | Mapping[str, Any]) -> dict[str, Any]:
    """A shadow as ``PUT /routing`` takes it, from a version or what ``GET /routing`` sent."""
    return {"version": shadow} if isinstance(shadow, str) else dict(shadow)


def routing_body(
    canary: Canary | Mapping[str, Any] | None,
    shadow: str | Mapping[str, Any] | None,
    revision: int | None,
) -> bytes:
    """The ``PUT /routing`` body: the whole plan but stable (a part left None is cleared)."""
    body: dict[str, Any] = {
        "canary": canary_json(canary) if canary is not None else None,
        "shadow": shadow_json(shadow) if shadow is not None else None,
    }
    if revision is not None:
        body["revision"] = revision
    return orjson.dumps(body)


def feedback_labels(labels: Sequence[str | int], rows: int) -> list[str | int]:
    """Labels checked to be species names or class indices, one per row (else InputError,
    naming the label), so that no request of a split feedback is refused for them."""
    found: list[str | int] = []
    for i, label in enumerate(labels):
        if isinstance(label, str) and label in CLASSES:
            found.append(label)
            continue
        if not isinstance(label, (bool, str)):
            with contextlib.suppress(TypeError):
                index = operator.index(label)  # NumPy's integers too
                if 0 <= index < len(CLASSES):
                    found.append(index)
                    continue
        raise InputError(
            f"label {i}: {label!r:.60} is neither a species ({', '.join(CLASSES)}) "
            f"nor a class index (0 to {len(CLASSES) - 1})"
        )
    if len(found) != rows:
        raise InputError(f"{len(found)} labels for {rows} rows; give one label per row")
    return found


def feedback_body(
    version: str, rows: Sequence[Mapping[str, float]], labels: Sequence[str | int]
) -> bytes:
    return orjson.dumps({"model_version": version, "instances": list(rows), "labels": list(labels)})


def feedback_requests(
    version: str,
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[str | int],
    max_rows: int,
    max_bytes: int,
) -> list[tuple[range, bytes]]:
    """The ``POST /feedback`` bodies of a feedback split by the server's limits, in order."""
    return plan_bodies(
        len(rows),
        max_rows,
        max_bytes,
        lambda start, stop: feedback_body(version, rows[start:stop], labels[start:stop]),
    )


def feedback_answer(answer: Any, version: str, rows: int) -> Feedback:
    """A ``/feedback`` answer that must have counted every label sent, for ``version``."""
    found = Feedback.from_json(answer)
    if found.count != rows or found.model_version != version:
        raise ProtocolError(
            f"feedback answer: {found.count} labels counted for {found.model_version!r:.80}, "
            f"not the {rows} sent for {version!r:.80}"
        )
    return found


def feedback_total(version: str, answers: Sequence[Feedback]) -> Feedback:
    """The answers of a split feedback as one: counts added, the rule's decision kept."""
    decisions = [a.decision for a in answers if a.decision is not None]
    return Feedback(
        version,
        sum(a.count for a in answers),
        sum(a.correct for a in answers),
        decisions[0] if decisions else None,
    )


def plan_bodies(
    count: int, max_rows: int, max_bytes: int, body: Callable[[int, int], bytes]
) -> list[tuple[range, bytes]]:
    """Consecutive ranges of at most ``max_rows`` of ``count`` items whose bodies,
    ``body(start, stop)``, fit in ``max_bytes``, each with its body."""
    plan: list[tuple[range, bytes]] = []
    start = 0
    step = max(1, max_rows)
    while start < count:
        stop = min(start + step, count)
        found = body(start, stop)
        size = len(found) + BODY_MARGIN
        if size > max_bytes and stop - start > 1:
            # shrink to what fits, judged by this chunk's bytes per row
            step = max(1, math.floor((stop - start) * (max_bytes - BODY_MARGIN) / size))
            continue
        if size > max_bytes:
            raise InputError(f"row {start}: one row is larger than the server's body limit")
        plan.append((range(start, stop), found))
        start = stop
    return plan


def history(answer: Any) -> list[RoutingEvent]:
    entries = answer.get("history") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        raise ProtocolError("routing history answer: 'history' is not a list")
    return [RoutingEvent.from_json(entry) for entry in entries]

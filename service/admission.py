"""What one worker admits at once: request body bytes, requests in progress, event streams.

Each limit protects serving from one kind of client without letting it take another kind's
place:

- **Body bytes** (:class:`BodyBudget`, IRIS_MAX_BUFFERED_BYTES) are taken when they start
  to arrive, never at the head, so a head that declares 16 MiB and sends nothing holds
  nothing (and one that sends too slowly to finish in time is closed by the protocol's rate
  floor, service/server.py). Small bodies (at most SMALL_BODY_BYTES: every one-row and
  few-row prediction, every training request on the shipped data) may use the whole budget;
  large ones together only all but a reserve, so uploads, however many and however fast,
  never leave a small body without room. A large body with a declared length takes it whole
  with its first bytes, so an upload admitted is not refused halfway.
- **Requests in progress** (:class:`Admission`, IRIS_MAX_CONNECTIONS), from the end of a
  head to the end of its answer. Connections with no request in progress are the protocol's
  (service/server.py, IRIS_MAX_IDLE_CONNECTIONS), and an event stream moves from this count
  to its own (IRIS_MAX_EVENT_STREAMS, all jobs, and IRIS_MAX_EVENT_STREAMS_PER_JOB): clients
  that only listen never take the place of requests.

Everything here runs on the worker's event loop: plain counters, no locks.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Scope

from service.errors import ProblemError

SMALL_BODY_BYTES = 64 * 1024
SMALL_BODY_RESERVE = 0.25  # of the budget, kept for small bodies
RETRY = {"Retry-After": "1"}


class BodyBudget:
    """Bytes of request bodies this worker holds, all requests together, and their limits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.large_limit = limit - int(limit * SMALL_BODY_RESERVE)
        self.held = 0
        self.held_large = 0

    def hold(self) -> BodyHold:
        return BodyHold(self)


class BodyHold:
    """The bytes one request's body holds of the budget: grown as they arrive, given back
    when the request ends."""

    __slots__ = ("budget", "bytes", "large")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0
        self.large = False

    def grow(self, size: int) -> bool:
        """Hold ``size`` bytes in all (large once past SMALL_BODY_BYTES); False, holding
        what it held, when the budget has no room."""
        budget = self.budget
        large = size > SMALL_BODY_BYTES
        held = budget.held - self.bytes + size
        held_large = budget.held_large - self.bytes * self.large + size * large
        if held > budget.limit or held_large > budget.large_limit:
            return False
        budget.held, budget.held_large = held, held_large
        self.bytes, self.large = size, large
        return True

    def release(self) -> None:
        self.budget.held -= self.bytes
        self.budget.held_large -= self.bytes * self.large
        self.bytes = 0


class Admission:
    """Requests in progress and event streams of one worker, against their allowances."""

    SCOPE_KEY = "iris.admission"

    def __init__(self, requests: int, streams: int, streams_per_job: int) -> None:
        self.max_requests = requests
        self.max_streams = streams
        self.max_streams_per_job = streams_per_job
        self.requests = 0
        self.streams = 0
        self.streams_by_job: dict[str, int] = {}

    def enter(self) -> bool:
        if self.requests >= self.max_requests:
            return False
        self.requests += 1
        return True

    def leave(self) -> None:
        self.requests -= 1

    def busy_detail(self) -> str:
        return (
            f"the server has as many requests in progress as it may ({self.max_requests}, "
            "IRIS_MAX_CONNECTIONS); retry shortly"
        )

    def stream(self, job_id: str) -> Callable[[], None]:
        """Count this request as a stream of ``job_id`` rather than a request in progress,
        until the function returned is called; a 503 with Retry-After past the stream
        allowances."""
        on_job = self.streams_by_job.get(job_id, 0)
        if self.streams >= self.max_streams:
            raise ProblemError(
                503,
                f"the server has as many event streams open as it may ({self.max_streams}, "
                "IRIS_MAX_EVENT_STREAMS); retry shortly",
                RETRY,
            )
        if on_job >= self.max_streams_per_job:
            raise ProblemError(
                503,
                f"job {job_id} has as many event streams open as it may "
                f"({self.max_streams_per_job}, IRIS_MAX_EVENT_STREAMS_PER_JOB); retry shortly",
                RETRY,
            )
        self.streams += 1
        self.streams_by_job[job_id] = on_job + 1
        self.requests -= 1

        def release() -> None:
            self.requests += 1
            self.streams -= 1
            left = self.streams_by_job[job_id] - 1
            if left:
                self.streams_by_job[job_id] = left
            else:
                del self.streams_by_job[job_id]

        return release


UNCOUNTED = Admission(requests=2**62, streams=2**62, streams_per_job=2**62)
"""For an app called without its edge (nothing counts there)."""


def admission_of(scope: Scope) -> Admission:
    found = scope.get(Admission.SCOPE_KEY)
    return found if isinstance(found, Admission) else UNCOUNTED

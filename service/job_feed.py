"""Live jobs for event streams: one reader of the job store per job, however many follow it.

A stream of a job's events (``GET /train/{id}/events``) follows a :class:`Feed`: the first
follower of a job starts a task that reads the job's record every POLL_SECONDS on the job
threads and wakes every follower when it changed; the last follower to leave stops it. So a
thousand dashboards on one job cost one read a poll, and the job threads stay free for the
requests that need them.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from service.job_store import TERMINAL, JobError, JobsBusyError

POLL_SECONDS = 0.2  # how often a followed job's record is read

Job = dict[str, Any]
ReadJob = Callable[[str], Awaitable[Job]]


class Feed:
    """The latest record of one job, and an event set each time it changes."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.gone = False  # the record was deleted, or the store failed: no more news
        self.changed = asyncio.Event()
        self.followers = 0
        self.reader: asyncio.Task[None] | None = None

    @property
    def over(self) -> bool:
        return self.gone or self.job["status"] in TERMINAL

    def publish(self, job: Job | None) -> None:
        if job is None:
            self.gone = True
        else:
            self.job = job
        self.changed.set()
        self.changed = asyncio.Event()


class JobFeeds:
    """The feeds of one worker's followed jobs."""

    def __init__(self, read: ReadJob, poll_seconds: float = POLL_SECONDS) -> None:
        self.read = read
        self.poll_seconds = poll_seconds
        self.feeds: dict[str, Feed] = {}
        self.reading: dict[str, asyncio.Future[Job]] = {}

    async def latest(self, job_id: str) -> Job:
        """The job's record: its feed's when it is followed; else read once for all who ask
        at the same time (JobError when there is none)."""
        feed = self.feeds.get(job_id)
        if feed is not None and not feed.gone:
            return feed.job
        pending = self.reading.get(job_id)
        if pending is None:
            pending = self.reading[job_id] = asyncio.ensure_future(self.read(job_id))
            pending.add_done_callback(lambda _: self.reading.pop(job_id, None))
        return await asyncio.shield(pending)

    async def follow(
        self, job: Job, quiet_seconds: float, stop: asyncio.Event | None = None
    ) -> AsyncIterator[Job | None]:
        """The job's record now and each time it changes, until it ends, is gone or ``stop``
        is set; None after ``quiet_seconds`` without a change (a stream's cue for a
        keep-alive)."""
        job_id = job["job_id"]
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = Feed(job)
            if not feed.over:
                feed.reader = asyncio.create_task(self.poll(job_id, feed))
        feed.followers += 1
        stopping = asyncio.ensure_future((stop or asyncio.Event()).wait())
        try:
            yield feed.job
            while not feed.over:
                changed = asyncio.ensure_future(feed.changed.wait())
                await asyncio.wait(
                    (changed, stopping), timeout=quiet_seconds, return_when=FIRST_COMPLETED
                )
                changed.cancel()
                if stopping.done():
                    return
                if not changed.done() or changed.cancelled():
                    yield None
                    continue
                if not feed.gone:
                    yield feed.job
        finally:
            stopping.cancel()
            feed.followers -= 1
            if feed.followers == 0 and self.feeds.get(job_id) is feed:
                del self.feeds[job_id]
                if feed.reader is not None:
                    feed.reader.cancel()

    async def poll(self, job_id: str, feed: Feed) -> None:
        while not feed.over:
            await asyncio.sleep(self.poll_seconds)
            try:
                job = await self.read(job_id)
            except JobsBusyError:  # locked for a moment: the next poll reads again
                continue
            except JobError:  # its record was deleted, or the database is unavailable
                feed.publish(None)
                return
            if job != feed.job:
                feed.publish(job)

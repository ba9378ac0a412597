"""Figures of the PostgreSQL backend on a throwaway cluster: ``python bench/bench_postgres.py``.

Prints, on this machine:

* how long the throwaway cluster of harness/postgres.py takes to start (initdb, start,
  template database);
* the latency of the store calls a replica makes (current, load, versions, job reads and
  heartbeats), median and 95th percentile over ``--calls`` calls each;
* activation propagation, the issue's target of 1 s: ``--replicas`` listeners (threads, each
  with its own store and LISTEN connection, as replicas would have) each reload the current
  version when notified; for ``--activations`` activations the time from the start of
  ``activate()`` until each replica holds the new version;
* an outage: how long a call takes to fail while the server is stopped, and how long after
  the server is back the first call succeeds again.

Bounded: fixed counts, and the cluster is always removed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.models import random_model
from harness.postgres import PgCluster
from model.errors import StoreUnavailableError
from service.job_store import JobSpec
from service.postgres import Listener, open_stores
from service.postgres.models import PostgresModelStore


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {ms(statistics.median(ordered))}, p95 {ms(p95)}, max {ms(ordered[-1])}"


def time_calls(call: Callable[[], Any], count: int) -> list[float]:
    call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


class Replica:
    """What a replica's registry does on a notification: read the pointer, load, swap."""

    def __init__(self, url: str) -> None:
        self.store = PostgresModelStore(url)
        self.serving: str | None = None
        self.changed = threading.Condition()
        self.listener = Listener(url, self.refresh)

    def refresh(self, _version: str | None) -> None:
        stored = self.store.load(self.store.current())
        with self.changed:
            self.serving = stored.version
            self.changed.notify_all()

    def wait_for(self, version: str, timeout: float) -> float | None:
        """Seconds until this replica serves ``version`` (measured from the call), or None."""
        started = time.perf_counter()
        with self.changed:
            if self.changed.wait_for(lambda: self.serving == version, timeout):
                return time.perf_counter() - started
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--activations", type=int, default=40)
    args = parser.parse_args()

    cluster = PgCluster.create()
    try:
        print(f"cluster start (initdb, pg_ctl start, template): {cluster.startup_seconds:.2f} s")
        url = cluster.url(cluster.create_database())
        stores = open_stores(url)
        print(f"schema version {stores.jobs.initialize()}")
        models, jobs = stores.models, stores.jobs
        versions = [models.save(random_model(hidden=4, seed=s), activate=True) for s in (1, 2)]
        job = jobs.create(JobSpec({"epochs": 10}, {"source": "iris", "rows": 150}))["job_id"]
        jobs.start(job, 1)

        print(f"\nstore calls ({args.calls} each, one thread)")
        progress = {"epoch": 1, "epochs": 10, "loss": 0.5}
        for name, call in (
            ("models.current()", models.current),
            ("models.load(version)", lambda: models.load(versions[0])),
            ("models.versions()", models.versions),
            ("jobs.get(job_id)", lambda: jobs.get(job)),
            ("jobs.recent(50)", lambda: jobs.recent(50)),
            ("jobs.heartbeat(job_id, progress)", lambda: jobs.heartbeat(job, progress)),
        ):
            print(f"  {name:34} {percentiles(time_calls(call, args.calls))}")

        replicas = [Replica(url) for _ in range(args.replicas)]
        for replica in replicas:
            replica.listener.start()
            replica.listener.connected.wait(10)
        activate_seconds: list[float] = []
        reach: list[float] = []
        missed = 0
        for i in range(args.activations):
            version = versions[i % 2]
            started = time.perf_counter()
            models.activate(version)
            activate_seconds.append(time.perf_counter() - started)
            for replica in replicas:
                waited = replica.wait_for(version, 5.0)
                if waited is None:
                    missed += 1
                else:
                    reach.append(time.perf_counter() - started)
            time.sleep(0.02)
        print(
            f"\nactivation: {args.activations} activations, {args.replicas} replicas "
            "(listener threads, each loading the new version on notification)"
        )
        print(f"  activate() (verify, move, record, notify) {percentiles(activate_seconds)}")
        print(f"  activate() start -> a replica serves it     {percentiles(reach)}")
        print(f"  replicas that did not serve it within 5 s   {missed}")
        for replica in replicas:
            replica.listener.stop()
            replica.store.close()

        cluster.stop()
        failures: list[float] = []
        for _ in range(5):
            started = time.perf_counter()
            try:
                models.current()
            except StoreUnavailableError:
                failures.append(time.perf_counter() - started)
            time.sleep(0.3)
        cluster.start()
        started = time.perf_counter()
        while True:
            try:
                models.current()
                break
            except StoreUnavailableError:
                time.sleep(0.02)
        back = time.perf_counter() - started
        print("\noutage (pg_ctl stop, then start)")
        print(f"  a call while the server is down fails in  {percentiles(failures)}")
        print(f"  first successful call after the restart   {ms(back)}")
        stores.close()
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())

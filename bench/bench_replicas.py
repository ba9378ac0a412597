"""Replicas on PostgreSQL behind HAProxy: ``python bench/bench_replicas.py``.

Starts a throwaway PostgreSQL cluster (tests/pg_cluster.py), three ``iris-serve`` replicas on
one database, each with its own empty data directory, and HAProxy on 127.0.0.1 in front
(tests/replica_set.py, the set-up of tests/test_replicas.py). Prints:

* how long after a training job's success (its ``finished_at``, the database's clock) the
  last of the three replicas, asked directly, serves the new version (``--jobs`` jobs);
* how long after ``POST /models/{v}/activate`` answers 200 on one replica (each in turn) the
  last replica serves that version (``--activations`` activations);
* one-row ``/predict`` req/s with ``wrk`` (one thread, bench/post.lua) through HAProxy in
  front of one replica and of three, and straight to one replica for reference;
  ``--rounds`` interleaved rounds of ``--seconds`` s at ``--connections`` connections,
  after a 1 s warm-up of each; medians with [min-max].

Bounded: fixed counts and durations; every process and the cluster are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from harness.haproxy import HAProxy
from harness.postgres import PgCluster
from harness.replicas import AUTH, PREDICT, ReplicaSet, finished_at
from harness.servers import wait_for

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "post.lua"


def spread(samples: list[float], unit: float = 1.0, digits: int = 3) -> str:
    values = [s * unit for s in samples]
    return (
        f"{statistics.median(values):,.{digits}f} "
        f"[{min(values):,.{digits}f}-{max(values):,.{digits}f}]"
    )


def job_lags(replicas: ReplicaSet, count: int) -> list[float]:
    lags = []
    with httpx.Client(base_url=replicas.balancer_url, timeout=10.0) as client:
        for index in range(count):
            old = replicas.serving(replicas.servers[0])
            body = {"hyperparameters": {"epochs": 50, "seed": index + 1}}
            started = client.post("/train", json=body, headers=AUTH)
            started.raise_for_status()
            job, seen = replicas.follow_job(client, started.json()["job_id"], old, 60.0)
            if job["status"] != "succeeded":
                raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
            lags.append(max(seen.values()) - finished_at(job))
    return lags


def activation_lags(replicas: ReplicaSet, count: int) -> list[float]:
    with httpx.Client(base_url=replicas.balancer_url, timeout=10.0) as client:
        versions = [m["version"] for m in client.get("/models").json()["models"]]
    lags = []
    with httpx.Client(timeout=10.0) as client:
        for index in range(count):
            current = replicas.serving(replicas.servers[0])
            version = next(v for v in versions[index % len(versions) :] + versions if v != current)
            server = replicas.servers[index % len(replicas.servers)]
            answer = client.post(f"{server.url}/models/{version}/activate", headers=AUTH)
            answered_at = time.time()
            answer.raise_for_status()
            seen = replicas.wait_all_serve(version, 5.0)
            lags.append(max(seen.values()) - answered_at)
    return lags


def wrk(url: str, body: Path, connections: int, seconds: int) -> dict[str, Any]:
    command = [
        shutil.which("wrk") or "/usr/bin/wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout=10s",
        "-s",
        str(LUA),
        f"{url}/predict",
        "--",
        str(body),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return result
    raise RuntimeError(f"wrk printed no result ({out.returncode}):\n{out.stdout}\n{out.stderr}")


def throughput(
    replicas: ReplicaSet, workdir: Path, rounds: int, seconds: int, connections: int
) -> dict[str, list[dict[str, Any]]]:
    body = workdir / "predict.json"
    body.write_text(json.dumps(PREDICT))
    one = HAProxy([replicas.servers[0].port], workdir / "haproxy-one").start()
    try:
        wait_for(one.stats_socket.exists, 10.0, "HAProxy's stats socket")
        one.wait_servers_up(1)
        targets = {
            "HAProxy, 1 replica": one.url,
            "HAProxy, 3 replicas": replicas.balancer_url,
            "1 replica, no balancer": replicas.servers[0].url,
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for url in targets.values():
            wrk(url, body, connections, 1)  # warm-up
        for _ in range(rounds):
            for name, url in targets.items():
                results[name].append(wrk(url, body, connections, seconds))
        return results
    finally:
        one.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--activations", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_replicas: wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="iris-replicas-"))
    cluster = PgCluster.create()
    try:
        with cluster.fresh_database() as url:
            replicas = ReplicaSet(url, workdir).start()
            try:
                jobs = job_lags(replicas, args.jobs)
                activations = activation_lags(replicas, args.activations)
                rates = throughput(replicas, workdir, args.rounds, args.seconds, args.connections)
            finally:
                replicas.stop()
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()[0]
    print(f"\n3 replicas on one PostgreSQL behind HAProxy; {os.cpu_count()} CPUs, load {load:.1f}")
    print("\n| to the last of 3 replicas serving the new version | median [min-max] s |")
    print("|---|---:|")
    print(f"| job's success (`finished_at`), {len(jobs)} jobs | {spread(jobs)} |")
    print(f"| activate's 200, {len(activations)} activations | {spread(activations)} |")
    print(
        f"\n| one-row /predict, wrk -t1 -c{args.connections}, {args.rounds} x {args.seconds} s "
        "| req/s median [min-max] | p50 ms | p99 ms | errors |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, runs in rates.items():
        rps = [r["rps"] for r in runs]
        p50 = statistics.median(r["p50_us"] for r in runs) / 1000
        p99 = statistics.median(r["p99_us"] for r in runs) / 1000
        errors = sum(sum(r["errors"].values()) for r in runs)
        print(f"| {name} | {spread(rps, digits=0)} | {p50:.2f} | {p99:.2f} | {errors} |")
    one = statistics.median(r["rps"] for r in rates["HAProxy, 1 replica"])
    three = statistics.median(r["rps"] for r in rates["HAProxy, 3 replicas"])
    print(f"\n3 replicas / 1 replica through HAProxy: {three / one:.2f}x")


if __name__ == "__main__":
    main()
